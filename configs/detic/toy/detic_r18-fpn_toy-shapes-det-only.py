# Toy Detic experiment, arm 1 "detection only": the stage-1 detector
# (faster-rcnn_r18-fpn_toy-shapes-base.py) trained on for the iterations of the caption arms with
# its base-class boxes alone. tools/misc/caption_toy_arms.sh sets load_from to the stage-1 result.
_base_ = './faster-rcnn_r18-fpn_toy-shapes-base.py'

# BatchNorm frozen from here on, with the statistics stage 1 learned, as the official recipes
# keep the backbone's (norm_eval, no gradient): the caption arms' images (single objects, mosaics
# on a grey padding) would otherwise pull the statistics away from the scenes the detector is
# evaluated on.
model = dict(backbone=dict(norm_cfg=dict(type='BN', requires_grad=False), norm_eval=True))

max_iters = 300  # every arm
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=20),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=max_iters, milestones=[250]),
]
default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters, max_keep_ckpts=1))
load_from = 'work_dirs/detic_toy/base/iter_600.pth'  # the stage-1 run of caption_toy_arms.sh
