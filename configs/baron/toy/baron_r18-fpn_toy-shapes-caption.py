# Toy BARON experiment, arm 2 "+ captions": arm 1 (baron_r18-fpn_toy-shapes-det-only.py) with
# BARON's bag-of-regions caption loss on single caption images of all 16 classes, in the
# proportions of the OV-COCO recipe (../baron_r50-caffe-c4_45k_ov-coco-caption.py): per iteration
# 4 scene images with base boxes and 4 caption images (2 and 2 per GPU there), the caption images
# at the scene size (the detection size there), the official loss and bag encoding. The data are
# the toy Detic caption arm's (../../detic/toy/detic_r18-fpn_toy-shapes-caption.py: object-centric
# caption images; README: why); its frozen text tower embeds the captions and reads the bags.
# Sized for the toy CLIP's 16-token context: bags of at most 6 proposals and the pseudo box, 2
# words each (10 and 4 in the recipe).
_base_ = '../../detic/toy/detic_r18-fpn_toy-shapes-caption.py'

batch_split = [4, 4]
# Every caption of a region's image is a positive of its bag, as the recipe (2 per toy image).
caption_meta_keys = ('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor', 'flip',
                     'flip_direction', 'region_captions', 'region_caption_lists', 'image_ids',
                     'mosaic_grid')
model = dict(
    type='BaronDetector',
    roi_head=dict(
        bbox_head=dict(
            type='BaronBBoxHead',  # stage 1's (faster-rcnn_r18-fpn_toy-shapes-base.py)
            num_words=2,
            word_drop_ratio=0.5,
            text_output='projection')),
    caption_loss=dict(
        _delete_=True, type='BaronCaptionLoss', logit_scale=30.0, queue_size=1024,
        loss_weight=10.0),
    bag_sampling=dict(max_num=6),  # the recipe's other sampling numbers (BAG_SAMPLING_DEFAULTS)
    bag_encoding=dict(max_perms=4, word_drop_ratio=0.5, positional_embedding=True))
caption_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='CaptionPseudoBox', all_captions=True),
    dict(type='Resize', scale={{_base_.scene_size}}, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='MultiBranch', branch_field={{_base_.branches}},
         caption_batch=dict(type='PackDetInputs', meta_keys=caption_meta_keys)),
]
caption_dataset = dict(
    type='CocoCaptionPairDataset',
    data_root={{_base_.data_root}},
    metainfo={{_base_.metainfo}},
    ann_file='annotations/captions_caption_centric.json',
    data_prefix=dict(img='caption_centric/'),
    pipeline=caption_pipeline)
train_dataloader = dict(
    batch_size=sum(batch_split),
    sampler=dict(batch_size=sum(batch_split), source_ratio=batch_split),
    dataset=dict(datasets=[{{_base_.det_dataset}}, caption_dataset]))
# The stage-1 run of tools/misc/caption_toy_arms.sh baron.
load_from = 'work_dirs/baron_toy/base/iter_600.pth'
