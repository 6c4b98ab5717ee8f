# clim_rn50x64_cc3m.py reading CC3M as WebDataset tar shards, as clim_vitb16_cc3m-wds.py does for
# ViT-B/16 (the same dataset fields; the pipeline is RN50x64's). The recipe is unchanged.
_base_ = './clim_rn50x64_cc3m.py'

num_workers = {{_base_.train_dataloader.num_workers}}  # the shard split depends on it
train_dataloader = dict(
    sampler=None,  # an IterableDataset: it shuffles and splits the shards itself
    dataset=dict(
        _delete_=True,
        type='WebDatasetCaptions',
        data_root='data/cc3m/',
        shards='train_wds/{00000..00331}.tar',  # 332 shards of 10000 (img2dataset's default)
        index_file='train_wds/index.json',  # per-shard sample counts: the epoch length
        num_workers=num_workers,
        on_bad_entry='skip',  # CC3M always has some undecodable images: counted and reported
        pipeline={{_base_.train_pipeline}}))
