# CLIM fine-tuning of OpenAI's CLIP ViT-B/16 on CC3M, for the OV-LVIS detectors (paper: 3 epochs
# on CC3M). Official recipe: wusize/CLIM scripts/train_clim_cc3m_3e_openai_vitb16.sh, which
# differs from the COCO Captions script only in the data, the epochs and the evaluation and save
# frequencies below (docs/reproduction.md).
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
max_epochs = 3  # script: --epochs=3
train_cfg = dict(max_epochs=max_epochs, val_interval=1)  # script: --zeroshot-frequency 1
param_scheduler = [
    dict(type='WarmupCosineLR', warmup_iters=1000, by_epoch=True, begin=0, end=max_epochs,
         convert_to_iter_based=True)
]
default_hooks = dict(checkpoint=dict(interval=1))
