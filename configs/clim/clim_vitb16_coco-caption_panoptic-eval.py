# CLIM ViT-B/16 (COCO Captions) evaluated on COCO panoptic val2017: zero-shot classification of
# every segment, things and stuff, by mask pooling (Table 5's thing/stuff columns). Training
# settings are those of the parent.
_base_ = './clim_vitb16_coco-caption.py'

canvas_size = 1024
model = dict(class_embeddings='data/coco/embeddings/coco_panoptic_ViT-B-16_ensemble.npy')
panoptic_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadPanopticRegions'),  # every segment; crowd segments ignored
    dict(type='Resize', scale=(canvas_size, canvas_size), keep_ratio=True),
    dict(type='Pad', size=(canvas_size, canvas_size), pad_val=dict(img=0)),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                                          'scale_factor')),
]
val_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='CocoPanopticDataset',
        data_root='data/coco/',
        ann_file='annotations/panoptic_val2017.json',
        data_prefix=dict(img='val2017/', seg='annotations/panoptic_val2017/'),
        test_mode=True,
        pipeline=panoptic_pipeline))
test_dataloader = val_dataloader
