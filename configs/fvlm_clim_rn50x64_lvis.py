# F-VLM on CLIP RN50x64 fine-tuned by CLIM on CC3M (configs/clim/clim_rn50x64_cc3m.py, exported
# with tools/model_converters/clim_to_openclip.py), OV-LVIS. CLIM paper, Table 1b: 32.3 mAP_r mask
# (F-VLM reproduced on OpenAI's RN50x64: 30.1). Schedule of configs/fvlm_clim_vitb16_lvis.py.
_base_ = './fvlm_clim_vitb16_lvis.py'
model = dict(
    backbone=dict(
        model_name='RN50x64-quickgelu',
        pretrained='checkpoints/clip/RN50x64_clim_cc3m.pt',
        out_indices=(1, 2, 3, 4)),  # C2-C5, strides 4, 8, 16, 32
    # A ResNet has its own pyramid: a plain FPN on C2-C5 (RN50x64 width 128 -> 4x128 ... 32x128).
    neck=dict(
        _delete_=True, type='FPN', in_channels=[512, 1024, 2048, 4096], out_channels=256,
        num_outs=5),
    roi_head=dict(
        bbox_head=dict(
            cls_predictor_cfg=dict(
                # generate_text_embeddings.py ... --model RN50x64-quickgelu
                #     --checkpoint checkpoints/clip/RN50x64.pt (CLIM freezes the text tower)
                text_embeddings='data/lvis_v1/embeddings/lvis_v1_RN50x64_ensemble.npy'))))
