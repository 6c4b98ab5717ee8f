# The class-agnostic RPN of CLIM's Table 5 RegionCLIP: "region proposals are detected by a region
# proposal network (RPN) trained on COCO's box annotations of base categories" (CLIM paper,
# Comparison with RegionCLIP). mmdet's RPN R50-FPN 1x recipe, on the OV-COCO base boxes of
# tools/dataset_converters/prepare_ov_coco.py (48 base classes; the 17 novel ones never boxed).
# Train it with tools/dist_train.sh, then give its checkpoint to the RegionCLIP configs' model.rpn.
_base_ = 'mmdet::rpn/rpn_r50_fpn_1x_coco.py'

train_dataloader = dict(dataset=dict(ann_file='annotations/instances_train2017_ov_base.json'))
# Recall of every object of COCO val2017, novel classes included (mmdet's default val set), by
# pycocotools: mmdet's 'proposal_fast' recall does not run under numpy 2.
val_evaluator = dict(metric='proposal')
test_evaluator = val_evaluator
