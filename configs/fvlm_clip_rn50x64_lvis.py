# F-VLM on OpenAI's CLIP RN50x64 (the baseline of configs/fvlm_clim_rn50x64_lvis.py), OV-LVIS.
# CLIM paper, Table 1b: 30.1 mAP_r (mask; F-VLM reproduced there). 8 GPUs x 32 images, 2880
# iterations (configs/fvlm/fvlm_rn50x64_fpn_lsj1024-2.88k_ov-lvis.py).
_base_ = './fvlm/fvlm_rn50x64_fpn_lsj1024-2.88k_ov-lvis.py'
model = dict(backbone=dict(pretrained='checkpoints/clip/RN50x64.pt'))  # OpenAI's release
