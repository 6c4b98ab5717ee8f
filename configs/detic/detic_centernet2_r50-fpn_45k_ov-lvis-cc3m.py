# Detic on OV-LVIS without CLIM: the box-supervised CenterNet2 (centernet2_r50-fpn_90k_ov-lvis-base
# .py) fine-tuned for 45k iterations with LVIS base boxes (8 images per GPU) and CC3M captions (32
# per GPU), caption and max-size tag losses at each cascade stage (CLIM paper, Table 1b "Detic":
# 19.5 mask mAP_r, the number of the Detic paper; the official repository reports the CLIM run
# only).
#
# Sources, cited as [C:n] (line n): wusize/CLIM ovdet/configs/detic/ov_lvis/
# detic_centernet2_r50_fpn_4x_lvis-base_cc3m-lvis.py. The model is the base config's.
# Not run here: no LVIS or CC3M images, ImageNet-21k or OpenAI weights, nor a GPU can be
# reached from the machines this project is built on; the configs are built and run (loss and
# predict) with a shrunk backbone by tests/test_models/test_detectors/test_detic.py.
_base_ = './centernet2_r50-fpn_90k_ov-lvis-base.py'

# The branches of MultiBranch packing, the same in every pipeline; the CLIM config fills the
# third (a branch no source fills is left out of the batch).
branches = ['det_batch', 'cap_batch', 'clim_batch']
batch_split = [8, 32]  # det_batch, cap_batch per GPU [C:87]
image_size_det = (640, 640)
image_size_cap = (320, 320)
caption_meta_keys = ('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor', 'flip',
                     'flip_direction', 'region_captions', 'image_ids', 'region_tags', 'mosaic_grid')
# CC3M images with their caption and LVIS tags (Detic's train_image_info_tags.json [C:82], or
# the same made by tools/dataset_converters/add_caption_tags.py with LVIS's categories).
caption_root = 'data/cc3m/'
caption_ann_file = 'annotations/train_image_info_tags.json'

model = dict(
    data_preprocessor=dict(
        _delete_=True,
        type='MultiBranchDetDataPreprocessor',
        data_preprocessor=dict(
            type='DetDataPreprocessor',
            mean=[123.675, 116.28, 103.53],
            std=[58.395, 57.12, 57.375],
            bgr_to_rgb=True,
            pad_size_divisor=32)),
    backbone=dict(init_cfg=None),  # from load_from
    # The frozen text tower: OpenAI's CLIP ViT-B/32 [C:130-145], a local file.
    text_encoder=dict(
        type='CLIPTextEncoder',
        model_name='ViT-B-32-quickgelu',
        pretrained='checkpoints/clip/ViT-B-32.pt'),
    caption_branches=dict(cap_batch=dict(caption=True, tags=True)),  # batch2ovd [C:161]
    caption_loss=dict(
        type='DeticCaptionLoss',  # DeticCaption [C:172-178]
        logit_scale=50.0,  # norm_temp
        bias=None,  # bce_bias=None
        neg_weight=1 / 8,  # cap_neg_weight
        queue_size=256,
        base_batch_size=None,
        loss_weight=1.0),  # caption_weight
    tag_loss=dict(
        type='DeticTagLoss',  # DeticTags [C:165-171]
        logit_scale=50.0,
        bias=None,
        neg_weight=1.0,
        base_batch_size=None,
        loss_weight=0.1),  # tag_weight
    tag_sampling=dict(topk=128, iof_thr=0.3))

backend_args = None
det_pipeline = [  # [C:18-38]
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomResize', scale=image_size_det, ratio_range=(0.1, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_type='absolute_range', crop_size=image_size_det,
         recompute_bbox=True, allow_negative_crop=True),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1e-2, 1e-2)),
    dict(type='RandomFlip', prob=0.5),
    dict(type='MultiBranch', branch_field=branches, det_batch=dict(type='PackDetInputs')),
]
caption_pipeline = [  # [C:40-65]: the pseudo box is the random crop's extent
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='CaptionPseudoBox'),
    dict(type='RandomResize', scale=image_size_cap, ratio_range=(0.5, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_type='absolute_range', crop_size=image_size_cap,
         recompute_bbox=True, allow_negative_crop=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='MultiBranch', branch_field=branches,
         cap_batch=dict(type='PackDetInputs', meta_keys=caption_meta_keys)),
]
det_dataset = dict(  # [C:67-77]
    type='ClassBalancedDataset',
    oversample_thr=1e-3,
    dataset=dict(
        type='LVISV1Dataset',
        data_root={{_base_.data_root}},
        metainfo={{_base_.metainfo}},
        ann_file='annotations/lvis_v1_train_ov_base.json',
        data_prefix=dict(img=''),
        filter_cfg=dict(filter_empty_gt=True, min_size=32),
        pipeline=det_pipeline,
        backend_args=backend_args))
caption_dataset = dict(
    type='CC3MCaptionDataset',  # CC3MLVISV1Dataset [C:79-85]
    data_root=caption_root,
    metainfo={{_base_.metainfo}},
    ann_file=caption_ann_file,
    data_prefix=dict(img='images/'),
    with_tags=True,
    pipeline=caption_pipeline)
train_dataloader = dict(  # [C:88-100]
    _delete_=True,
    batch_size=sum(batch_split),
    num_workers=4,
    persistent_workers=True,
    sampler=dict(
        type='ExactMultiSourceSampler', batch_size=sum(batch_split), source_ratio=batch_split),
    batch_sampler=None,
    dataset=dict(
        type='ConcatDataset',
        ignore_keys=['palette'],  # LVISV1Dataset's; the caption data sets have classes only
        datasets=[det_dataset, caption_dataset]))

max_iters = 45000  # [C:102]
train_cfg = dict(max_iters=max_iters, val_interval=15000)  # [C:114-115]
param_scheduler = [  # warm-up over 1000 iterations from 0.001, then cosine [C:103-113]
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='CosineAnnealingLR', begin=0, by_epoch=False, T_max=max_iters),
]
default_hooks = dict(
    checkpoint=dict(by_epoch=False, interval=5000, max_keep_ckpts=1))  # [C:123-124]
# The box-supervised base model, mmdet's released checkpoint [C:126].
load_from = 'checkpoints/detic_centernet2_r50_fpn_4x_lvis-base_boxsup_20230921_180638-c1685ee2.pth'
