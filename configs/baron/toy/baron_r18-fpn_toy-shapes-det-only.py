# Toy BARON experiment, arm 1 "detection only": the BARON stage-1 detector
# (faster-rcnn_r18-fpn_toy-shapes-base.py) trained on for the iterations of the caption arms with
# its base-class boxes alone: the toy Detic arm 1 (../../detic/toy/detic_r18-fpn_toy-shapes-
# det-only.py: frozen BatchNorm, 300 iterations) with the BARON head of stage 1.
# tools/misc/caption_toy_arms.sh baron sets load_from to the stage-1 result.
_base_ = '../../detic/toy/detic_r18-fpn_toy-shapes-det-only.py'

text_encoder = dict(
    type='CLIPTextEncoder',
    model_name='mmclim-toy-vit',
    pretrained='work_dirs/demo/baseline/clip_openclip.pt')
model = dict(
    type='BaronDetector',
    text_encoder=text_encoder,
    roi_head=dict(
        bbox_head=dict(
            type='BaronBBoxHead',  # stage 1's (faster-rcnn_r18-fpn_toy-shapes-base.py)
            num_words=2,
            word_drop_ratio=0.5,
            text_output='projection')))
# The stage-1 run of tools/misc/caption_toy_arms.sh baron.
load_from = 'work_dirs/baron_toy/base/iter_600.pth'
