# RegionCLIP pre-training of OpenAI's CLIP RN50 on CC3M: RegionCLIP's own recipe (Zhong et al.,
# CVPR 2022; the released RN50 checkpoint was pre-trained on CC3M, docs/MODEL_ZOO.md). "RC:" is
# microsoft/RegionCLIP: configs/pretrain/RegionCLIP_RN50.yaml (its _BASE_ Base-RCNN-C4.yaml and
# detectron2 defaults) and pretrain.sh; "paper" is the RegionCLIP paper. The model, proposals and
# losses are those of regionclip_vitb16_coco-caption.py (inherited), the evaluation is the same
# Table 5 region classification as CLIM's. docs/reproduction.md lists where this differs.
_base_ = './regionclip_vitb16_coco-caption.py'

batch_size = 3  # per GPU; RC: IMS_PER_BATCH 96 "# 32 gpus"
model = dict(
    clip=dict(
        _delete_=True,
        type='OpenCLIPRegion',
        model_name='RN50-quickgelu',  # OpenAI's RN50 (QuickGELU text tower)
        pretrained='checkpoints/clip/RN50.pt',  # RC: both student and teacher from OpenAI CLIP
        # RC: FREEZE_AT 2 (stem and res2 frozen): layer2 to layer4 and the whole attention pool
        # train; every BatchNorm frozen (FrozenBN); the text tower frozen
        unlocked_vision_blocks=3,
        freeze_projection=False,
        norm_eval=True,
        freeze_text=True),
    # RC: the teacher pools RoIs on its own map of the full image; it crops nothing
    teacher_regions='roi',
    image_feature='region',  # RC: the image-caption loss on the whole-image RoI
    # paper: "object concepts whose frequency are lower than 100 are discarded, leading to
    # 4764/6790 concepts on COCO Cap/CC3M" (pretrain.sh itself reads the COCO pool):
    # tools/dataset_converters/extract_concepts.py data/cc3m/annotations/cc3m_train.json \
    #     --format cc3m --out data/cc3m/concepts/cc3m_nouns.txt
    # tools/generate_text_embeddings.py data/cc3m/concepts/cc3m_nouns.txt --model RN50-quickgelu \
    #     --checkpoint checkpoints/clip/RN50.pt --templates regionclip \
    #     --out data/cc3m/concepts/cc3m_nouns_RN50.npy
    concept_pool='data/cc3m/concepts/cc3m_nouns_RN50.npy',
    rpn=dict(  # RC: rpn_lvis_866.pth, an R50-FPN trained on the 866 LVIS base classes
        config='configs/regionclip/rpn_r50-fpn_1x_ov-lvis-base.py',
        checkpoint='checkpoints/rpn/rpn_r50-fpn_1x_ov-lvis-base.pth'),
    # RC trains without weight ensembling
    weight_ensemble=None,
    # tools/generate_text_embeddings.py data/coco/annotations/panoptic_val2017.json \
    #     --model RN50-quickgelu --checkpoint checkpoints/clip/RN50.pt --templates vild \
    #     --out data/coco/embeddings/coco_panoptic_RN50_vild.npy
    class_embeddings='data/coco/embeddings/coco_panoptic_RN50_vild.npy',
    # RC: the RPN pads to multiples of 32 (size_divisibility of its FPN)
    data_preprocessor=dict(pad_size_divisor=32))

# RC: AUG.TRAIN.IMAGE_SIZE [800], MAX_SIZE 1333, INTERPOLATION 3 (bicubic), then a horizontal flip
train_pipeline = [
    {{_base_.load_image}},
    dict(type='Resize', scale=(1333, 800), keep_ratio=True, interpolation='bicubic',
         backend='pillow'),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'img_shape', 'captions')),
]
train_dataloader = dict(
    batch_size=batch_size,
    dataset=dict(
        _delete_=True,
        type='CC3MCaptionDataset',
        data_root='data/cc3m/',
        ann_file='annotations/cc3m_train.json',  # {"images": [{"id", "file_name", "captions"}]}
        data_prefix=dict(img='train/'),
        on_bad_entry='skip',  # CC3M always has some dead links: counted and reported
        pipeline=train_pipeline))

max_iters = 600000  # RC: MAX_ITER 600000
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters,
                 val_interval=50000)
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    # RC: SGD, BASE_LR 0.002, MOMENTUM 0.9, WEIGHT_DECAY 1e-4 (WEIGHT_DECAY_NORM 0)
    optimizer=dict(type='SGD', lr=0.002, momentum=0.9, weight_decay=1e-4),
    paramwise_cfg=dict(norm_decay_mult=0.0),
    # RC: CLIP_GRADIENTS norm 5.0 (detectron2 clips each parameter's norm; mmengine the total)
    clip_grad=dict(max_norm=5.0, norm_type=2))
param_scheduler = [  # RC: linear warm-up over 1000 iterations from 1/1000, x0.1 at 300k and 525k
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=max_iters,
         milestones=[300000, 525000], gamma=0.1),
]
auto_scale_lr = dict(enable=False, base_batch_size=96)
custom_hooks = []  # no weight ensemble to evaluate
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=50000))
log_processor = dict(by_epoch=False)
