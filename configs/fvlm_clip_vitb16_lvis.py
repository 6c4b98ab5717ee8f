# F-VLM on OpenAI's CLIP ViT-B/16 (the baseline of configs/fvlm_clim_vitb16_lvis.py), OV-LVIS.
# CLIM paper, Table 4: 14.8 mAP_r (mask). 8 GPUs x 16 images, 48 epochs
# (configs/fvlm/fvlm_vitb16_nasfpn_lsj640-48e_ov-lvis.py).
_base_ = './fvlm/fvlm_vitb16_nasfpn_lsj640-48e_ov-lvis.py'
model = dict(backbone=dict(pretrained='checkpoints/clip/ViT-B-16.pt'))  # OpenAI's release
