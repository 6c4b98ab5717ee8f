# BARON's stage 1 on OV-COCO: Faster R-CNN R50-C4 trained on the boxes of the 48 base classes with
# BARON's pseudo-word classifier (regions read as sentences by the frozen CLIP text tower). The
# CLIM paper re-implements BARON "by adopting the two-stage training and parallel supervision"
# (Implementation details of "Application to Detic & BARON"): this is the first stage, the
# official base-only BARON detector; its result is the load_from of the caption configs
# (checkpoints/baron_coco_base.pth).
#
# Sources, cited as [S:n] (line n): wusize/ovdet configs/baron/ov_coco/
# faster_rcnn_r50_caffe_c4_90k.py; [H:n]: the defaults of its head, ovdet/models/roi_heads/
# baron_bbox_heads/bbox_head.py. It differs from the official Detic stage 1 (our parent,
# ../detic/faster-rcnn_r50-caffe-c4_90k_ov-coco-base.py, whose every other number is cited there
# and is the same here: data, schedule, runtime, regression MLP, class weights) only in the
# box head and its CLIP text tower.
# Not run here: no COCO images, ImageNet or OpenAI weights, nor a GPU can be reached from the
# machines this project is built on; the configs are built and run (loss and predict) with a
# shrunk backbone by tests/test_models/test_detectors/test_baron.py.
_base_ = '../detic/faster-rcnn_r50-caffe-c4_90k_ov-coco-base.py'

# The text tower that reads the pseudo words: OpenAI's CLIP ViT-B/32 [S:22-37], a local file.
text_encoder = dict(
    type='CLIPTextEncoder',
    model_name='ViT-B-32-quickgelu',
    pretrained='checkpoints/clip/ViT-B-32.pt')
# The classifier compares the end token's output of the text tower's last block, before its
# final LayerNorm and projection, with class embeddings made the same way (official
# use_attn12_output=True with coco_clip_hand_craft_attn12.npy [S:62-63]; ovdet's README: "As
# the training on COCO tends to converge to base categories, we use the output of the last
# attention layer for classification"):
#   python tools/generate_text_embeddings.py data/coco/annotations/instances_val2017_ov_all.json \
#       --model ViT-B-32-quickgelu --checkpoint checkpoints/clip/ViT-B-32.pt --templates vild \
#       --text-output last_block --out data/coco/embeddings/ov_coco_ViT-B-32_vild_last-block.npy
class_embeddings = 'data/coco/embeddings/ov_coco_ViT-B-32_vild_last-block.npy'

model = dict(
    type='BaronDetector',  # OVDTwoStageDetector with the CLIP text tower of OVDStandardRoIHead
    text_encoder=text_encoder,
    roi_head=dict(
        bbox_head=dict(
            type='BaronBBoxHead',  # [S:57]
            class_embeddings=class_embeddings,
            num_words=4,  # [H:24]; word_dim (512 [H:24]) follows from the text tower
            word_drop_ratio=0.5,  # words_drop_ratio [H:25]
            text_output='last_block',  # [S:63]
            logit_scale=25.0,  # cls_temp [S:61], also at test time (test_cls_temp=None [H:26])
            cls_bias=-20.0)))  # [S:60]
