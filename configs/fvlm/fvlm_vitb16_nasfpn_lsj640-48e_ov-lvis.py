# F-VLM (Kuo et al., ICLR 2023) on a frozen CLIP ViT-B/16, OV-LVIS, as the official CLIM code
# trains it: Mask R-CNN with NAS-FPN and class-agnostic boxes and masks, trained on the 866 base
# (frequent and common) classes, the 337 rare classes novel; mask AP of the rare classes (mAP_r)
# is the main metric (CLIM paper, Table 4: 14.8 with OpenAI's CLIP, 20.8 with CLIM). Base of
# configs/fvlm_{clip,clim}_vitb16_lvis.py, which set the CLIP weights, and of the RN50x64 config.
#
# Sources, cited as [L:n] (line n): wusize/CLIM ovdet/configs/clip_based/openai_vitb16/
# mask_rcnn_nasfpn_openai_vitb16_clim_bs64_ov_lvis_4x.py; [D:n]: its data set base ovdet/configs/
# _base_/datasets/lvis_v1_ovd_base_lsj_640.py. Everything not set here is mmdet's
# mask-rcnn_r50_fpn, lvis_v1_instance and default_runtime, which the official config inherits
# too [L:1-3, D:2].
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/lvis_v1_instance.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmclim'], allow_failed_imports=False)
find_unused_parameters = True  # [L:4]

data_root = 'data/lvis_v1/'
num_classes = 1203  # LVIS v1, every class scored [L:43]
# Written with the base-only training file by tools/dataset_converters/prepare_ov_lvis.py: the
# rare classes are novel, as the official class weights (0 for the categories without training
# image in lvis_v1_train_cat_norare_info.json [L:5]) make them.
split_file = data_root + 'annotations/lvis_v1_train_ov_split.json'
# Class-name embeddings of OpenAI's text tower (CLIM freezes it, so they serve the CLIM weights
# too), rows in category-id order, with the sidecar naming the model:
#   python tools/generate_text_embeddings.py data/lvis_v1/annotations/lvis_v1_val.json \
#       --model ViT-B-16-quickgelu --checkpoint checkpoints/clip/ViT-B-16.pt \
#       --templates vild --out data/lvis_v1/embeddings/lvis_v1_ViT-B-16_vild.npy
# (as the official file, lvis_openai_vitb16_hand_craft.npy [L:50]: ViLD's 63 prompts, "This is").
class_embeddings = data_root + 'embeddings/lvis_v1_ViT-B-16_vild.npy'

# OpenAI's CLIP normalisation in 0-255 pixels [L:10-11].
clip_mean = [122.7709383, 116.7460125, 104.09373615]
clip_std = [68.5005327, 66.6321579, 70.32316305]
# The official pipelines pad with this tuple [D:28-29] on the BGR image that LoadImageFromFile
# reads, so the padding is the CLIP mean with red and blue swapped; kept as it is.
pad_value = tuple(clip_mean)
norm_cfg = dict(type='SyncBN', requires_grad=True)  # [L:6]
image_size = (640, 640)  # large-scale jitter at 640 [D:3]

model = dict(
    type='FVLM',  # [L:8]
    data_preprocessor=dict(mean=clip_mean, std=clip_std),  # [L:9-11]; bgr_to_rgb from mmdet
    backbone=dict(
        _delete_=True,
        type='CLIPViTPyramidBackbone',
        model_name='ViT-B-16-quickgelu',  # OpenAI's weights use QuickGELU [L:15]
        pretrained=None,  # the children set the CLIP weights
        out_indices=(3, 5, 7, 11)),  # [L:17]
    # The official CLIPViT's trainable "interpolate" layers (channels kept, norm_cfg between the
    # two deconvolutions [L:25]), then NAS-FPN, 7 stacks, with norm_cfg [L:27-32] (out 256,
    # 5 levels from mmdet's FPN config it replaces). in_channels and in_strides come from the
    # backbone.
    neck=dict(
        _delete_=True,
        type='SimplePyramidFPN',
        out_strides=(4, 8, 16, 32),
        norm_cfg=norm_cfg,
        fpn=dict(type='NASFPN', out_channels=256, num_outs=5, stack_times=7, norm_cfg=norm_cfg)),
    rpn_head=dict(num_convs=2),  # [L:33]
    roi_head=dict(
        type='FVLMRoIHead',  # [L:35]
        vlm_logit_scale=50.0,  # clip_temp [L:47]
        base_alpha=0.35,  # alpha [L:45]
        novel_beta=0.65,  # beta [L:46]
        bbox_head=dict(
            type='FVLMBBoxHead',
            num_shared_convs=4,  # [L:38-41]
            num_shared_fcs=2,
            num_cls_fcs=1,
            num_reg_fcs=1,
            reg_class_agnostic=True,  # [L:42]
            num_classes=num_classes,
            norm_cfg=norm_cfg,  # [L:44]
            class_embeddings=class_embeddings,
            split_file=split_file,
            logit_scale=50.0,  # cls_temp [L:48]
            learn_logit_scale=True,  # [L:49]
            background_weight=0.9),  # bg_weight [L:56]
        # [L:59-60]
        mask_head=dict(norm_cfg=norm_cfg, class_agnostic=True, num_classes=num_classes)),
    test_cfg=dict(
        rpn=dict(nms_pre=2000),  # [L:63]
        rcnn=dict(score_thr=0.0001, nms=dict(type='nms', iou_threshold=0.5),
                  max_per_img=300)))  # [L:64-67]

backend_args = None
# Large-scale jitter [D:14-33]: images read as float32 [D:15].
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args, to_float32=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomResize', scale=image_size, ratio_range=(0.1, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_type='absolute_range', crop_size=image_size,
         recompute_bbox=True, allow_negative_crop=True),
    dict(type='Pad', size=image_size, pad_val=dict(img=pad_value, seg=255)),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1e-2, 1e-2)),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [  # [D:43-54]
    dict(type='LoadImageFromFile', backend_args=backend_args, to_float32=True),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='Pad', size=image_size, pad_val=dict(img=pad_value, seg=255)),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=16,  # per GPU, x 8 GPUs = 128 [L:107]
    num_workers=4,  # [L:108]
    # mmdet's repeat-factor sampling (ClassBalancedDataset, oversample_thr=1e-3) around the
    # base-only file of prepare_ov_lvis.py (the official wusize/lvis_v1_train_base.json [D:37]).
    dataset=dict(
        dataset=dict(ann_file='annotations/lvis_v1_train_ov_base.json', pipeline=train_pipeline)))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
# Mask AP with APr/APc/APf on lvis_v1_val.json [D:62]: mmclim's FastLVISMetric gives the LVIS
# API's numbers (benchmarks/lvis_eval.py) faster; add 'bbox' for box AP.
val_evaluator = dict(type='FastLVISMetric', metric=['segm'])
test_evaluator = val_evaluator

# A checkpoint every epoch, the last one kept [L:71-73].
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=1))
# 48 epochs at 8 GPUs x 16 images, evaluated every 12 [L:76].
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=48, val_interval=12)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = [
    # Linear warm-up from 0.001 over 250 iterations [L:82-83].
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=250),
    # x0.1 after epochs 32 and 44 [L:84-90].
    dict(type='MultiStepLR', begin=0, end=48, by_epoch=True, milestones=[32, 44], gamma=0.1),
]
# The official AmpOptimWrapper [L:95] cannot be built without CUDA; `tools/train.py --amp`
# makes this one an AmpOptimWrapper (dynamic loss scale, as mmengine's default).
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.0004, betas=(0.9, 0.999), weight_decay=0.05),  # [L:96-97]
    clip_grad=dict(max_norm=35, norm_type=2))  # [L:98]
# The learning rate is for 8 GPUs x 16 images per step; other batch sizes scale it linearly
# [L:105].
auto_scale_lr = dict(enable=True, base_batch_size=128)
