# clim_vitb16_cc3m.py reading CC3M as WebDataset tar shards (img2dataset's output, or
# tools/dataset_converters/captions_to_webdataset.py) instead of a json and an image folder. The
# recipe (model, pipeline, optimiser, schedule, 3 epochs) is unchanged; each rank's epoch is
# len(dataset) samples, every dataloader worker reading its own shards (WebDatasetCaptions).
_base_ = './clim_vitb16_cc3m.py'

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
