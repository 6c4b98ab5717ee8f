# F-VLM (Kuo et al., ICLR 2023) on a frozen CLIP ViT-B/16, OV-LVIS: Mask R-CNN with class-agnostic
# boxes and masks trained on the 866 base (frequent + common) classes, the 337 rare classes novel;
# mask AP of the rare classes (mAP_r) is the main metric. Base of configs/fvlm_*_lvis.py, which
# set the CLIP weights (pretrained=None here: random frozen weights only suit tests).
# Schedule: 8 GPUs x 8 images, 184,375 iterations with large-scale jitter at 1024 (see below).
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/lvis_v1_instance.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmclim'], allow_failed_imports=False)

# OpenAI's CLIP normalisation (open_clip.constants.OPENAI_DATASET_MEAN/STD) in 0-255 pixels.
clip_mean = [122.771, 116.746, 104.094]
clip_std = [68.501, 66.632, 70.323]
image_size = (1024, 1024)  # F-VLM: large-scale jitter at 1024x1024
data_root = 'data/lvis_v1/'
num_classes = 1203  # LVIS v1: 866 base + 337 novel, all classified (novel masked in training)
# Written with the base-only training file by tools/dataset_converters/prepare_ov_lvis.py; names
# the novel (rare) classes.
split_file = data_root + 'annotations/lvis_v1_train_ov_split.json'
# Class-name embeddings of the CLIP text tower, rows in category-id order. CLIM freezes the text
# tower, so OpenAI's embeddings serve the CLIM weights too:
#   python tools/generate_text_embeddings.py data/lvis_v1/annotations/lvis_v1_val.json \
#       --model ViT-B-16-quickgelu --checkpoint checkpoints/clip/ViT-B-16.pt \
#       --templates ensemble --out data/lvis_v1/embeddings/lvis_v1_ViT-B-16_ensemble.npy
text_embeddings = data_root + 'embeddings/lvis_v1_ViT-B-16_ensemble.npy'
# Temperature of the cosine-similarity classifiers: F-VLM's detector T = 0.01; the VLM's softmax
# uses CLIP's logit scale of 100, i.e. 0.01 as well.
detector_temperature = 0.01
vlm_temperature = 0.01

model = dict(
    type='FVLM',
    data_preprocessor=dict(
        mean=clip_mean,
        std=clip_std,
        bgr_to_rgb=True,
        # LSJ crops are padded to 1024x1024 in training (as mmdet's lsj-100e configs).
        batch_augments=[dict(type='BatchFixedSizePad', size=image_size, pad_mask=True)]),
    backbone=dict(
        _delete_=True,
        type='CLIPViTPyramidBackbone',
        model_name='ViT-B-16-quickgelu',  # OpenAI's weights use QuickGELU
        pretrained=None,
        # Tokens of blocks 4, 6, 8 and 12 of 12, the layers CLIM's F-VLM on ViT-B/16 uses.
        out_indices=(3, 5, 7, 11)),
    # ViTDet's simple pyramid on the stride-16 maps (deconv x4, deconv x2, identity, max-pool /2),
    # then mmdet's FPN; the frozen backbone has no trainable layer, this neck is the first.
    neck=dict(
        _delete_=True,
        type='SimplePyramidFPN',
        in_channels=768,  # ViT-B width
        in_stride=16,  # ViT-B/16 patch size
        out_strides=(4, 8, 16, 32),
        fpn=dict(type='FPN', out_channels=256, num_outs=5)),
    roi_head=dict(
        type='FVLMRoIHead',
        vlm_temperature=vlm_temperature,
        base_alpha=0.35,  # F-VLM's VLM weight for base classes on OV-LVIS
        novel_beta=0.65,  # F-VLM's VLM weight for novel classes on OV-LVIS
        bbox_head=dict(
            num_classes=num_classes,
            reg_class_agnostic=True,
            cls_predictor_cfg=dict(
                type='TextEmbeddingClassifier',
                text_embeddings=text_embeddings,
                split_file=split_file,
                temperature=detector_temperature)),
        mask_head=dict(num_classes=num_classes, class_agnostic=True)),
    # LVIS allows 300 detections per image (as mmdet's LVIS configs).
    test_cfg=dict(rcnn=dict(score_thr=0.0001, max_per_img=300)))

backend_args = None
# Large-scale jitter (Ghiasi et al., copy-paste, 2021), as F-VLM and mmdet's lsj-100e configs.
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomResize', scale=image_size, ratio_range=(0.1, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_type='absolute_range', crop_size=image_size,
         recompute_bbox=True, allow_negative_crop=True),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1e-2, 1e-2)),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=8,  # x 8 GPUs = 64, mmdet's LSJ batch
    num_workers=4,
    batch_sampler=None,  # LSJ pads every image to 1024x1024: no aspect-ratio grouping
    # mmdet's LVIS repeat-factor sampling (ClassBalancedDataset, oversample_thr=1e-3), on the
    # base-only file from tools/dataset_converters/prepare_ov_lvis.py.
    dataset=dict(
        dataset=dict(ann_file='annotations/lvis_v1_train_ov_base.json', pipeline=train_pipeline)))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
# Mask and box AP with APr/APc/APf on annotations/lvis_v1_val.json: mmclim's FastLVISMetric gives
# the reference LVIS API's numbers (benchmarks/lvis_eval.py) faster; type='LVISMetric' works too.
val_evaluator = dict(type='FastLVISMetric', metric=['bbox', 'segm'])
test_evaluator = val_evaluator

# F-VLM trains 46.1k iterations at batch 256. At batch 64 the same number of images takes
# 4 x 46.1k = 184.4k iterations: detectron2/ViTDet's LSJ "100 ep" schedule, 184,375 iterations
# x 64 images / 118,000 images per COCO epoch.
max_iters = 184375
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=40000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
# mmdet's lsj-100e recipe for batch 64: SGD 0.1, momentum 0.9, weight decay 4e-5, 500 warm-up
# iterations, x0.1 at 88% and 96% of training (its epochs 88 and 96 of 100).
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=0.00004))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.067, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=max_iters,
         milestones=[162250, 177000],  # 0.88 and 0.96 x 184,375
         gamma=0.1),
]
auto_scale_lr = dict(enable=False, base_batch_size=64)
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=10000, max_keep_ckpts=3))
log_processor = dict(by_epoch=False)
