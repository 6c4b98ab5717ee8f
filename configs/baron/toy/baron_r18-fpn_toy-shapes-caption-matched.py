# Toy BARON experiment, arm 3 "+ captions, as many images as CLIM": arm 2
# (baron_r18-fpn_toy-shapes-caption.py) with as many single caption images per iteration as the
# CLIM arm consumes: 2 singles + 2 mosaics x (4 + 9 + 16) / 3 images on average = 21.3, so 21
# (the control of the CLIM paper's Table 2a: a larger caption batch without mosaics).
_base_ = './baron_r18-fpn_toy-shapes-caption.py'

batch_split = [4, 21]
train_dataloader = dict(
    batch_size=sum(batch_split),
    sampler=dict(batch_size=sum(batch_split), source_ratio=batch_split))
