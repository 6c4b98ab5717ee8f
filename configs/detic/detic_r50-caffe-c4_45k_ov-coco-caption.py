# Detic's stage 2 on OV-COCO without CLIM: the stage-1 base detector fine-tuned for 45k
# iterations with box supervision (2 images per GPU) and caption supervision of whole images
# (4 per GPU), the caption loss only (CLIM paper, Table 2d row 1: 24.4 AP50 novel; Table 2a
# "4 w/o CLIM"). The paper's parallel supervision: each iteration takes a detection batch and a
# caption batch. The official code has no config for this run (it ships the CLIM ones only,
# configs/detic/detic-clim_*.py): this is the official CLIM config without the mosaic branch, with
# the official no-CLIM data set base (coco_ovd_detic.py: batch split [2, 4]).
#
# Sources, cited as [C:n] (line n): wusize/CLIM ovdet/configs/detic/ov_coco/
# detic_no_tags_clim_faster_rcnn_r50_caffe_c4_45k.py; [D:n]: ovdet/configs/_base_/datasets/
# coco_ovd_detic.py; [M:n]: ovdet/configs/_base_/datasets/coco_ovd_detic_clim.py; [H:n]:
# ovdet/configs/_base_/schedules/schedule_45k.py. The model is the stage-1 config's.
# Not run here: no COCO images, ImageNet or OpenAI weights, nor a GPU can be reached from the
# machines this project is built on; the configs are built and run (loss and predict) with a
# shrunk backbone by tests/test_models/test_detectors/test_detic.py.
_base_ = './faster-rcnn_r50-caffe-c4_90k_ov-coco-base.py'

# The branches of MultiBranch packing, the same in every pipeline (a branch no source fills is
# left out of the batch); the model and the sampler's source order name them. The mosaic branch
# is the CLIM configs' (detic-clim_*.py).
branches = ['det_batch', 'caption_batch', 'mosaic_batch']
# det_batch, caption_batch per GPU [D:50-63]; the paper: "2 and 4 on each GPU".
batch_split = [2, 4]
# Pseudo-region fields of the caption and mosaic samples (mosaic_grid: mosaics only).
caption_meta_keys = ('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor', 'flip',
                     'flip_direction', 'region_captions', 'image_ids', 'region_tags', 'mosaic_grid')
# Captions and image tags (the COCO classes named in the captions, Detic's "pos_category_ids")
# of COCO train2017: Detic's captions_train2017_tags_allcaps.json [M:70], or the same made from
# captions_train2017.json by tools/dataset_converters/add_caption_tags.py.
caption_ann_file = 'annotations/captions_train2017_tags_allcaps.json'

# The frozen text tower of the caption loss: OpenAI's CLIP ViT-B/32 [C:22-37], a local file.
text_encoder = dict(
    type='CLIPTextEncoder',
    model_name='ViT-B-32-quickgelu',
    pretrained='checkpoints/clip/ViT-B-32.pt')

# Detic's max-size tag loss of the *-caption-tags configs, cited as [T:n]: the official
# detic_w_tags_clim_faster_rcnn_r50_caffe_c4_45k.py (DeticTags(WithComposition) [T:72-78]). The
# class embeddings are the box head's.
detic_tag_loss = dict(
    type='DeticTagLoss',
    logit_scale=25.0,  # norm_temp
    bias=-20.0,  # bce_bias, learned
    learn_bias=True,
    neg_weight=1.0,  # tag_neg_weight
    base_batch_size=None,
    loss_weight=0.1 / 3)  # tag_weight

model = dict(
    data_preprocessor=dict(
        _delete_=True,
        type='MultiBranchDetDataPreprocessor',  # MultiBranchDataPreprocessor [C:41-51]
        data_preprocessor=dict(
            type='DetDataPreprocessor',
            mean=[103.530, 116.280, 123.675],
            std=[1.0, 1.0, 1.0],
            bgr_to_rgb=False,
            pad_size_divisor=32)),
    # Stage 2 starts from the stage-1 checkpoint (load_from), not from ImageNet [C:58, C:63].
    backbone=dict(init_cfg=None),
    roi_head=dict(shared_head=dict(init_cfg=None)),
    text_encoder=text_encoder,
    caption_branches=dict(caption_batch=dict(caption=True)),  # batch2ovd [C:59-60]
    caption_loss=dict(
        type='DeticCaptionLoss',  # DeticCaption(WithComposition) [C:65-71]
        logit_scale=25.0,  # norm_temp
        bias=-20.0,  # bce_bias, learned
        learn_bias=True,
        neg_weight=0.125,  # cap_neg_weight
        queue_size=256,  # queue_cfg lengths
        base_batch_size=4,
        loss_weight=0.1))  # caption_weight

backend_args = None
det_pipeline = [  # [M:7-16]
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(1333, 800), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='MultiBranch', branch_field=branches, det_batch=dict(type='PackDetInputs')),
]
caption_pipeline = [  # [M:18-33]
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='CaptionPseudoBox'),  # the whole-image box, one caption drawn per image
    dict(type='Resize', scale=(667, 400), keep_ratio=True),  # half the detection size [M:21]
    dict(type='RandomFlip', prob=0.5),
    dict(type='MultiBranch', branch_field=branches,
         caption_batch=dict(type='PackDetInputs', meta_keys=caption_meta_keys)),
]
det_dataset = dict(
    type='CocoDataset',
    data_root={{_base_.data_root}},
    metainfo={{_base_.metainfo}},
    ann_file='annotations/instances_train2017_ov_base.json',
    data_prefix=dict(img='train2017/'),
    filter_cfg=dict(filter_empty_gt=True, min_size=32),  # [M:64]
    pipeline=det_pipeline)
caption_dataset = dict(
    type='CocoCaptionPairDataset',  # CocoCaptionOVDDataset [M:67-74]
    data_root={{_base_.data_root}},
    metainfo={{_base_.metainfo}},
    ann_file=caption_ann_file,
    data_prefix=dict(img='train2017/'),
    with_tags=True,
    pipeline=caption_pipeline)
train_dataloader = dict(
    _delete_=True,
    batch_size=sum(batch_split),
    num_workers=6,  # sum(batch_split) [D:53]
    persistent_workers=True,
    sampler=dict(
        type='ExactMultiSourceSampler', batch_size=sum(batch_split), source_ratio=batch_split),
    batch_sampler=None,
    dataset=dict(
        type='ConcatDataset',
        ignore_keys=['palette'],  # CocoDataset's; the caption data sets have classes only
        datasets=[det_dataset, caption_dataset]))

max_iters = 45000  # [H:2]
train_cfg = dict(max_iters=max_iters, val_interval=5000)  # [H:2]
param_scheduler = [  # [H:7-17]
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=max_iters, milestones=[30000, 40000],
         gamma=0.1),
]
# The stage-1 result (configs/detic/faster-rcnn_r50-caffe-c4_90k_ov-coco-base.py) [C:94].
load_from = 'checkpoints/detic_coco_base.pth'
