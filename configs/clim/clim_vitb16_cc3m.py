# CLIM fine-tuning of CLIP ViT-B/16 on CC3M, for OV-LVIS detectors (paper: 3 epochs on CC3M).
_base_ = './clim_vitb16_coco-caption.py'

train_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='CC3MCaptionDataset',
        data_root='data/cc3m/',
        ann_file='annotations/cc3m_train.json',  # {"images": [{"id", "file_name", "captions"}]}
        data_prefix=dict(img='train/'),
        on_bad_entry='skip',  # CC3M always has some dead links: counted and reported
        pipeline={{_base_.train_pipeline}}))
max_epochs = 3
train_cfg = dict(max_epochs=max_epochs, val_interval=1)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=500),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, eta_min=0.0),
]
default_hooks = dict(checkpoint=dict(interval=1))
