# Toy Detic experiment, arm 2 "+ captions": arm 1 (detic_r18-fpn_toy-shapes-det-only.py) with
# Detic's caption loss on single caption images of all 16 classes, in the proportions of the
# OV-COCO recipe (configs/detic/detic_r50-caffe-c4_45k_ov-coco-caption.py): per iteration 4 scene
# images with base boxes and 8 caption images (2 and 4 per GPU there), the caption images at
# half the scene size (64 px, as 667x400 there for 1333x800), the official caption loss. The
# caption text embeddings come from the frozen text tower of the toy CLIP of `make demo`.
_base_ = './detic_r18-fpn_toy-shapes-det-only.py'

branches = ['det_batch', 'caption_batch', 'mosaic_batch']
batch_split = [4, 8]
caption_size = (64, 64)  # the generated caption images
caption_meta_keys = ('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor', 'flip',
                     'flip_direction', 'region_captions', 'image_ids', 'mosaic_grid')

model = dict(
    data_preprocessor=dict(
        _delete_=True,
        type='MultiBranchDetDataPreprocessor',
        data_preprocessor=dict(  # mmdet's faster-rcnn_r50_fpn one, per branch
            type='DetDataPreprocessor',
            mean=[123.675, 116.28, 103.53],
            std=[58.395, 57.12, 57.375],
            bgr_to_rgb=True,
            pad_size_divisor=32)),
    text_encoder=dict(
        type='CLIPTextEncoder',
        model_name='mmclim-toy-vit',
        pretrained='work_dirs/demo/baseline/clip_openclip.pt'),
    caption_branches=dict(caption_batch=dict(caption=True)),
    caption_loss=dict(
        type='DeticCaptionLoss',  # the OV-COCO settings
        logit_scale=25.0,
        bias=-20.0,
        learn_bias=True,
        neg_weight=0.125,
        queue_size=256,
        base_batch_size=4,
        loss_weight=0.1))

det_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale={{_base_.scene_size}}, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='MultiBranch', branch_field=branches, det_batch=dict(type='PackDetInputs')),
]
caption_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='CaptionPseudoBox'),
    dict(type='Resize', scale=caption_size, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='MultiBranch', branch_field=branches,
         caption_batch=dict(type='PackDetInputs', meta_keys=caption_meta_keys)),
]
det_dataset = dict(
    type='CocoDataset',
    data_root={{_base_.data_root}},
    metainfo={{_base_.metainfo}},
    ann_file='annotations/instances_train_ov_base.json',
    data_prefix=dict(img='train/'),
    filter_cfg=dict(filter_empty_gt=True, min_size=0),
    pipeline=det_pipeline)
caption_dataset = dict(
    type='CocoCaptionPairDataset',
    data_root={{_base_.data_root}},
    metainfo={{_base_.metainfo}},
    ann_file='annotations/captions_caption_centric.json',
    data_prefix=dict(img='caption_centric/'),
    pipeline=caption_pipeline)
train_dataloader = dict(
    _delete_=True,
    batch_size=sum(batch_split),
    num_workers=1,
    persistent_workers=False,
    sampler=dict(
        type='ExactMultiSourceSampler', batch_size=sum(batch_split), source_ratio=batch_split),
    batch_sampler=None,
    dataset=dict(
        type='ConcatDataset',
        ignore_keys=['palette'],
        datasets=[det_dataset, caption_dataset]))
