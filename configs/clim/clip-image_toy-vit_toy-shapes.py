# The image-level continuation CLIM is compared with: the same model, data, steps and optimiser as
# clim_toy-vit_toy-shapes.py, every image aligned with its caption by its global embedding.
_base_ = './clim_toy-vit_toy-shapes.py'

model = dict(mode='image')
