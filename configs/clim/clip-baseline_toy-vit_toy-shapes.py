# The toy CLIP baseline, trained from scratch image-level on the toy captions (both towers): the
# starting point of the image-level and CLIM continuations.
_base_ = './clim_toy-vit_toy-shapes.py'

model = dict(
    mode='image',
    clip=dict(pretrained=None, unlocked_vision_blocks=None, freeze_text=False),
    weight_ensemble=None,  # trained from scratch: there are no original weights to mix in
    class_embeddings=None)  # its own text tower makes them, after training
# Evaluated after training, once class embeddings exist (tools/demo.sh).
val_dataloader = None
val_cfg = None
val_evaluator = None
custom_hooks = []
max_iters = 500  # 16 epochs of the 2000 images; with the continuations a demo under 10 min
train_cfg = dict(max_iters=max_iters, val_interval=max_iters + 1)
optim_wrapper = dict(optimizer=dict(lr=1e-3))
param_scheduler = [
    dict(type='WarmupCosineLR', warmup_iters=50, by_epoch=False, begin=0, end=max_iters)
]
default_hooks = dict(checkpoint=dict(interval=max_iters))
