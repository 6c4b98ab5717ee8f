# CLIM fine-tuning of OpenAI's CLIP ViT-B/16 on COCO Captions (paper: "Enhancing CLIP Model's
# Region Representation"; Table 5 region classification). Settings from the paper's
# implementation details unless marked otherwise.
_base_ = ['mmdet::_base_/default_runtime.py']
custom_imports = dict(imports=['mmclim'], allow_failed_imports=False)

# OpenAI's CLIP normalisation (open_clip.constants.OPENAI_DATASET_MEAN/STD) in 0-255 pixels.
clip_mean = [122.771, 116.746, 104.094]
clip_std = [68.501, 66.632, 70.323]
image_size = 224  # ViT-B/16's native resolution, for the single (non-mosaicked) images
canvas_size = 1024  # mosaics are trained at 1024x1024 (paper, Table 3)

model = dict(
    type='CLIMCLIP',
    mode='clim',
    clip=dict(
        type='OpenCLIPRegion',
        model_name='ViT-B-16-quickgelu',  # OpenAI's weights use QuickGELU
        pretrained='checkpoints/clip/ViT-B-16.pt',  # OpenAI's release, a local file
        unlocked_vision_blocks=6,  # the last 6 of 12 blocks train; the text tower is frozen
        freeze_text=True),
    loss=dict(type='CLIMCaptionLoss'),
    grid_choices=[2, 3, 4],  # drawn at random per mosaic (paper, Table 2b)
    mosaic_fraction=0.5,  # half of each batch mosaicked, half single (paper's Detic setting)
    canvas_size=canvas_size,
    class_embeddings='data/coco/embeddings/coco_instances_ViT-B-16_ensemble.npy',
    data_preprocessor=dict(
        type='DetDataPreprocessor', mean=clip_mean, std=clip_std, bgr_to_rgb=True))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(image_size, image_size), keep_ratio=False),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'captions')),
]
train_dataloader = dict(
    batch_size=16,  # x 8 GPUs = 128, the paper's batch size
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type='CocoCaptionPairDataset',
        data_root='data/coco/',
        ann_file='annotations/captions_train2017.json',
        data_prefix=dict(img='train2017/'),
        on_bad_entry='skip',
        pipeline=train_pipeline))

# Zero-shot classification of the ground-truth boxes of COCO val2017 (Table 5).
val_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(canvas_size, canvas_size), keep_ratio=True),
    dict(type='Pad', size=(canvas_size, canvas_size), pad_val=dict(img=0)),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                                          'scale_factor')),
]
val_dataloader = dict(
    batch_size=4,
    num_workers=2,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='CocoDataset',
        data_root='data/coco/',
        ann_file='annotations/instances_val2017.json',
        data_prefix=dict(img='val2017/'),
        test_mode=True,
        pipeline=val_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='RegionClassificationMetric')
test_evaluator = val_evaluator

max_epochs = 100  # COCO Captions, 100 epochs (paper)
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=10)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-5, weight_decay=0.1),  # the paper's optimiser
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0))
# The schedule is not given in the paper: a short linear warm-up, then cosine decay, as CLIP.
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=500),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, eta_min=0.0),
]
auto_scale_lr = dict(enable=False, base_batch_size=128)
default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', interval=10, max_keep_ckpts=3),
    visualization=dict(draw=False))
