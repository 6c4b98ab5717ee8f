# F-VLM on a frozen CLIP RN50x64, OV-LVIS, as the official CLIM code trains it: the ViT-B/16
# OV-LVIS recipe with the ResNet's C2-C5 into a plain FPN, a normalised RPN, large-scale jitter
# at 1024 and a short SGD schedule at batch 256 (CLIM paper, Table 1b: 30.1 mAP_r with OpenAI's
# CLIP, 32.3 with CLIM). Base of configs/fvlm_{clip,clim}_rn50x64_lvis.py, which set the weights.
#
# Sources, cited as [R:n] (line n): wusize/CLIM ovdet/configs/clip_based/openai_rn50x64/
# mask_rcnn_fpn_openai_rn50x64_clim_bs256_ov_lvis_2.88k.py; [D:n]: its data set base
# ovdet/configs/_base_/datasets/lvis_v1_ovd_base_lsj.py; [I:n]: its runtime
# ovdet/configs/_base_/iter_based_runtime.py. What is not set here is the ViT-B/16 config's,
# whose values the official RN50x64 config repeats (roi_head, test_cfg: [R:34-68]).
_base_ = './fvlm_vitb16_nasfpn_lsj640-48e_ov-lvis.py'

data_root = 'data/lvis_v1/'
#   python tools/generate_text_embeddings.py data/lvis_v1/annotations/lvis_v1_val.json \
#       --model RN50x64-quickgelu --checkpoint checkpoints/clip/RN50x64.pt \
#       --templates vild --out data/lvis_v1/embeddings/lvis_v1_RN50x64_vild.npy
# (as the official file, lvis_openai_rn50x64_hand_craft.npy [R:50]: ViLD's 63 prompts).
class_embeddings = data_root + 'embeddings/lvis_v1_RN50x64_vild.npy'
clip_mean = [122.7709383, 116.7460125, 104.09373615]  # [R:9-11]
pad_value = tuple(clip_mean)  # as the ViT config: [D:28-29]
norm_cfg = dict(type='SyncBN', requires_grad=True)  # [R:6]
image_size = (1024, 1024)  # large-scale jitter at 1024 [D:3]

model = dict(
    backbone=dict(
        model_name='RN50x64-quickgelu',  # [R:15]
        out_indices=(1, 2, 3, 4)),  # C2-C5, all four stage outputs [R:12-24]
    # C2-C5 are at strides 4-32 already: the rescaling is the identity and the neck is the FPN
    # of the official config (in_channels from the backbone, norm_cfg [R:25-28]).
    neck=dict(fpn=dict(_delete_=True, type='FPN', out_channels=256, num_outs=5,
                       norm_cfg=norm_cfg)),
    # The official CustomRPNHead: 2 stacked convolutions with norm_cfg [R:29-33].
    rpn_head=dict(type='NormRPNHead', num_convs=2, norm_cfg=norm_cfg),
    roi_head=dict(bbox_head=dict(class_embeddings=class_embeddings)))

backend_args = None
train_pipeline = [  # [D:14-33]
    dict(type='LoadImageFromFile', backend_args=backend_args, to_float32=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomResize', scale=image_size, ratio_range=(0.1, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_type='absolute_range', crop_size=image_size,
         recompute_bbox=True, allow_negative_crop=True),
    dict(type='Pad', size=image_size, pad_val=dict(img=pad_value, seg=255)),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1e-2, 1e-2)),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [  # [D:43-54]
    dict(type='LoadImageFromFile', backend_args=backend_args, to_float32=True),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='Pad', size=image_size, pad_val=dict(img=pad_value, seg=255)),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
max_iters = 2880  # [R:76]
train_dataloader = dict(
    batch_size=32,  # per GPU, x 8 GPUs = 256 [R:105]
    num_workers=4,  # [R:106]
    sampler=dict(type='InfiniteSampler'),  # [R:107]
    dataset=dict(dataset=dict(pipeline=train_pipeline)))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

# Iteration-based runtime [I:2-6]: a checkpoint every 1440 iterations [R:71-73], one kept.
default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters // 2,
                    max_keep_ckpts=1))
log_processor = dict(type='LogProcessor', window_size=50, by_epoch=False)
# 2880 iterations at 8 GPUs x 32 images, evaluated at the end [R:76].
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters,
                 val_interval=max_iters)
param_scheduler = [
    # Linear warm-up from 0.009 over 250 iterations [R:82-83].
    dict(type='LinearLR', start_factor=0.009, by_epoch=False, begin=0, end=250),
    # x0.1 after 80%, 90% and 95% of training [R:84-90].
    dict(type='MultiStepLR', begin=0, end=max_iters, by_epoch=False,
         milestones=[2304, 2592, 2736], gamma=0.1),
]
# The official AmpOptimWrapper [R:94] cannot be built without CUDA; `tools/train.py --amp`
# makes this one an AmpOptimWrapper (dynamic loss scale, as mmengine's default).
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.36, momentum=0.9, weight_decay=0.0001),  # [R:95]
    clip_grad=dict(max_norm=1.0, norm_type=2))  # [R:96]
auto_scale_lr = dict(enable=True, base_batch_size=256)  # 8 GPUs x 32 images [R:103]
