# F-VLM on OpenAI's CLIP ViT-B/16 (the baseline of configs/fvlm_clim_vitb16_ov-coco.py), OV-COCO.
# CLIM paper, Table 4: 21.6 AP50 novel, 36.4 AP50 base. 8 GPUs x 8 images, 3 epochs
# (configs/fvlm/fvlm_vitb16_fpn_lsj640-3e_ov-coco.py).
_base_ = './fvlm/fvlm_vitb16_fpn_lsj640-3e_ov-coco.py'
model = dict(backbone=dict(pretrained='checkpoints/clip/ViT-B-16.pt'))  # OpenAI's release
