# CLIM fine-tuning of OpenAI's CLIP RN50x64 on CC3M (the backbone of the paper's best F-VLM).
_base_ = './clim_vitb16_cc3m.py'

image_size = 448  # RN50x64's native resolution
model = dict(
    clip=dict(
        model_name='RN50x64-quickgelu',
        pretrained='checkpoints/clip/RN50x64.pt',
        # open_clip can only lock a ModifiedResNet whole: the image tower trains entirely.
        unlocked_vision_blocks=None),
    class_embeddings='data/coco/embeddings/coco_instances_RN50x64_ensemble.npy')
train_dataloader = dict(
    dataset=dict(pipeline=[
        dict(type='LoadImageFromFile'),
        dict(type='Resize', scale=(image_size, image_size), keep_ratio=False),
        dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'captions')),
    ]))
