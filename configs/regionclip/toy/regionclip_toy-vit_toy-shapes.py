# RegionCLIP-style pre-training on the generated toy shapes, CPU-sized: the third arm of the toy
# comparison (tools/misc/regionclip_toy_seeds.sh). It is the toy CLIM config with RegionCLIP's
# model: the same starting CLIP (the image-level toy baseline of `make demo`), data, augmentation,
# batch, steps, optimiser, weight ensembling and region-classification evaluation, so only the
# objective differs. The model's numbers (temperatures, threshold, proposals drawn, loss weights)
# are RegionCLIP's, as its defaults and regionclip_vitb16_coco-caption.py state them with their
# sources; the proposals come from the toy RPN trained on the base boxes of the toy scenes.
_base_ = '../../clim/clim_toy-vit_toy-shapes.py'

model = dict(
    _delete_=True,
    type='RegionCLIP',
    clip={{_base_.model.clip}},  # the toy baseline, its last 2 of 4 blocks trained, as CLIM's
    # The teacher (None) is the student's starting CLIP, frozen. The concept pool: the nouns of
    # the toy captions (tools/dataset_converters/extract_concepts.py), embedded by the baseline's
    # text tower with RegionCLIP's templates.
    concept_pool='work_dirs/demo/embeddings/toy_concepts_nouns_embeddings.npy',
    rpn=dict(  # RegionCLIP's proposals: the model's default test_cfg
        config='configs/regionclip/toy/rpn_r18-fpn_toy-shapes-base.py',
        checkpoint='work_dirs/demo/rpn/iter_600.pth'),
    # RegionCLIP draws 100 proposals from each of 3 images per GPU, 300 regions a step; the toy
    # step has 64 one-shape images of 64 px: 5 each make 320.
    num_proposals=5,
    teacher_regions='crop',  # as CLIM's Table 5 RegionCLIP
    image_feature='global',  # as the ViT-B/16 config
    weight_ensemble={{_base_.model.weight_ensemble}},
    use_masks={{_base_.model.use_masks}},
    class_embeddings={{_base_.model.class_embeddings}},
    data_preprocessor={{_base_.model.data_preprocessor}})
