# Detic's stage 1 on OV-COCO: Faster R-CNN R50-C4 trained on the boxes of the 48 base classes,
# with the sigmoid zero-shot classifier of the stage-2 caption configs, as the official CLIM
# code trains it before its caption fine-tuning (its README step 1 saves the result as
# checkpoints/detic_coco_base.pth, the load_from of configs/detic/detic*_ov-coco*.py).
#
# Sources, cited as [S:n] (line n): wusize/CLIM ovdet/configs/detic/ov_coco/
# faster_rcnn_r50_caffe_c4_90k_ovcoco.py; [B:n]: its data set base ovdet/configs/_base_/datasets/
# coco_ovd_base.py; [H:n]: its schedule ovdet/configs/_base_/schedules/schedule_90k.py; [R:n]: its
# runtime ovdet/configs/_base_/iter_based_runtime.py. Everything not set here is mmdet's
# faster-rcnn_r50-caffe-c4, coco_detection and default_runtime, which the official configs
# inherit too [S:1-5, B:2, R:1].
# Not run here: no COCO images, ImageNet or OpenAI weights, nor a GPU can be reached from the
# machines this project is built on; the configs are built and run (loss and predict) with a
# shrunk backbone by tests/test_models/test_detectors/test_detic.py.
_base_ = [
    'mmdet::_base_/models/faster-rcnn_r50-caffe-c4.py',
    'mmdet::_base_/datasets/coco_detection.py',
    'mmdet::_base_/default_runtime.py',
]
# The 65 OV-COCO classes in category-id order (the import must follow _base_: mmengine reads a
# config that starts with an import as a new-style lazy-import config).
from mmclim.datasets.ov_splits import OV_COCO_CLASSES  # noqa: E402

custom_imports = dict(imports=['mmclim'], allow_failed_imports=False)
find_unused_parameters = True  # [R:7]

data_root = 'data/coco/'
# Difference kept (as the F-VLM configs): we classify the 65 OV-COCO classes of the files of
# tools/dataset_converters/prepare_ov_coco.py, whose split file names the 17 novel ones; the
# official head scores all 80 COCO classes with class weight 1 for the 48 base ones and 0 for the
# 32 others [S:8-15], so 15 classes that OV-COCO never evaluates compete at test time.
metainfo = dict(classes=OV_COCO_CLASSES)
split_file = data_root + 'annotations/ov_coco_split.json'
# Class-name embeddings of the text tower of the caption configs, OpenAI's CLIP ViT-B/32 (the
# official coco_clip_hand_craft.npy [S:46]: 80 x 512, made by Detic with its hand-crafted
# prompts), rows in category-id order, with the sidecar naming the model:
#   python tools/generate_text_embeddings.py data/coco/annotations/instances_val2017_ov_all.json \
#       --model ViT-B-32-quickgelu --checkpoint checkpoints/clip/ViT-B-32.pt \
#       --templates vild --out data/coco/embeddings/ov_coco_ViT-B-32_vild.npy
class_embeddings = data_root + 'embeddings/ov_coco_ViT-B-32_vild.npy'
# ImageNet ResNet-50 (MSRA caffe weights) for the backbone and the res5 head [S:31-38], a local
# file: nothing is downloaded.
resnet_checkpoint = 'checkpoints/resnet50_msra-5891d200.pth'

model = dict(
    type='DeticDetector',  # the official OVDTwoStageDetector without batch2ovd [S:24]
    backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=resnet_checkpoint)),
    # Difference: the official CustomRPNHead orders anchors scale-minor (scale_major=False,
    # "align with detectron2" [S:25-30]); the order of the anchors of one position does not
    # change what the head learns, so mmdet's RPNHead is kept.
    roi_head=dict(
        type='DeticRoIHead',  # OVDStandardRoIHead [S:35]
        shared_head=dict(init_cfg=dict(type='Pretrained', checkpoint=resnet_checkpoint)),
        bbox_head=dict(
            _delete_=True,
            type='DeticBBoxHead',  # [S:41]
            # Average-pooled res5 features (2048), classified through the text space; the box
            # regression is the official 2-layer MLP 2048 -> 2048 -> 4 [S:17-21, S:42].
            in_channels=2048,
            roi_feat_size=7,
            with_avg_pool=True,
            num_shared_fcs=0,
            num_reg_fcs=1,
            fc_out_channels=2048,
            reg_class_agnostic=True,  # [S:43]
            num_classes=len(OV_COCO_CLASSES),
            class_embeddings=class_embeddings,
            split_file=split_file,
            logit_scale=25.0,  # cls_temp [S:45]
            cls_bias=-20.0,  # [S:44]
            bbox_coder=dict(
                type='DeltaXYWHBBoxCoder',
                target_means=[0., 0., 0., 0.],
                target_stds=[0.1, 0.1, 0.2, 0.2]),
            # Sigmoid cross-entropy, base classes 1 and novel 0 (derived from split_file) [S:47-50]
            loss_cls=dict(type='DeticSigmoidClassLoss', loss_weight=1.0),
            loss_bbox=dict(type='L1Loss', loss_weight=1.0))))

backend_args = None
train_pipeline = [  # mmdet's coco_detection pipeline [B:2]
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(1333, 800), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(
    batch_size=2,  # mmdet's default, x 8 GPUs = 16 [H:27]
    sampler=dict(type='InfiniteSampler'),  # [B:7]
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        # Base annotations only (the official wusize/instances_train2017_base.json [B:9]),
        # without images smaller than 32 px or without a base box (mmdet's filter_cfg).
        ann_file='annotations/instances_train2017_ov_base.json',
        data_prefix=dict(img='train2017/'),
        pipeline=train_pipeline))
val_ann_file = 'annotations/instances_val2017_ov_all.json'
val_dataloader = dict(
    dataset=dict(
        data_root=data_root, metainfo=metainfo, ann_file=val_ann_file,
        data_prefix=dict(img='val2017/')))
test_dataloader = val_dataloader
# Box AP50 of the base, novel and all classes in one COCO evaluation; per category it equals the
# official two CocoMetrics on the base-only and novel-only files [B:13-27].
val_evaluator = dict(
    _delete_=True,
    type='OVCocoSplitMetric',
    split_file=split_file,
    ann_file=data_root + val_ann_file,
    metric='bbox')
test_evaluator = val_evaluator

max_iters = 90000  # [H:2]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=10000)  # [H:2]
val_cfg = dict(type='ValLoop')  # [H:3-4]
test_cfg = dict(type='TestLoop')
param_scheduler = [  # [H:7-17]
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=max_iters, milestones=[60000, 80000],
         gamma=0.1),
]
# SGD 0.02 for 16 images [H:20-22], gradients clipped at 35 [S:56-59]. The official
# AmpOptimWrapper [S:57] cannot be built without CUDA; `tools/train.py --amp` makes this one an
# AmpOptimWrapper.
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=0.0001),
    clip_grad=dict(max_norm=35, norm_type=2))
auto_scale_lr = dict(enable=False, base_batch_size=16)  # [H:28]
default_hooks = dict(  # [R:4]
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=5000, max_keep_ckpts=1))
log_processor = dict(type='LogProcessor', window_size=50, by_epoch=False)  # [R:6]
