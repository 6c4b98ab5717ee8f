# Toy BARON experiment, arm 4 "+ CLIM": arm 2 (baron_r18-fpn_toy-shapes-caption.py) with its 4
# caption images per iteration split into 2 single images and 2 mosaics, as the OV-COCO BARON +
# CLIM recipe (../baron-clim_r50-caffe-c4_45k_ov-coco-caption.py): 2x2, 3x3 or 4x4 grids drawn per
# mosaic, each image fitted into a 64-px cell with its aspect ratio (the caption images' size),
# the pseudo box the pasted image, the canvas resized to the scene size; one bag per pseudo
# region, sampled inside it, aligned with its caption.
_base_ = './baron_r18-fpn_toy-shapes-caption.py'

batch_split = [4, 2, 2]
model = dict(
    caption_branches=dict(caption_batch=dict(caption=True), mosaic_batch=dict(caption=True)))
mosaic_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomFlip', prob=0.5),
    dict(
        type='CachedMosaicPseudoRegion',
        grid_choices=[(2, 2), (3, 3), (4, 4)],
        cell_size=64,  # the caption images' size
        keep_ratio=True,
        crop_scale=(1.0, 1.0),
        pseudo_box='image',
        pad_val=114,
        max_cached_images=256,
        all_captions=True),
    dict(type='Resize', scale={{_base_.scene_size}}, keep_ratio=True),
    dict(type='MultiBranch', branch_field={{_base_.branches}},
         mosaic_batch=dict(type='PackDetInputs', meta_keys={{_base_.caption_meta_keys}})),
]
mosaic_dataset = dict(
    type='CocoCaptionPairDataset',
    data_root={{_base_.data_root}},
    metainfo={{_base_.metainfo}},
    ann_file='annotations/captions_caption_centric.json',
    data_prefix=dict(img='caption_centric/'),
    pipeline=mosaic_pipeline)
train_dataloader = dict(
    batch_size=sum(batch_split),
    sampler=dict(batch_size=sum(batch_split), source_ratio=batch_split, ungrouped_sources=[2]),
    dataset=dict(datasets=[{{_base_.det_dataset}}, {{_base_.caption_dataset}}, mosaic_dataset]))
