# Stage 1 of the toy BARON experiment (tools/misc/caption_toy_arms.sh baron): the toy Detic stage-1
# detector (../../detic/toy/faster-rcnn_r18-fpn_toy-shapes-base.py: a CPU-sized Faster R-CNN
# trained from scratch on the base-class boxes of the generated shapes) with BARON's box head,
# whose classifier reads each region's pseudo words with the frozen text tower of the toy CLIP
# of `make demo` (its image-level baseline); tools/misc/caption_toy_arms.sh baron sets the
# checkpoint.
#
# Sized for the toy CLIP, whose text context is 16 tokens (mmclim-toy-vit): 2 pseudo words per
# region (4 in the OV-COCO recipe), so that a caption bag of 6 proposals and its pseudo box fits
# (7 x 2 + the start and end tokens = 16; see the caption arms). The classifier compares the
# text tower's projected output with the class embeddings of `make demo` (the OV-COCO recipe uses
# the last block's output, text_output='last_block', with embeddings made that way).
_base_ = '../../detic/toy/faster-rcnn_r18-fpn_toy-shapes-base.py'

text_encoder = dict(
    type='CLIPTextEncoder',
    model_name='mmclim-toy-vit',
    pretrained='work_dirs/demo/baseline/clip_openclip.pt')
model = dict(
    type='BaronDetector',
    text_encoder=text_encoder,
    roi_head=dict(
        bbox_head=dict(
            type='BaronBBoxHead',
            num_words=2,
            word_drop_ratio=0.5,
            text_output='projection')))
