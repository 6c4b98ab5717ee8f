# F-VLM on CLIP ViT-B/16 fine-tuned by CLIM on COCO Captions (configs/clim/
# clim_vitb16_coco-caption.py, exported with tools/model_converters/clim_to_openclip.py), OV-COCO.
# CLIM paper, Table 4: 25.7 AP50 novel, 42.5 AP50 base (21.6 / 36.4 with OpenAI's weights).
# 8 GPUs x 8 images, 184,375 iterations (configs/fvlm/fvlm_vitb16_fpn_lsj-184k_ov-coco.py).
_base_ = './fvlm/fvlm_vitb16_fpn_lsj-184k_ov-coco.py'
model = dict(backbone=dict(pretrained='checkpoints/clip/ViT-B-16_clim_coco.pt'))
