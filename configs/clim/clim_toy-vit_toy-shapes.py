# CLIM on the generated toy shapes (tools/misc/generate_toy_data.py), CPU-sized: the main job of
# `make demo`. It continues the toy image-level CLIP baseline (clip-baseline_toy-vit_toy-shapes.py,
# converted with tools/model_converters/clim_to_openclip.py) for the same number of steps as
# clip-image_toy-vit_toy-shapes.py, the image-level continuation it is compared with. The recipe
# is the paper config's (mosaic composition, optimiser, schedule shape, weight ensembling); only
# the model, the data and the step count are the toy's.
_base_ = './clim_vitb16_coco-caption.py'

image_size = 64  # the generated caption images
data_root = 'data/toy_shapes/'
batch_size = 64  # two groups of 2x2 + 3x3 + 4x4 mosaics (58 pseudo regions) and 6 singles
model = dict(
    clip=dict(
        model_name='mmclim-toy-vit',  # 4 blocks, width 96, patch 8 (mmclim model_configs)
        pretrained='work_dirs/demo/baseline/clip_openclip.pt',
        unlocked_vision_blocks=2),
    mosaic=dict(batch_size=batch_size),
    canvas_size=None,  # each mosaic cell at the single images' 64x64 resolution
    class_embeddings='work_dirs/demo/embeddings/toy_classes_seen.npy')  # tools/demo.sh step 3

train_pipeline = [
    {{_base_.load_image}},
    dict(type='RandomResizedCrop', size=image_size, scale=(0.9, 1.0), interpolation='bicubic'),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'captions')),
]
train_dataloader = dict(
    batch_size=batch_size,
    # In the main process: on 2 CPU cores a worker process only competes with the model's
    # threads (measured: 0.36 s per baseline step against 0.46 s with one worker).
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        ann_file='annotations/captions_caption_train.json',
        data_prefix=dict(img='caption_train/'),
        pipeline=train_pipeline))
val_pipeline = [
    {{_base_.load_image}},
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape')),
]
val_dataloader = dict(
    batch_size=16,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        _delete_=True,
        type='CocoDataset',
        data_root=data_root,
        metainfo=dict(classes=tuple(f'{color} {shape}'
                                    for color in ('red', 'green', 'blue', 'yellow')
                                    for shape in ('circle', 'square', 'triangle', 'diamond'))),
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'),
        test_mode=True,
        pipeline=val_pipeline))
test_dataloader = val_dataloader

max_iters = 300
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters,
                 val_interval=max_iters)
optim_wrapper = dict(optimizer=dict(lr=1e-4))  # a tiny model far from convergence: 10x paper
# The official shape (linear warm-up, then per-step cosine to 0), the warm-up 10% of the run.
param_scheduler = [
    dict(type='WarmupCosineLR', warmup_iters=30, by_epoch=False, begin=0, end=max_iters)
]
auto_scale_lr = dict(base_batch_size=batch_size)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=25),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters, max_keep_ckpts=1))
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)
