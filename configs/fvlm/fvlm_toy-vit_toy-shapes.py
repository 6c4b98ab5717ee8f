# F-VLM on the generated toy shapes (tools/misc/generate_toy_data.py), CPU-sized: the OV-COCO
# ViT-B/16 model code (configs/fvlm/fvlm_vitb16_fpn_lsj640-3e_ov-coco.py: the same backbone, neck,
# 4-conv 2-fc box head, classifier, VLM score and fusion) on the toy CLIP, with narrower layers,
# BatchNorm instead of SyncBN (torch's SyncBatchNorm refuses CPU tensors in a distributed run)
# and a short schedule. Trained on the boxes of the 12 base classes, evaluated by box AP50 on
# base and on the 4 novel classes (mmclim.datasets.TOY_NOVEL_CLASSES). The frozen CLIP is the
# toy CLIP of `make demo`: the image-level baseline here, the CLIM-trained one with
# --cfg-options model.backbone.pretrained=<clim export>. tools/misc/fvlm_toy_seeds.sh runs both
# over 3 seeds.
# Run: tools/dist_train.sh configs/fvlm/fvlm_toy-vit_toy-shapes.py 2 (2 processes x 4 images).
_base_ = './fvlm_vitb16_fpn_lsj640-3e_ov-coco.py'
from mmclim.datasets.toy_shapes import TOY_SPLIT_FILE, class_names  # noqa: E402

data_root = 'data/toy_shapes/'
classes = tuple(class_names())
split_file = data_root + 'annotations/' + TOY_SPLIT_FILE  # written with the base-only file
# `make demo` step 3: the class names embedded by the toy baseline's text tower (which the CLIM
# continuation keeps frozen), with the caption wording (tools/demo.sh, with sidecar).
class_embeddings = 'work_dirs/demo/embeddings/toy_classes_seen.npy'
# A quarter of the paper models' sizes: neck, RPN and RoI convolutions (256), box head fully
# connected layers (1024), RoIs sampled per image for the box head (512; its CPU time, RoIAlign
# and the 4 convolutions, grows with them).
channels = 64
fc_channels = 256
rois_per_image = 128
norm_cfg = dict(type='BN', requires_grad=True)

model = dict(
    backbone=dict(
        model_name='mmclim-toy-vit',  # 4 blocks, width 96, patch 8
        pretrained='work_dirs/demo/baseline/clip_openclip.pt',
        out_indices=(0, 1, 2, 3)),  # the last one as the v2 block, as (3, 5, 7, 11) for ViT-B
    neck=dict(norm_cfg=norm_cfg, fpn=dict(out_channels=channels, norm_cfg=norm_cfg)),
    rpn_head=dict(in_channels=channels, feat_channels=channels),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=channels),
        bbox_head=dict(
            in_channels=channels,
            conv_out_channels=channels,
            fc_out_channels=fc_channels,
            norm_cfg=norm_cfg,
            num_classes=len(classes),
            class_embeddings=class_embeddings,
            split_file=split_file)),
    train_cfg=dict(rcnn=dict(sampler=dict(num=rois_per_image))))

scene_size = (128, 128)  # the generated scenes; Resize is a no-op that records scale_factor
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=scene_size, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=scene_size, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                                          'scale_factor')),
]
train_dataloader = dict(
    batch_size=4,
    num_workers=1,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=dict(classes=classes),
        ann_file='annotations/instances_train_ov_base.json',
        data_prefix=dict(img='train/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=0),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4,
    num_workers=1,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=dict(classes=classes),
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json', split_file=split_file)
test_evaluator = val_evaluator

max_iters = 200
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters,
                 val_interval=max_iters)
# AdamW as the OV-COCO recipe, at a rate for 200 steps of 8 images from scratch heads.
optim_wrapper = dict(optimizer=dict(lr=0.001, weight_decay=0.05))
auto_scale_lr = dict(enable=False)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=20),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=max_iters, milestones=[170]),
]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=25),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters, max_keep_ckpts=1),
    visualization=dict(draw=False))
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)
