# Detic + CLIM on OV-LVIS: detic_centernet2_r50-fpn_45k_ov-lvis-cc3m.py with the 32 CC3M images per
# GPU split into 16 single images and 16 mosaics, 2 composed regions per mosaic (CLIM paper,
# Table 1b "Detic + CLIM": 21.8 mask mAP_r; official README: 21.8).
#
# Sources, cited as [M:n] (line n): wusize/CLIM ovdet/configs/detic/ov_lvis/
# detic_clim_centernet2_r50_fpn_4x_lvis-base_cc3m-lvis.py.
# Not run here: no LVIS or CC3M images, ImageNet-21k or OpenAI weights, nor a GPU can be
# reached from the machines this project is built on; the configs are built and run (loss and
# predict) with a shrunk backbone by tests/test_models/test_detectors/test_detic.py.
_base_ = './detic_centernet2_r50-fpn_45k_ov-lvis-cc3m.py'

batch_split = [8, 16, 16]  # det_batch, cap_batch, clim_batch per GPU [M:129]

model = dict(
    caption_branches=dict(  # batch2ovd [M:203-204]; num_groups=2 [M:208, M:215]
        cap_batch=dict(caption=True, tags=True),
        clim_batch=dict(caption=True, tags=True, num_groups=2)))

backend_args = None
# [M:67-97]: each CC3M image randomly resized around 320 and cropped to at most 320x320, flipped,
# fitted into a 320-px cell keeping its aspect ratio on a 114 padding (the pseudo box is the
# pasted crop), a 2x2, 3x3 or 4x4 grid per mosaic, the 640, 960 or 1280-px canvas resized to 640.
# Difference: our images are centred in their cells (the official packs them toward the grid
# lines); partners are distinct cached images.
mosaic_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='RandomResize', scale={{_base_.image_size_cap}}, ratio_range=(0.5, 1.5),
         keep_ratio=True),
    dict(type='RandomCrop', crop_type='absolute_range', crop_size={{_base_.image_size_cap}},
         allow_negative_crop=True),
    dict(type='RandomFlip', prob=0.5),
    dict(
        type='CachedMosaicPseudoRegion',
        grid_choices=[(2, 2), (3, 3), (4, 4)],  # [M:83]
        cell_size=320,  # img_scale [M:85]
        keep_ratio=True,
        crop_scale=(1.0, 1.0),
        pseudo_box='image',
        pad_val=114,  # [M:86]
        max_cached_images=1024),  # [M:84]
    dict(type='Resize', scale={{_base_.image_size_det}}, keep_ratio=True),  # [M:88]
    dict(type='MultiBranch', branch_field={{_base_.branches}},
         clim_batch=dict(type='PackDetInputs', meta_keys={{_base_.caption_meta_keys}})),
]
mosaic_dataset = dict(  # [M:121-127]
    type='CC3MCaptionDataset',
    data_root={{_base_.caption_root}},
    metainfo={{_base_.metainfo}},
    ann_file={{_base_.caption_ann_file}},
    data_prefix=dict(img='images/'),
    with_tags=True,
    pipeline=mosaic_pipeline)
train_dataloader = dict(
    batch_size=sum(batch_split),
    sampler=dict(batch_size=sum(batch_split), source_ratio=batch_split,
                 ungrouped_sources=[2]),  # the mosaics are square whatever their sources
    dataset=dict(datasets=[{{_base_.det_dataset}}, {{_base_.caption_dataset}}, mosaic_dataset]))
