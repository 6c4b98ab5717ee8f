# F-VLM on the generated toy shapes (tools/misc/generate_toy_data.py), CPU-sized: trained on the
# boxes of the 12 base classes, evaluated by box AP50 on base and on the 4 novel classes
# (mmclim.datasets.TOY_NOVEL_CLASSES). Boxes only (the toy scenes have no masks). The frozen CLIP
# is the toy CLIP of `make demo`: the image-level baseline here, the CLIM-trained one with
# --cfg-options model.backbone.pretrained=<clim export>.
# Run: tools/dist_train.sh configs/fvlm/fvlm_toy-vit_toy-shapes.py 2 (2 processes x 4 images).
_base_ = './fvlm_vitb16_fpn_lsj-184k_ov-coco.py'
from mmclim.datasets.toy_shapes import class_names  # noqa: E402

data_root = 'data/toy_shapes/'
classes = tuple(class_names())
split_file = data_root + 'annotations/ov_split.json'  # written with the base-only file
text_embeddings = data_root + 'embeddings/toy_classes.npy'  # `make demo` step 3
neck_channels = 64  # a tenth-size FPN for CPU

model = dict(
    data_preprocessor=dict(batch_augments=None),
    backbone=dict(
        model_name='mmclim-toy-vit',  # 4 blocks, width 96, patch 8
        pretrained='work_dirs/demo/baseline/clip_openclip.pt',
        out_indices=(0, 1, 2, 3)),
    neck=dict(in_channels=96, in_stride=8, fpn=dict(out_channels=neck_channels)),
    rpn_head=dict(in_channels=neck_channels, feat_channels=neck_channels),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=neck_channels),
        bbox_head=dict(
            in_channels=neck_channels,
            fc_out_channels=256,
            num_classes=len(classes),
            cls_predictor_cfg=dict(text_embeddings=text_embeddings, split_file=split_file)),
        mask_roi_extractor=None,
        mask_head=None),
    train_cfg=dict(rcnn=dict(mask_size=None)))

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
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
# 8 images per step: the base recipe's lr 0.1 at 64 images scaled linearly, gradient clipping
# for the randomly initialised heads.
optim_wrapper = dict(optimizer=dict(lr=0.0125, weight_decay=1e-4), clip_grad=dict(max_norm=10.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=50),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=max_iters, milestones=[170]),
]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=25),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters, max_keep_ckpts=1),
    visualization=dict(draw=False))
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)
