# The class-agnostic RPN of the toy RegionCLIP (tools/misc/regionclip_toy_seeds.sh): RegionCLIP
# proposes regions with an RPN trained on the boxes of base classes only (LVIS base, its
# rpn_lvis_866.pth; COCO base for CLIM's Table 5), so here the boxes of the 12 base classes of the
# generated toy scenes (instances_train_ov_base.json; the 4 novel classes are never boxed). mmdet's
# RPN R50-FPN recipe, narrowed to CPU size and trained from scratch.
_base_ = 'mmdet::rpn/rpn_r50_fpn_1x_coco.py'
from mmclim.datasets.toy_shapes import class_names  # noqa: E402

custom_imports = dict(imports=['mmclim'], allow_failed_imports=False)

metainfo = dict(classes=tuple(class_names()))  # only to read the files: the RPN has no classes
data_root = 'data/toy_shapes/'
base_channels = 16  # ResNet-18 at 1/4 width: stages of 16, 32, 64, 128 channels
channels = 64  # FPN and RPN head
# The scenes are 128 px, the captioned images RegionCLIP-style training proposes on are 64 px:
# trained at 64 to 128 px, the RPN sees objects of both sizes (10 to 51 px).
scales = [(64, 64), (128, 128)]

model = dict(
    backbone=dict(
        depth=18,
        base_channels=base_channels,
        frozen_stages=-1,
        norm_eval=False,
        init_cfg=None),  # from scratch: nothing to download
    neck=dict(in_channels=[base_channels * 2**i for i in range(4)], out_channels=channels),
    rpn_head=dict(
        in_channels=channels,
        feat_channels=channels,
        # anchors of 16 to 256 px (mmdet's 32 to 512 would not fit a 10-px shape)
        anchor_generator=dict(scales=[4])))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomResize', scale=scales, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=scales[1], keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                                          'scale_factor')),
]
train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='InfiniteSampler'),
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_train_ov_base.json',
        data_prefix=dict(img='train/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=0),
        pipeline=train_pipeline))
# Recall of every object of the val scenes, novel classes included: class-agnostic proposals
# (pycocotools; mmdet's 'proposal_fast' recall does not run under numpy 2).
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
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json',
                     metric='proposal')
test_evaluator = val_evaluator

max_iters = 600
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters,
                 val_interval=max_iters)
# mmdet's SGD recipe at the rate of 4 images (0.02 x 4 / 16), warm-up, one step at 5/6 of the run.
optim_wrapper = dict(optimizer=dict(lr=0.005))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=50),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=max_iters, milestones=[500]),
]
auto_scale_lr = dict(enable=False)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters, max_keep_ckpts=1),
    visualization=dict(draw=False))
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)
