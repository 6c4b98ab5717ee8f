# CLIM fine-tuning of OpenAI's CLIP ViT-B/16 on COCO Captions (paper, "Enhancing CLIP Model's
# Region Representation"; Table 5: region classification Top-1 29.2 -> 62.2). Every number is the
# official recipe's; "script" is wusize/CLIM scripts/train_clim_coco_100e_openai_vitb16.sh and
# "clim.py", "main.py", "params.py" are its src/training/ files. docs/reproduction.md lists each
# with its source and the differences we keep.
_base_ = ['mmdet::_base_/default_runtime.py']
custom_imports = dict(imports=['mmclim'], allow_failed_imports=False)

# OpenAI's CLIP normalisation (open_clip.constants.OPENAI_DATASET_MEAN/STD) in 0-255 pixels.
clip_mean = [122.771, 116.746, 104.094]
clip_std = [68.501, 66.632, 70.323]
image_size = 224  # ViT-B/16's native input: every training image is a 224 crop (open_clip)
canvas_size = 1024  # script: --train-image-size 1024; paper Table 3 (1024x1024 mosaics)
batch_size = 32  # per GPU; script: --batch-size=32 on 4 GPUs = 128 (paper: batch 128)

model = dict(
    type='CLIMCLIP',
    mode='clim',
    clip=dict(
        type='OpenCLIPRegion',
        model_name='ViT-B-16-quickgelu',  # OpenAI's weights use QuickGELU
        pretrained='checkpoints/clip/ViT-B-16.pt',  # OpenAI's release, a local file
        dense_mode='clim',  # script: --extract-type="v2"
        # script: --lock-image --lock-image-unlocked-groups 6: the last 6 of 12 blocks train;
        # ln_post and proj stay frozen (the official fork's VisionTransformer.lock).
        unlocked_vision_blocks=6,
        freeze_projection=True,
        freeze_text=True),  # clim.py: text features under torch.no_grad()
    loss=dict(type='CLIMCaptionLoss'),
    # clim.py CLIM.split_a_batch: one 2x2, 3x3 and 4x4 mosaic per 29 images (29 pseudo
    # regions), the other 3 of the 32 single.
    mosaic=dict(grid_choices=[2, 3, 4], composition='fixed', batch_size=batch_size),
    canvas_size=canvas_size,
    mosaic_interpolation='bicubic',  # clim.py: F.interpolate(..., mode='bicubic')
    weight_ensemble=0.7,  # script: --alpha 0.7 (main.py student_teacher_ensemble)
    use_masks=False,  # Table 5 classifies boxes ("rois" of zero_shot.py)
    # tools/generate_text_embeddings.py data/coco/annotations/panoptic_val2017.json \
    #     --model ViT-B-16-quickgelu --checkpoint checkpoints/clip/ViT-B-16.pt --templates vild \
    #     --out data/coco/embeddings/coco_panoptic_ViT-B-16_vild.npy
    class_embeddings='data/coco/embeddings/coco_panoptic_ViT-B-16_vild.npy',
    data_preprocessor=dict(
        type='DetDataPreprocessor', mean=clip_mean, std=clip_std, bgr_to_rgb=True))

# Decoded as the official PIL pipeline does: Pillow, EXIF orientation not applied.
load_image = dict(type='LoadImageFromFile', imdecode_backend='pillow',
                  color_type='color_ignore_orientation')
train_pipeline = [
    load_image,
    # open_clip image_transform (is_train): RandomResizedCrop(224, scale=(0.9, 1.0)), bicubic
    dict(type='RandomResizedCrop', size=image_size, scale=(0.9, 1.0), interpolation='bicubic'),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'captions')),
]
train_dataloader = dict(
    batch_size=batch_size,
    num_workers=4,  # script: --workers=4
    persistent_workers=True,
    drop_last=True,  # data.py: drop_last=is_train; a short last batch cannot hold the mosaics
    sampler=dict(type='DefaultSampler', shuffle=True),
    batch_sampler=None,
    dataset=dict(
        type='CocoCaptionPairDataset',
        data_root='data/coco/',
        ann_file='annotations/captions_train2017.json',
        data_prefix=dict(img='train2017/'),
        on_bad_entry='skip',
        pipeline=train_pipeline))

# Table 5's protocol (zero_shot.py run_panoptic, data.py COCOPanopticDataset): every segment of
# COCO panoptic val2017 (133 classes), a thing by its box and a stuff segment by its mask's
# bounding box, regions with w * h < 64 dropped; images resized to 1024 on the longer side
# (bicubic) and padded to 1024x1024 with zeros; mean per-class Top-1/Top-5 of things and stuff.
val_pipeline = [
    load_image,
    dict(type='LoadPanopticRegions', min_area=64, max_regions=100, with_mask=False),
    # ResizeLongest(1024): PIL bicubic (mmcv's Pillow backend gives the same pixels)
    dict(type='Resize', scale=(canvas_size, canvas_size), keep_ratio=True,
         interpolation='bicubic', backend='pillow'),
    dict(type='Pad', size=(canvas_size, canvas_size), pad_val=dict(img=0)),
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
        type='CocoPanopticDataset',
        data_root='data/coco/',
        ann_file='annotations/panoptic_val2017.json',
        data_prefix=dict(img='val2017/', seg='annotations/panoptic_val2017/'),
        test_mode=True,
        pipeline=val_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='RegionClassificationMetric')
test_evaluator = val_evaluator

max_epochs = 100  # script: --epochs=100 (paper: 100 epochs on COCO Captions)
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs,
                 val_interval=10)  # script: --zeroshot-frequency 10
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(
    type='OptimWrapper',
    # script: --lr=1e-5 --wd=0.1; params.py get_default_params (ViT): betas (0.9, 0.98), eps 1e-6
    optimizer=dict(type='AdamW', lr=1e-5, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.1),
    # main.py: no weight decay on gains and biases (p.ndim < 2, 'ln'/'bn'/'bias' in the name)
    # nor on logit_scale
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0, flat_decay_mult=0.0,
                       custom_keys={'logit_scale': dict(decay_mult=0.0)}))
# script: --warmup 1000; scheduler.py cosine_lr: linear warm-up over 1000 steps, then a
# per-step cosine to 0 over the rest of training.
param_scheduler = [
    dict(type='WarmupCosineLR', warmup_iters=1000, by_epoch=True, begin=0, end=max_epochs,
         convert_to_iter_based=True)
]
auto_scale_lr = dict(enable=False, base_batch_size=128)
custom_hooks = [dict(type='WeightEnsembleHook')]  # evaluate the 0.7/0.3 ensemble, as main.py
default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', interval=10, max_keep_ckpts=3),
    visualization=dict(draw=False))
