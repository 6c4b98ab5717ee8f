# F-VLM on OpenAI's CLIP ViT-B/16 (the baseline of configs/fvlm_clim_vitb16_lvis.py), OV-LVIS.
# CLIM paper, Table 4: 14.8 mAP_r mask. 8 GPUs x 8 images, 184,375 iterations
# (configs/fvlm/fvlm_vitb16_fpn_lsj-184k_ov-lvis.py).
_base_ = './fvlm/fvlm_vitb16_fpn_lsj-184k_ov-lvis.py'
model = dict(backbone=dict(pretrained='checkpoints/clip/ViT-B-16.pt'))  # OpenAI's release
