# Detic's stage 2 on OV-COCO without CLIM, caption and max-size tag losses (CLIM paper, Table 1a
# "Detic*": 30.3 AP50 novel; Table 2d row 2). As detic_r50-caffe-c4_45k_ov-coco-caption.py, plus
# Detic's tag loss on the largest proposal inside each pseudo region.
#
# Source, cited as [T:n] (line n): wusize/CLIM ovdet/configs/detic/ov_coco/
# detic_w_tags_clim_faster_rcnn_r50_caffe_c4_45k.py (its tag settings; its model otherwise equals
# the caption-only config's).
# Not run here: no COCO images, ImageNet or OpenAI weights, nor a GPU can be reached from the
# machines this project is built on; the configs are built and run (loss and predict) with a
# shrunk backbone by tests/test_models/test_detectors/test_detic.py.
_base_ = './detic_r50-caffe-c4_45k_ov-coco-caption.py'

model = dict(
    caption_branches=dict(caption_batch=dict(caption=True, tags=True)),  # batch2ovd [T:59-60]
    tag_loss={{_base_.detic_tag_loss}},  # [T:72-78]
    tag_sampling=dict(topk=128, iof_thr=0.3))  # sampling_cfg [T:74]
