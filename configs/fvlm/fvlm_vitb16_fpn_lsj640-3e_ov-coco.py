# F-VLM (Kuo et al., ICLR 2023) on a frozen CLIP ViT-B/16, OV-COCO, as the official CLIM code
# trains it: Faster R-CNN with class-agnostic boxes, trained on the 48 base classes; box AP50 of
# the 17 novel classes is the main metric (CLIM paper, Table 4: 21.6 with OpenAI's CLIP, 25.7
# with CLIM). Base of configs/fvlm_{clip,clim}_vitb16_ov-coco.py, which set the CLIP weights.
#
# Sources, cited as [C:n] (line n): wusize/CLIM ovdet/configs/clip_based/openai_vitb16/
# faster_rcnn_fpn_openai_vitb16_clim_bs64_ov_coco_3e.py; [D:n]: its data set base ovdet/configs/
# _base_/datasets/coco_ovd_base_lsj.py. Everything not set here is mmdet's faster-rcnn_r50_fpn,
# coco_detection and default_runtime, which the official config inherits too [C:1-3, D:2].
_base_ = [
    'mmdet::_base_/models/faster-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_detection.py',
    'mmdet::_base_/default_runtime.py',
]
# The 65 OV-COCO classes in category-id order (the import must follow _base_: mmengine reads a
# config that starts with an import as a new-style lazy-import config).
from mmclim.datasets.ov_splits import OV_COCO_CLASSES  # noqa: E402

custom_imports = dict(imports=['mmclim'], allow_failed_imports=False)
find_unused_parameters = True  # [C:4]

data_root = 'data/coco/'
# Difference kept: we classify the 65 OV-COCO classes, in the label order of the files of
# tools/dataset_converters/prepare_ov_coco.py, which also writes the split file naming the 17
# novel ones. The official config scores all 80 COCO classes (base weight 1 for the 48 base,
# 0 for the 32 others [C:5-12]), so its 15 unused classes compete in both softmaxes at test time.
metainfo = dict(classes=OV_COCO_CLASSES)
split_file = data_root + 'annotations/ov_coco_split.json'
# Class-name embeddings of OpenAI's text tower (CLIM freezes it, so they serve the CLIM weights
# too), rows in category-id order, with the sidecar naming the model:
#   python tools/generate_text_embeddings.py data/coco/annotations/instances_val2017_ov_all.json \
#       --model ViT-B-16-quickgelu --checkpoint checkpoints/clip/ViT-B-16.pt \
#       --templates vild --out data/coco/embeddings/ov_coco_ViT-B-16_vild.npy
# (as the official file, coco_openai_vitb16_hand_craft.npy [C:65]: ViLD's 63 prompts, "This is").
class_embeddings = data_root + 'embeddings/ov_coco_ViT-B-16_vild.npy'

# OpenAI's CLIP normalisation in 0-255 pixels [C:27-28].
clip_mean = [122.7709383, 116.7460125, 104.09373615]
clip_std = [68.5005327, 66.6321579, 70.32316305]
# The official pipelines pad with this tuple [D:27-28] on the BGR image that LoadImageFromFile
# reads, so the padding is the CLIP mean with red and blue swapped; kept as it is.
pad_value = tuple(clip_mean)
norm_cfg = dict(type='SyncBN', requires_grad=True)  # [C:23]
image_size = (640, 640)  # large-scale jitter at 640 [D:5]

model = dict(
    type='FVLM',  # [C:25]
    data_preprocessor=dict(mean=clip_mean, std=clip_std),  # [C:26-28]; bgr_to_rgb from mmdet
    backbone=dict(
        _delete_=True,
        type='CLIPViTPyramidBackbone',
        model_name='ViT-B-16-quickgelu',  # OpenAI's weights use QuickGELU [C:32]
        pretrained=None,  # the children set the CLIP weights
        out_indices=(3, 5, 7, 11)),  # [C:35]
    # The official CLIPViT's trainable "interpolate" layers (channels kept, norm_cfg between the
    # two deconvolutions [C:42]), then mmdet's FPN (out 256, 5 levels) with norm_cfg [C:44-47].
    # in_channels and in_strides come from the backbone.
    neck=dict(
        _delete_=True,
        type='SimplePyramidFPN',
        out_strides=(4, 8, 16, 32),
        norm_cfg=norm_cfg,
        fpn=dict(type='FPN', out_channels=256, num_outs=5, norm_cfg=norm_cfg)),
    rpn_head=dict(num_convs=2),  # [C:48]
    roi_head=dict(
        type='FVLMRoIHead',  # [C:50]
        vlm_logit_scale=75.0,  # clip_temp [C:61]
        base_alpha=0.1,  # alpha [C:59]
        novel_beta=0.8,  # beta [C:60]
        bbox_head=dict(
            type='FVLMBBoxHead',
            num_shared_convs=4,  # [C:53-56]
            num_shared_fcs=2,
            num_cls_fcs=1,
            num_reg_fcs=1,
            reg_class_agnostic=True,  # [C:57]
            norm_cfg=norm_cfg,  # [C:58]
            num_classes=len(OV_COCO_CLASSES),
            class_embeddings=class_embeddings,
            split_file=split_file,
            logit_scale=50.0,  # cls_temp [C:62]
            learn_logit_scale=True,  # [C:64]
            background_weight=0.6)),  # last class_weight entry [C:12]
    test_cfg=dict(  # [C:74-79]
        rcnn=dict(score_thr=0.01, nms=dict(type='nms', iou_threshold=0.4), max_per_img=100)))

backend_args = None
# Large-scale jitter [D:13-32]: images read as float32 [D:14].
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args, to_float32=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=False),
    dict(type='RandomResize', scale=image_size, ratio_range=(0.1, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_type='absolute_range', crop_size=image_size,
         recompute_bbox=True, allow_negative_crop=True),
    dict(type='Pad', size=image_size, pad_val=dict(img=pad_value, seg=255)),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1e-2, 1e-2)),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [  # [D:42-53]
    dict(type='LoadImageFromFile', backend_args=backend_args, to_float32=True),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='Pad', size=image_size, pad_val=dict(img=pad_value, seg=255)),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=8,  # per GPU, x 8 GPUs = 64 [C:114]
    num_workers=4,  # [C:115]
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        # Base annotations only (the official wusize/instances_train2017_base.json [D:36]).
        ann_file='annotations/instances_train2017_ov_base.json',
        data_prefix=dict(img='train2017/'),
        pipeline=train_pipeline))
# Base and novel annotations. The official evaluation runs on all 5000 val images; prepare the
# files with prepare_ov_coco.py --keep-all-images to do the same (by default the converter keeps
# the images with an OV-COCO object).
val_ann_file = 'annotations/instances_val2017_ov_all.json'
val_dataloader = dict(
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file=val_ann_file,
        data_prefix=dict(img='val2017/'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
# Box AP50 of the base, novel and all classes in one COCO evaluation; per category it equals the
# official two CocoMetrics on the base-only and novel-only files [D:62-75].
val_evaluator = dict(
    _delete_=True,
    type='OVCocoSplitMetric',
    split_file=split_file,
    ann_file=data_root + val_ann_file,
    metric='bbox')
test_evaluator = val_evaluator

# 3 epochs at 8 GPUs x 8 images, evaluated after each [C:84].
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=3, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
# Linear warm-up from 0.001 over 250 iterations [C:90-91], then constant: the official step at
# epoch 100 of 3 [C:92-98] is never reached.
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=250),
]
# The official AmpOptimWrapper [C:103] cannot be built without CUDA; `tools/train.py --amp`
# makes this one an AmpOptimWrapper (dynamic loss scale, as mmengine's default).
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.1),  # [C:104]
    clip_grad=dict(max_norm=1.0, norm_type=2))  # [C:105]
# The learning rate is for 64 images per step; other batch sizes scale it linearly [C:112].
auto_scale_lr = dict(enable=True, base_batch_size=64)
