# CLIM fine-tuning of OpenAI's CLIP RN50x64 on CC3M (the backbone of the paper's best F-VLM,
# Table 1b: 32.3 mAP_r). The official release has no RN50x64 training script: the numbers below
# come from its model code (src/open_clip/modified_resnet.py) and defaults (params.py); the rest
# of the recipe is the ViT-B/16 CC3M script's (docs/reproduction.md says which are ours).
_base_ = './clim_vitb16_cc3m.py'

image_size = 448  # RN50x64's native input
model = dict(
    clip=dict(
        model_name='RN50x64-quickgelu',
        pretrained='checkpoints/clip/RN50x64.pt',
        # modified_resnet.py: only layer4 is fine-tuned (stem to layer3 run under no_grad), with
        # the attention pool's query/key projections and positional embedding; its value and
        # output projections (freeze_output) and every BatchNorm (freeze_all_bns) stay frozen.
        unlocked_vision_blocks=1,
        freeze_projection=True,
        norm_eval=True),
    # tools/generate_text_embeddings.py ... --model RN50x64-quickgelu \
    #     --checkpoint checkpoints/clip/RN50x64.pt --templates vild
    class_embeddings='data/coco/embeddings/coco_panoptic_RN50x64_vild.npy')
train_pipeline = [
    {{_base_.load_image}},
    dict(type='RandomResizedCrop', size=image_size, scale=(0.9, 1.0), interpolation='bicubic'),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'captions')),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
# params.py get_default_params: a ResNet's Adam betas (0.9, 0.999) and eps 1e-8.
optim_wrapper = dict(optimizer=dict(betas=(0.9, 0.999), eps=1e-8))
