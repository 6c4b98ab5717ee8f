# The class-agnostic RPN of RegionCLIP's own pre-training: microsoft/RegionCLIP pretrain.sh reads
# the proposals of rpn_lvis_866.pth, "trained by 866 base categories" of LVIS v1 (docs/
# MODEL_ZOO.md), an R50-FPN (configs/LVISv1-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml:
# 1x, repeat-factor sampling 0.001). We train mmdet's RPN R50-FPN 1x alone on the OV-LVIS base
# boxes of tools/dataset_converters/prepare_ov_lvis.py (frequent + common, 866 classes), with the
# same repeat-factor sampling; the official one is the RPN of a Mask R-CNN (docs/reproduction.md).
_base_ = 'mmdet::rpn/rpn_r50_fpn_1x_coco.py'

data_root = 'data/lvis/'
train_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='ClassBalancedDataset',
        oversample_thr=1e-3,  # mask_rcnn_R_50_FPN_1x.yaml: REPEAT_THRESHOLD 0.001
        dataset=dict(
            type='LVISV1Dataset',
            data_root=data_root,
            ann_file='annotations/lvis_v1_train_ov_base.json',
            data_prefix=dict(img=''),
            filter_cfg=dict(filter_empty_gt=True, min_size=32),
            pipeline={{_base_.train_pipeline}})))
val_dataloader = dict(
    dataset=dict(
        type='LVISV1Dataset',
        data_root=data_root,
        ann_file='annotations/lvis_v1_val.json',
        data_prefix=dict(img='')))
test_dataloader = val_dataloader
# Recall of every object of LVIS val, rare (novel) classes included (the lvis API's; mmdet's
# 'proposal_fast' recall does not run under numpy 2).
val_evaluator = dict(
    _delete_=True,
    type='LVISMetric',
    ann_file=data_root + 'annotations/lvis_v1_val.json',
    metric='proposal')
test_evaluator = val_evaluator
