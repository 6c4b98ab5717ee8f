# Detic + CLIM on OV-COCO, caption loss only (CLIM paper, Table 2a "CLIM", 2b/2c "random",
# Table 2d row 3: 32.3 AP50 novel; official README: 32.3): detic_r50-caffe-c4_45k_ov-coco-caption.py
# with the 4 caption images per GPU split into 2 single images and 2 mosaics ("we split the 4
# images for caption supervision into 2 with mosaic and 2 without").
#
# Sources, cited as [C:n] (line n): wusize/CLIM ovdet/configs/detic/ov_coco/
# detic_no_tags_clim_faster_rcnn_r50_caffe_c4_45k.py; [M:n]: ovdet/configs/_base_/datasets/
# coco_ovd_detic_clim.py.
# Not run here: no COCO images, ImageNet or OpenAI weights, nor a GPU can be reached from the
# machines this project is built on; the configs are built and run (loss and predict) with a
# shrunk backbone by tests/test_models/test_detectors/test_detic.py.
_base_ = './detic_r50-caffe-c4_45k_ov-coco-caption.py'

batch_split = [2, 2, 2]  # det_batch, caption_batch, mosaic_batch per GPU [M:86]

model = dict(
    caption_branches=dict(
        caption_batch=dict(caption=True),
        # 4 composed multi-cell regions per mosaic (DeticCaptionWithComposition's default
        # num_groups [C:65]; the paper does not describe them).
        mosaic_batch=dict(caption=True, num_groups=4)))

backend_args = None
# The official MultiChoicesMosaic [M:36-56]: each image, flipped on its own, is fitted into a
# 400-px cell keeping its aspect ratio (neither cropped nor stretched) on a 114 padding, the
# pseudo box is the pasted image, a 2x2, 3x3 or 4x4 grid is drawn per mosaic, and the 800, 1200
# or 1600-px canvas is resized to 800. Difference: our images are centred in their cells (the
# official packs them toward the grid lines); partners are distinct cached images.
mosaic_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='RandomFlip', prob=0.5),  # per image, before the mosaic [M:40]
    dict(
        type='CachedMosaicPseudoRegion',
        grid_choices=[(2, 2), (3, 3), (4, 4)],  # choices [M:42]
        cell_size=400,  # img_scale [M:44]
        keep_ratio=True,
        crop_scale=(1.0, 1.0),
        pseudo_box='image',
        pad_val=114,  # [M:45]
        max_cached_images=1024),  # [M:43]
    dict(type='Resize', scale=(800, 800), keep_ratio=True),  # [M:47]
    dict(type='MultiBranch', branch_field={{_base_.branches}},
         mosaic_batch=dict(type='PackDetInputs', meta_keys={{_base_.caption_meta_keys}})),
]
mosaic_dataset = dict(
    type='CocoCaptionPairDataset',
    data_root={{_base_.data_root}},
    metainfo={{_base_.metainfo}},
    ann_file={{_base_.caption_ann_file}},
    data_prefix=dict(img='train2017/'),
    with_tags=True,
    pipeline=mosaic_pipeline)
train_dataloader = dict(
    batch_size=sum(batch_split),
    sampler=dict(batch_size=sum(batch_split), source_ratio=batch_split,
                 ungrouped_sources=[2]),  # the mosaics are square whatever their sources
    dataset=dict(datasets=[{{_base_.det_dataset}}, {{_base_.caption_dataset}}, mosaic_dataset]))
