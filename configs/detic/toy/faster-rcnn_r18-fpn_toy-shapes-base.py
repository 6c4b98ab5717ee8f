# Stage 1 of the toy Detic experiment (tools/misc/caption_toy_arms.sh): a CPU-sized Faster R-CNN
# with Detic's sigmoid zero-shot box head, trained from scratch on the boxes of the 12 base
# classes of the generated toy shapes (tools/misc/generate_toy_data.py); the 4 novel classes
# (mmclim.datasets.TOY_NOVEL_CLASSES) are never boxed. The class names are embedded by the text
# tower of the toy CLIP of `make demo` (its image-level baseline), which the caption arms keep
# frozen. The model is the OV-LVIS head layout (FPN, two shared fully connected layers,
# class-agnostic regression), narrowed: the OV-COCO R50-C4 res5 head costs about 0.5 GFLOP per
# RoI, out of reach of 2 CPU cores for the 12 runs of the experiment.
_base_ = [
    'mmdet::_base_/models/faster-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_detection.py',
    'mmdet::_base_/default_runtime.py',
]
from mmclim.datasets.toy_shapes import TOY_SPLIT_FILE, class_names  # noqa: E402

custom_imports = dict(imports=['mmclim'], allow_failed_imports=False)
find_unused_parameters = True

data_root = 'data/toy_shapes/'
classes = tuple(class_names())
metainfo = dict(classes=classes)
split_file = data_root + 'annotations/' + TOY_SPLIT_FILE  # written with the base-only file
# `make demo` step 3: the class names embedded by the toy baseline's text tower, with the caption
# wording.
class_embeddings = 'work_dirs/demo/embeddings/toy_classes_seen.npy'
scene_size = (128, 128)  # the generated scenes
base_channels = 16  # ResNet-18 at 1/4 width: stages of 16, 32, 64, 128 channels
channels = 64  # neck, RPN and RoI features
fc_channels = 256  # the box head's shared fully connected layers
norm_cfg = dict(type='BN', requires_grad=True)

model = dict(
    type='DeticDetector',
    backbone=dict(
        depth=18,
        base_channels=base_channels,
        frozen_stages=-1,
        norm_cfg=norm_cfg,
        norm_eval=False,
        init_cfg=None),  # from scratch: nothing to download
    neck=dict(in_channels=[base_channels * 2**i for i in range(4)], out_channels=channels),
    rpn_head=dict(in_channels=channels, feat_channels=channels),
    roi_head=dict(
        type='DeticRoIHead',
        bbox_roi_extractor=dict(out_channels=channels),
        bbox_head=dict(
            _delete_=True,
            type='DeticBBoxHead',
            num_shared_fcs=2,
            in_channels=channels,
            fc_out_channels=fc_channels,
            roi_feat_size=7,
            reg_class_agnostic=True,
            num_classes=len(classes),
            class_embeddings=class_embeddings,
            split_file=split_file,
            logit_scale=25.0,  # the OV-COCO recipe's classifier
            cls_bias=-20.0,
            bbox_coder=dict(
                type='DeltaXYWHBBoxCoder',
                target_means=[0., 0., 0., 0.],
                target_stds=[0.1, 0.1, 0.2, 0.2]),
            loss_cls=dict(type='DeticSigmoidClassLoss', loss_weight=1.0),
            loss_bbox=dict(type='L1Loss', loss_weight=1.0))),
    # Fewer proposals and sampled RoIs than on COCO: a 128-px scene holds at most a few objects.
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=1000, max_per_img=500), rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(rpn=dict(nms_pre=1000, max_per_img=300)))

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
    sampler=dict(type='InfiniteSampler'),
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
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
        metainfo=metainfo,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(
    _delete_=True,
    type='OVCocoSplitMetric',
    split_file=split_file,
    ann_file=data_root + 'annotations/instances_val.json',
    metric='bbox')
test_evaluator = val_evaluator

max_iters = 600
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters,
                 val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
# The OV-COCO recipe's SGD with momentum, at the rate of 4 images (0.02 x 4 / 16), warm-up, one
# step at 5/6 of the run.
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.005, momentum=0.9, weight_decay=0.0001),
    clip_grad=dict(max_norm=35, norm_type=2))
auto_scale_lr = dict(enable=False)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=50),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=max_iters, milestones=[500]),
]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters, max_keep_ckpts=1),
    visualization=dict(draw=False))
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)
