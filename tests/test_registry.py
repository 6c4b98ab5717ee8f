# Copyright (c) mmclim contributors. All rights reserved.
"""``import mmclim`` alone registers every component into mmdet's registries."""
import subprocess
import sys

EXPECTED = {
    'MODELS': [
        'CLIMCaptionLoss', 'OpenCLIPRegion', 'CLIMCLIP', 'CLIPViTPyramidBackbone',
        'SimplePyramidFPN', 'NormRPNHead', 'TextEmbeddingClassifier', 'FVLMBBoxHead',
        'FVLMRoIHead', 'FVLM', 'CLIPTextEncoder', 'DeticBBoxHead', 'DeticRoIHead',
        'DeticCascadeRoIHead', 'CenterNetRPNHead', 'DeticDetector', 'DeticCaptionLoss',
        'DeticTagLoss', 'DeticSigmoidClassLoss', 'MultiBranchDetDataPreprocessor', 'RegionCLIP',
        'RegionConceptLoss', 'ConceptDistillLoss'
    ],
    'DATASETS': ['CocoCaptionPairDataset', 'CC3MCaptionDataset', 'WebDatasetCaptions'],
    'DATA_SAMPLERS': ['ExactMultiSourceSampler'],
    'METRICS': ['RegionClassificationMetric', 'OVCocoSplitMetric', 'FastLVISMetric'],
    'TRANSFORMS': ['MosaicPseudoRegion', 'CachedMosaicPseudoRegion', 'CaptionPseudoBox'],
}


def test_import_registers_components() -> None:
    # A fresh interpreter, so nothing imported by other tests can register them instead.
    code = ('import mmclim, mmdet.registry as r\n'
            f'expected = {EXPECTED!r}\n'
            'missing = [(reg, name) for reg, names in expected.items() for name in names\n'
            '           if getattr(r, reg).get(name) is None]\n'
            'assert not missing, missing\n')
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
