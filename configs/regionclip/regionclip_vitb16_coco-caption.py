# RegionCLIP pre-training of OpenAI's CLIP ViT-B/16 on COCO Captions: CLIM's Table 5 row 2
# (region classification Top-1 62.8, Top-5 84.7, against CLIM's 62.2 / 84.3), "implemented using
# ViT-B-16 and COCO Caption ... region proposals detected by an RPN trained on COCO's box
# annotations of base categories, cropped and sent to CLIP's image encoder ... input image
# resolution 1024x1024" (CLIM paper, Comparison with RegionCLIP). It is the CLIM COCO config with
# RegionCLIP's model: the same CLIP wrapper, trainable blocks, optimiser, weight ensembling and
# the same Table 5 evaluation (inherited, unchanged), so the two are compared like for like.
# The objective is RegionCLIP's (microsoft/RegionCLIP, "RC:" below, configs/pretrain/
# RegionCLIP_RN50.yaml and detectron2/modeling/meta_arch/clip_rcnn.py). CLIM's release has no
# RegionCLIP script; the batch, epochs and input follow its authors' RegionCLIP run in CLIPSelf
# ("CS:", wusize/CLIPSelf scripts/train_regionclip_coco_eva_vitb16.sh). docs/reproduction.md
# lists each number and where this differs from both.
_base_ = '../clim/clim_vitb16_coco-caption.py'

image_size = 1024  # CLIM: 1024x1024 inputs; CS: --det-image-size 1024
batch_size = 2  # per GPU; CS: --batch-size=2 with torchrun --nproc_per_node 8 (16 in all)
model = dict(
    _delete_=True,
    type='RegionCLIP',
    clip={{_base_.model.clip}},  # CLIM's: the last 6 blocks train, text tower frozen (as RC's)
    # The teacher (None) is the student's CLIP, frozen (RC: both start from the same weights).
    # tools/dataset_converters/extract_concepts.py data/coco/annotations/captions_train2017.json \
    #     --out data/coco/concepts/coco_nouns.txt     (RC paper: 4764 nouns seen >= 100 times)
    # tools/generate_text_embeddings.py data/coco/concepts/coco_nouns.txt \
    #     --model ViT-B-16-quickgelu --checkpoint checkpoints/clip/ViT-B-16.pt \
    #     --templates regionclip --out data/coco/concepts/coco_nouns_ViT-B-16.npy
    concept_pool='data/coco/concepts/coco_nouns_ViT-B-16.npy',
    rpn=dict(
        config='configs/regionclip/rpn_r50-fpn_1x_ov-coco-base.py',
        checkpoint='checkpoints/rpn/rpn_r50-fpn_1x_ov-coco-base.pth',
        # RC: PRE_NMS_TOPK_TEST 1000 per level, OFFLINE_RPN_NMS_THRESH 0.5,
        # PRETRAIN_RPN_REGIONS 300, MIN_SIZE 0; no score threshold
        test_cfg=dict(nms_pre=1000, max_per_img=300, nms=dict(type='nms', iou_threshold=0.5),
                      min_bbox_size=0)),
    num_proposals=100,  # RC: PRETRAIN_SAMPLE_REGIONS 100, drawn at random from the 300
    teacher_regions='crop',  # CLIM: proposals "cropped and sent to CLIP's image encoder"
    teacher_temperature=0.01,  # RC: get_psuedo_concept_labels s_temp=0.01
    concept_threshold=0.1,  # RC: CONCEPT_THRES 0.1
    # RC aligns its ResNet's whole-image RoI (its attention pool over the whole map) with the
    # caption; a ViT's own image embedding is its class token: the batch resized to 224
    image_feature='global',
    # RC: CLSS_TEMP 0.01 for all three losses, summed with weight 1 (train_loop.py)
    loss_concept=dict(type='RegionConceptLoss', temperature=0.01, gather=False, loss_weight=1.0),
    loss_distill=dict(type='ConceptDistillLoss', temperature=0.01, loss_weight=1.0),
    loss_caption=dict(type='CLIMCaptionLoss', logit_scale=100.0, gather=True,  # GATHER_GPUS
                      loss_weight=1.0),
    weight_ensemble={{_base_.model.weight_ensemble}},
    use_masks={{_base_.model.use_masks}},
    class_embeddings={{_base_.model.class_embeddings}},
    data_preprocessor={{_base_.model.data_preprocessor}})

# CS: the detection transform of its region_clip data (det_image_transform): the longer side
# resized to 1024 (bicubic), zero-padded to 1024x1024, no flip: the Table 5 evaluation's.
train_pipeline = [
    {{_base_.load_image}},
    dict(type='Resize', scale=(image_size, image_size), keep_ratio=True,
         interpolation='bicubic', backend='pillow'),
    dict(type='Pad', size=(image_size, image_size), pad_val=dict(img=0)),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'img_shape', 'captions')),
]
train_dataloader = dict(batch_size=batch_size, dataset=dict(pipeline=train_pipeline))
max_epochs = 6  # CS: --epochs=6
train_cfg = dict(max_epochs=max_epochs, val_interval=1)  # CS: --zeroshot-frequency 1
param_scheduler = [  # CS: --warmup 1000, then open_clip's per-step cosine
    dict(type='WarmupCosineLR', warmup_iters=1000, by_epoch=True, begin=0, end=max_epochs,
         convert_to_iter_based=True)
]
auto_scale_lr = dict(enable=False, base_batch_size=16)
default_hooks = dict(checkpoint=dict(interval=1))
