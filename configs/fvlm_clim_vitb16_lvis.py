# F-VLM on CLIP ViT-B/16 fine-tuned by CLIM on CC3M (configs/clim/clim_vitb16_cc3m.py, exported
# with tools/model_converters/clim_to_openclip.py), OV-LVIS. CLIM paper, Table 4: 20.8 mAP_r mask
# (14.8 with OpenAI's weights, configs/fvlm_clip_vitb16_lvis.py). 8 GPUs x 8 images, 184,375
# iterations (configs/fvlm/fvlm_vitb16_fpn_lsj-184k_ov-lvis.py).
_base_ = './fvlm/fvlm_vitb16_fpn_lsj-184k_ov-lvis.py'
model = dict(backbone=dict(pretrained='checkpoints/clip/ViT-B-16_clim_cc3m.pt'))
