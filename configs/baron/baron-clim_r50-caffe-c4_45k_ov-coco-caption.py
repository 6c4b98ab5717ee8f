# BARON + CLIM on OV-COCO (CLIM paper, Table 1a "BARON* + CLIM": 36.9 AP50 novel, +2.1):
# baron_r50-caffe-c4_45k_ov-coco-caption.py with part of the caption images tiled into mosaics.
# "When applying CLIM, we sample region proposals inside a pseudo region (sub-image), and use the
# bag-of-regions embedding to represent the pseudo region, which is aligned to the corresponding
# caption embedding using the contrastive loss employed in BARON" (paper, "OVD with BARON"):
# BaronDetector samples each bag inside its mosaic cell (bag_sampling.inside_thr), the cell is
# the bag's frame and joins the bag, and the bag is aligned with that cell's caption.
#
# No code or config of BARON + CLIM was published; these choices are ours, each the Detic + CLIM
# recipe of the official CLIM code carried over (../detic/detic-clim_r50-caffe-c4_45k_ov-coco-
# caption.py, whose sources [M:n] = wusize/CLIM ovdet/configs/_base_/datasets/
# coco_ovd_detic_clim.py are cited there):
# - the batch split: BARON's 2 caption images per GPU [baron_caption's data base, line 50]
#   split into 1 single image and 1 mosaic, as Detic + CLIM splits its 4 into 2 and 2;
# - the mosaic: Detic + CLIM's (2x2, 3x3 or 4x4 grids of 400-px cells, canvas resized to 800);
# - the bags: BARON's sampling per pseudo region (at most 10 proposals and the pseudo box), the
#   top-128 proposals taken among those inside the region.
# Not run here: no COCO images, ImageNet or OpenAI weights, nor a GPU can be reached from the
# machines this project is built on; the configs are built and run (loss and predict) with a
# shrunk backbone by tests/test_models/test_detectors/test_baron.py.
_base_ = './baron_r50-caffe-c4_45k_ov-coco-caption.py'

batch_split = [2, 1, 1]  # det_batch, caption_batch, mosaic_batch per GPU (ours, see above)

model = dict(
    caption_branches=dict(caption_batch=dict(caption=True), mosaic_batch=dict(caption=True)))

backend_args = None
mosaic_pipeline = [  # Detic + CLIM's [M:36-56]
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='RandomFlip', prob=0.5),
    dict(
        type='CachedMosaicPseudoRegion',
        grid_choices=[(2, 2), (3, 3), (4, 4)],
        cell_size=400,
        keep_ratio=True,
        crop_scale=(1.0, 1.0),
        pseudo_box='image',
        pad_val=114,
        max_cached_images=1024,
        all_captions=True),  # each cell's image's captions (see the parent)
    dict(type='Resize', scale=(800, 800), keep_ratio=True),
    dict(type='MultiBranch', branch_field={{_base_.branches}},
         mosaic_batch=dict(type='PackDetInputs', meta_keys={{_base_.caption_meta_keys}})),
]
mosaic_dataset = dict(
    type='CocoCaptionPairDataset',
    data_root={{_base_.data_root}},
    metainfo={{_base_.metainfo}},
    ann_file={{_base_.caption_ann_file}},
    data_prefix=dict(img='train2017/'),
    pipeline=mosaic_pipeline)
train_dataloader = dict(
    batch_size=sum(batch_split),
    num_workers=sum(batch_split),
    sampler=dict(batch_size=sum(batch_split), source_ratio=batch_split,
                 ungrouped_sources=[2]),  # the mosaics are square whatever their sources
    dataset=dict(datasets=[{{_base_.det_dataset}}, {{_base_.caption_dataset}}, mosaic_dataset]))
