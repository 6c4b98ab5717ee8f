# Detic's box-supervised base model on OV-LVIS: CenterNet2 R50-FPN (mmdet's CenterNetUpdateHead
# as the proposal stage, mmclim.models.dense_heads.CenterNetRPNHead; a 3-stage cascade with
# Detic's sigmoid zero-shot classifier and federated loss; a class-agnostic mask head) trained on
# the boxes and masks of the 866 base classes (the 337 rare ones are novel), the "Box-Supervised"
# model the caption configs (configs/detic/detic*_ov-lvis-cc3m.py) start from. mmdet releases a
# trained copy (detic_centernet2_r50_fpn_4x_lvis-base_boxsup_20230921_180638-c1685ee2.pth).
#
# Sources, cited as [S:n] (line n): wusize/CLIM ovdet/configs/detic/ov_lvis/
# detic_centernet2_r50_fpn_4x_lvis_boxsup.py (itself mmdet's projects/Detic_new config).
# Not run here: no LVIS or CC3M images, ImageNet-21k or OpenAI weights, nor a GPU can be
# reached from the machines this project is built on; the configs are built and run (loss and
# predict) with a shrunk backbone by tests/test_models/test_detectors/test_detic.py.
_base_ = [
    'mmdet::_base_/models/faster-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/lvis_v1_instance.py',
    'mmdet::_base_/default_runtime.py',
]
# The LVIS v1 class names (the import must follow _base_: mmengine reads a config that starts
# with an import as a new-style lazy-import config).
from mmdet.datasets import LVISV1Dataset  # noqa: E402

custom_imports = dict(imports=['mmclim'], allow_failed_imports=False)
find_unused_parameters = True

data_root = 'data/lvis_v1/'
lvis_classes = LVISV1Dataset.METAINFO['classes']
metainfo = dict(classes=lvis_classes)  # also of the caption data sets of the children
num_classes = len(lvis_classes)  # 1203 [S:6]
# Written with the base-only training file by tools/dataset_converters/prepare_ov_lvis.py: the
# rare classes are novel (the official lvis_v1_train_norare.json [S:334]).
split_file = data_root + 'annotations/lvis_v1_train_ov_split.json'
# "a <class name>" embedded by OpenAI's CLIP ViT-B/32 text tower (the official
# lvis_v1_clip_a+cname.npy [S:13]), rows in category-id order, with the sidecar naming the model:
#   python tools/generate_text_embeddings.py data/lvis_v1/annotations/lvis_v1_val.json \
#       --model ViT-B-32-quickgelu --checkpoint checkpoints/clip/ViT-B-32.pt \
#       --templates detic --out data/lvis_v1/embeddings/lvis_v1_ViT-B-32_detic.npy
class_embeddings = data_root + 'embeddings/lvis_v1_ViT-B-32_detic.npy'
# Image counts of the classes over LVIS v1 train, for the federated loss's class sampling (the
# official lvis_v1_train_cat_info.json [S:7], the categories' image_count).
class_frequencies = data_root + 'annotations/lvis_v1_train.json'
# ImageNet-21k ResNet-50 of MIIL [S:39-42], a local file: nothing is downloaded.
backbone_checkpoint = 'checkpoints/resnet50_miil_21k.pth'


def stage_head(target_stds):
    """One cascade stage's box head [S:89-148], with that stage's regression targets."""
    return dict(
        type='DeticBBoxHead',  # OriginalDeticBBoxHead [S:91]
        num_shared_fcs=2,  # Shared2FC of 1024 [S:92-94]
        in_channels=256,
        fc_out_channels=1024,
        roi_feat_size=7,
        num_reg_fcs=1,  # the 1024 -> 1024 -> 4 regression MLP [S:18-22]
        reg_class_agnostic=True,
        num_classes=num_classes,
        class_embeddings=class_embeddings,
        split_file=split_file,
        logit_scale=50.0,  # norm_temperature [S:17]
        cls_bias=None,  # use_bias=0.0 [S:15]
        # No class weights [S:105-107]: the rare classes are never boxed in the base-only data
        # and are negatives when the federated loss draws them.
        novel_class_weight=1.0,
        bbox_coder=dict(
            type='DeltaXYWHBBoxCoder', target_means=[0., 0., 0., 0.], target_stds=target_stds),
        loss_cls=dict(
            type='DeticSigmoidClassLoss',
            loss_weight=1.0,
            # use_fed_loss [S:98-99]: 50 classes drawn by frequency^0.5 (the official defaults).
            federated=dict(class_frequencies=class_frequencies, num_classes=50, power=0.5)),
        loss_bbox=dict(type='SmoothL1Loss', beta=0.1, loss_weight=1.0))  # [S:108-109]


model = dict(
    type='DeticDetector',  # CenterNet2 [S:25]
    data_preprocessor=dict(  # [S:26-31]
        mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], bgr_to_rgb=True,
        pad_size_divisor=32),
    backbone=dict(  # [S:32-42]
        depth=50,
        out_indices=(1, 2, 3),
        frozen_stages=-1,
        norm_cfg=dict(type='BN', requires_grad=False),
        norm_eval=True,
        init_cfg=dict(type='Pretrained', checkpoint=backbone_checkpoint)),
    neck=dict(  # P3-P7 [S:43-51]
        in_channels=[512, 1024, 2048],
        out_channels=256,
        start_level=0,
        add_extra_convs='on_output',
        num_outs=5,
        relu_before_extra_convs=True,
        init_cfg=dict(type='Caffe2Xavier', layer='Conv2d')),
    rpn_head=dict(  # [S:52-72]
        _delete_=True,
        type='CenterNetRPNHead',
        num_classes=1,
        in_channels=256,
        stacked_convs=4,
        feat_channels=256,
        strides=[8, 16, 32, 64, 128],
        conv_bias=True,
        norm_cfg=dict(type='GN', num_groups=32, requires_grad=True),
        ignore_high_fp=0.85,  # [S:69]
        # HeatmapFocalLoss(alpha=0.25, beta=4, gamma=2, pos_weight=0.5, neg_weight=0.5) [S:61-70]
        # in mmdet's GaussianFocalLoss terms (CenterNetRPNHead's docstring).
        loss_cls=dict(type='GaussianFocalLoss', alpha=2.0, gamma=4.0, pos_weight=0.25 * 0.5,
                      neg_weight=0.75 * 0.5, loss_weight=1.0),
        loss_bbox=dict(type='GIoULoss', eps=1e-6, loss_weight=1.0)),  # [S:71]
    roi_head=dict(
        _delete_=True,
        type='DeticCascadeRoIHead',  # DeticRoIHead [S:74]
        num_stages=3,
        stage_loss_weights=[1.0, 1.0, 1.0],  # [S:75-76]
        mult_proposal_score=True,  # sqrt(cascade score x proposal score), Detic's test score
        bbox_roi_extractor=dict(  # [S:77-88]
            type='SingleRoIExtractor',
            roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=0),
            out_channels=256,
            featmap_strides=[8, 16, 32],
            finest_scale=112),
        bbox_head=[
            stage_head([0.1, 0.1, 0.2, 0.2]),  # [S:103]
            stage_head([0.05, 0.05, 0.1, 0.1]),  # [S:123]
            stage_head([0.033, 0.033, 0.067, 0.067]),  # [S:143]
        ],
        mask_roi_extractor=dict(  # [S:150-157]
            type='SingleRoIExtractor',
            roi_layer=dict(type='RoIAlign', output_size=14, sampling_ratio=0),
            out_channels=256,
            featmap_strides=[8, 16, 32],
            finest_scale=112),
        mask_head=dict(  # [S:158-166]
            type='FCNMaskHead',
            num_convs=4,
            in_channels=256,
            conv_out_channels=256,
            class_agnostic=True,
            num_classes=num_classes,
            loss_mask=dict(type='CrossEntropyLoss', use_mask=True, loss_weight=1.0))),
    train_cfg=dict(
        _delete_=True,
        # mmdet's TwoStageDetector needs the key; CenterNetRPNHead assigns its own targets.
        rpn=dict(),
        rpn_proposal=dict(  # [S:186-191]
            score_thr=0.0001, nms_pre=4000, max_per_img=2000,
            nms=dict(type='nms', iou_threshold=0.9), min_bbox_size=0),
        rcnn=[  # [S:192-244]
            dict(
                assigner=dict(type='MaxIoUAssigner', pos_iou_thr=iou, neg_iou_thr=iou,
                              min_pos_iou=iou, match_low_quality=False, ignore_iof_thr=-1),
                sampler=dict(type='RandomSampler', num=512, pos_fraction=0.25, neg_pos_ub=-1,
                             add_gt_as_proposals=stage == 0),
                mask_size=28,
                pos_weight=-1,
                debug=False) for stage, iou in enumerate((0.6, 0.7, 0.8))
        ]),
    test_cfg=dict(
        _delete_=True,
        rpn=dict(  # [S:246-251]
            score_thr=0.0001, nms_pre=1000, max_per_img=256,
            nms=dict(type='nms', iou_threshold=0.9), min_bbox_size=0),
        rcnn=dict(  # [S:252-256]
            score_thr=0.02, nms=dict(type='nms', iou_threshold=0.5), max_per_img=300,
            mask_thr_binary=0.5)))

backend_args = None
image_size = (640, 640)
train_pipeline = [  # large-scale jitter at 640 [S:261-278]
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomResize', scale=image_size, ratio_range=(0.1, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_type='absolute_range', crop_size=image_size,
         recompute_bbox=True, allow_negative_crop=True),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1e-2, 1e-2)),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [  # [S:301-320]
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=(1333, 800), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(  # [S:322-338]
    _delete_=True,
    batch_size=8,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    batch_sampler=dict(type='AspectRatioBatchSampler'),
    dataset=dict(
        type='ClassBalancedDataset',
        oversample_thr=1e-3,
        dataset=dict(
            type='LVISV1Dataset',
            data_root=data_root,
            metainfo=metainfo,
            ann_file='annotations/lvis_v1_train_ov_base.json',
            data_prefix=dict(img=''),
            filter_cfg=dict(filter_empty_gt=True, min_size=32),
            pipeline=train_pipeline,
            backend_args=backend_args)))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
# Box and mask AP with APr/APc/APf on lvis_v1_val.json [S:370-374]; mmclim's FastLVISMetric gives
# the LVIS API's numbers faster.
val_evaluator = dict(type='FastLVISMetric', metric=['bbox', 'segm'])
test_evaluator = val_evaluator

max_iters = 90000  # "4x" at 8 GPUs x 8 images [S:376-379]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
# AdamW 2e-4, no weight decay on norms, gradients clipped at 1 [S:386-390]; `tools/train.py
# --amp` makes it an AmpOptimWrapper.
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.0002, weight_decay=0.0001),
    paramwise_cfg=dict(norm_decay_mult=0.),
    clip_grad=dict(max_norm=1.0, norm_type=2))
param_scheduler = [  # warm-up over 10k iterations from 1e-4, then cosine [S:392-405]
    dict(type='LinearLR', start_factor=0.0001, by_epoch=False, begin=0, end=10000),
    dict(type='CosineAnnealingLR', begin=0, by_epoch=False, T_max=max_iters),
]
auto_scale_lr = dict(enable=False, base_batch_size=64)
default_hooks = dict(  # [S:408-410]
    checkpoint=dict(by_epoch=False, interval=30000, max_keep_ckpts=5),
    logger=dict(type='LoggerHook', interval=50))
log_processor = dict(by_epoch=False)
