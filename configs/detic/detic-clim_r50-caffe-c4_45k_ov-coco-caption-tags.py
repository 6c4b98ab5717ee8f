# Detic + CLIM on OV-COCO, caption and max-size tag losses: the paper's headline Detic result
# (CLIM paper, Table 1a "Detic* + CLIM": 35.4 AP50 novel; Table 2d row 4; official README: 35.4).
# As detic-clim_r50-caffe-c4_45k_ov-coco-caption.py, plus Detic's tag loss on both caption
# branches; on a mosaic, each composed region's tag box is the union of its cells' max-size boxes.
#
# Source, cited as [T:n] (line n): wusize/CLIM ovdet/configs/detic/ov_coco/
# detic_w_tags_clim_faster_rcnn_r50_caffe_c4_45k.py.
# Not run here: no COCO images, ImageNet or OpenAI weights, nor a GPU can be reached from the
# machines this project is built on; the configs are built and run (loss and predict) with a
# shrunk backbone by tests/test_models/test_detectors/test_detic.py.
_base_ = './detic-clim_r50-caffe-c4_45k_ov-coco-caption.py'

model = dict(
    caption_branches=dict(  # batch2ovd [T:59-60]
        caption_batch=dict(caption=True, tags=True),
        mosaic_batch=dict(caption=True, tags=True, num_groups=4)),
    tag_loss={{_base_.detic_tag_loss}},  # [T:72-78]
    tag_sampling=dict(topk=128, iof_thr=0.3))  # sampling_cfg [T:74]
