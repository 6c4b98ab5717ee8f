# Toy Detic experiment, arm 3 "+ captions, as many images as CLIM": arm 2
# (detic_r18-fpn_toy-shapes-caption.py) with as many single caption images per iteration as the
# CLIM arm consumes: 4 singles + 4 mosaics x (4 + 9 + 16) / 3 images on average = 42.7, so 43
# (the control of the CLIM paper's Table 2a: a larger caption batch without mosaics).
_base_ = './detic_r18-fpn_toy-shapes-caption.py'

batch_split = [4, 43]
train_dataloader = dict(
    batch_size=sum(batch_split),
    sampler=dict(batch_size=sum(batch_split), source_ratio=batch_split))
