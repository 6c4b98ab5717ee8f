# F-VLM on CLIP ViT-B/16 fine-tuned by CLIM on COCO Captions, OV-COCO. CLIM paper, Table 4:
# 25.7 AP50 novel, 42.5 AP50 base (21.6 / 36.4 with OpenAI's weights,
# configs/fvlm_clip_vitb16_ov-coco.py); the official repository reports 29.7 novel with this
# recipe. 8 GPUs x 8 images, 3 epochs (configs/fvlm/fvlm_vitb16_fpn_lsj640-3e_ov-coco.py).
# The weights: configs/clim/clim_vitb16_coco-caption.py, exported (weight-ensembled 0.7/0.3 with
# OpenAI's, as the official checkpoint openai_vitb16_coco_clim.pt) by
#   python tools/model_converters/clim_to_openclip.py \
#       work_dirs/clim_vitb16_coco-caption/epoch_100.pth checkpoints/clip/ViT-B-16_clim_coco.pt
_base_ = './fvlm/fvlm_vitb16_fpn_lsj640-3e_ov-coco.py'
model = dict(backbone=dict(pretrained='checkpoints/clip/ViT-B-16_clim_coco.pt'))
