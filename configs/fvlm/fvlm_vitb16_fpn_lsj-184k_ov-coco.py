# F-VLM on a frozen CLIP ViT-B/16, OV-COCO (OV-RCNN's split): trained on the 48 base classes, the
# 17 novel classes held out; box AP50 of the novel classes is the main metric. Model, pipelines
# and schedule of the OV-LVIS base (8 GPUs x 8 images, 184,375 iterations of LSJ at 1024: about
# 110 epochs of the 107,761 base training images); children set the CLIP weights.
_base_ = './fvlm_vitb16_fpn_lsj-184k_ov-lvis.py'
# The split's class names (the import must follow _base_: mmengine reads a config that starts with
# an import as a new-style lazy-import config).
from mmclim.datasets.ov_splits import OV_COCO_CLASSES  # noqa: E402

data_root = 'data/coco/'
# The 65 OV-COCO classes (base and novel) in category-id order, the label order of the files of
# tools/dataset_converters/prepare_ov_coco.py, which also writes the split file.
metainfo = dict(classes=OV_COCO_CLASSES)
split_file = data_root + 'annotations/ov_coco_split.json'
#   python tools/generate_text_embeddings.py data/coco/annotations/instances_val2017_ov_all.json \
#       --model ViT-B-16-quickgelu --checkpoint checkpoints/clip/ViT-B-16.pt \
#       --templates ensemble --out data/coco/embeddings/ov_coco_ViT-B-16_ensemble.npy
text_embeddings = data_root + 'embeddings/ov_coco_ViT-B-16_ensemble.npy'

model = dict(
    roi_head=dict(
        # F-VLM's OV-LVIS fusion weights (base_alpha 0.35, novel_beta 0.65) are kept: not tuned
        # for OV-COCO here.
        bbox_head=dict(
            num_classes=len(OV_COCO_CLASSES),
            cls_predictor_cfg=dict(text_embeddings=text_embeddings, split_file=split_file)),
        mask_head=dict(num_classes=len(OV_COCO_CLASSES))),
    test_cfg=dict(rcnn=dict(max_per_img=100)))  # COCO's AP counts 100 detections per image

train_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='CocoDataset',
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_train2017_ov_base.json',  # base annotations only
        data_prefix=dict(img='train2017/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=32),
        pipeline={{_base_.train_pipeline}},
        backend_args={{_base_.backend_args}}))
val_dataloader = dict(
    dataset=dict(
        type='CocoDataset',
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_val2017_ov_all.json',  # base and novel annotations
        data_prefix=dict(img='val2017/')))
test_dataloader = val_dataloader
# Box AP50 of the base, novel and all classes in one COCO evaluation.
val_evaluator = dict(
    _delete_=True,
    type='OVCocoSplitMetric',
    ann_file=data_root + 'annotations/instances_val2017_ov_all.json',
    metric='bbox',
    split_file=split_file)  # names the novel classes
test_evaluator = val_evaluator
