# A tiny RetinaNet on the generated toy shapes (tools/misc/generate_toy_data.py): a CPU-sized
# smoke config for the plugin set-up, the runner tools, resume and two-process training.
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py',
    'mmdet::_base_/datasets/coco_detection.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmclim'], allow_failed_imports=False)

# 4 colours x 4 shapes, as mmclim.datasets.toy_shapes.class_names() orders them.
classes = tuple(f'{color} {shape}' for color in ('red', 'green', 'blue', 'yellow')
                for shape in ('circle', 'square', 'triangle', 'diamond'))
image_size = 128  # the generator's default scene size
base_channels = 8  # ResNet-18 at 1/8 width: stages of 8, 16, 32, 64 channels
neck_channels = 32

model = dict(
    backbone=dict(
        depth=18,
        base_channels=base_channels,
        norm_eval=False,
        init_cfg=None),
    neck=dict(
        in_channels=[base_channels * 2**i for i in range(4)],
        out_channels=neck_channels,
        start_level=1,
        num_outs=3),
    bbox_head=dict(
        num_classes=len(classes),
        in_channels=neck_channels,
        feat_channels=neck_channels,
        stacked_convs=1,
        anchor_generator=dict(strides=[8, 16, 32])))

data_root = 'data/toy_shapes/'
metainfo = dict(classes=classes)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(image_size, image_size), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(image_size, image_size), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=0),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator

max_iters = 200
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=1e-4),
    clip_grad=dict(max_norm=10.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=20),
]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters // 2),
    visualization=dict(draw=False))
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)
auto_scale_lr = dict(enable=False, base_batch_size=4)
