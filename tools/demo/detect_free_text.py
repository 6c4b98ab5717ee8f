# Copyright (c) mmclim contributors. All rights reserved.
"""Detect the objects a free-text vocabulary names, with an open-vocabulary detector (F-VLM).

The class names given on the command line are embedded with the detector's own CLIP text tower
and the prompt templates its classifier was trained with (:func:`mmclim.apis.embed_vocabulary`)
and swapped into it (:func:`mmclim.apis.set_vocabulary`), the ``--novel`` ones scored as F-VLM
scores novel classes. Each image gives, under ``--out-dir``, ``vis/<stem>.png`` (the boxes of at
least ``--score-thr``, drawn by mmdet's ``DetLocalVisualizer``, novel names marked) and
``preds/<stem>.json`` (every detection: ``bbox`` x1, y1, x2, y2 in image pixels, ``score``,
``label``, ``label_name`` and ``novel``), as mmdet's ``demo/image_demo.py`` lays them out.

Examples::

    python tools/demo/detect_free_text.py configs/fvlm/fvlm_toy-vit_toy-shapes.py \\
        work_dirs/fvlm_toy/clim/seed0/train/iter_200.pth data/toy_shapes/val/000000.png \\
        --texts "red circle" "green triangle" --novel "green triangle" --out-dir outputs

    # a folder of images, the vocabulary from a file (one name per line)
    python tools/demo/detect_free_text.py CONFIG CHECKPOINT images/ --texts-file vocab.txt
"""
import argparse
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import mmcv
from mmdet.apis import inference_detector, init_detector
from mmdet.apis.det_inferencer import IMG_EXTENSIONS
from mmdet.structures import DetDataSample
from mmdet.visualization import DetLocalVisualizer
from mmengine.config import Config, DictAction

from mmclim.apis import embed_vocabulary, set_vocabulary
from mmclim.evaluation.metrics import (PROMPT_SETS, clean_class_name, get_prompt_set,
                                       load_class_names)
from mmclim.structures import read_embedding_sidecar

# The sidecar key naming the prompt set of the config's class embeddings, as
# tools/generate_text_embeddings.py writes it.
TEMPLATE_SET_KEY = 'template_set'
# Without a sidecar naming one: the prompts of the shipped F-VLM configs' class embeddings
# (ViLD's 63, as the official files).
DEFAULT_TEMPLATE_SET = 'vild'
DEFAULT_SCORE_THR = 0.3  # mmdet's demo/image_demo.py --pred-score-thr
DEFAULT_OUT_DIR = 'outputs'
VIS_DIR = 'vis'
PREDS_DIR = 'preds'
VIS_SUFFIX = '.png'
PREDS_SUFFIX = '.json'
NOVEL_MARK = ' (novel)'  # after a novel class name in the drawn labels
VISUALIZER_NAME = 'detect_free_text'


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """The arguments, checked before any model is built; ``names`` and ``images`` are added.

    Args:
        argv (List[str], optional): The arguments; None reads ``sys.argv``. Defaults to None.

    Returns:
        argparse.Namespace: The arguments (a bad one exits, naming its option).
    """
    parser = argparse.ArgumentParser(
        description='Open-vocabulary detection of free-text class names (F-VLM)')
    parser.add_argument('config', help='detector config file')
    parser.add_argument('checkpoint', help='detector checkpoint file')
    parser.add_argument('inputs', nargs='+', help='image files or folders of images')
    vocabulary = parser.add_mutually_exclusive_group(required=True)
    vocabulary.add_argument('--texts', nargs='+', help='class names, e.g. "red circle" zebra')
    vocabulary.add_argument('--texts-file', help='.txt file with one class name per line')
    parser.add_argument('--novel', nargs='+', default=[],
                        help='names among the vocabulary to score as novel classes')
    parser.add_argument(
        '--templates', choices=sorted(PROMPT_SETS),
        help='prompt-template set; default: the one of the config\'s class embeddings (their '
        f'sidecar), else {DEFAULT_TEMPLATE_SET}')
    parser.add_argument('--out-dir', default=DEFAULT_OUT_DIR,
                        help=f'output folder ({VIS_DIR}/ and {PREDS_DIR}/)')
    parser.add_argument('--score-thr', type=float, default=DEFAULT_SCORE_THR,
                        help='score threshold of the drawn boxes (the json has them all)')
    parser.add_argument('--device', default='cpu', help='torch device, e.g. cpu or cuda:0')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    args = parser.parse_args(argv)
    args.names = vocabulary_names(parser, args)
    args.novel = [clean_class_name(name) for name in args.novel]
    unknown = [name for name in args.novel if name not in args.names]
    if unknown:
        parser.error(f'--novel: {unknown} are not in the vocabulary {args.names}')
    if not 0 <= args.score_thr <= 1:
        parser.error(f'--score-thr: expected a score in [0, 1], got {args.score_thr}')
    try:
        args.images = list_images(args.inputs)
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))
    return args


def vocabulary_names(parser: argparse.ArgumentParser, args: argparse.Namespace) -> List[str]:
    """The class names of ``--texts`` or ``--texts-file``, cleaned, distinct and non-empty."""
    if args.texts_file is not None:
        try:
            return load_class_names(args.texts_file)
        except (FileNotFoundError, ValueError) as err:
            parser.error(f'--texts-file: {err}')
    names = [clean_class_name(name) for name in args.texts]
    for index, name in enumerate(names):
        if not name:
            parser.error(f'--texts: name {index} is empty; expected class names')
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        parser.error(f'--texts: {repeated} given more than once')
    return names


def list_images(inputs: Sequence[str]) -> List[Path]:
    """The image files given and those of the folders given (sorted, not recursive).

    Args:
        inputs (Sequence[str]): Image files or folders.

    Returns:
        List[Path]: The images, with distinct file stems (their outputs' names).
    """
    images = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMG_EXTENSIONS)
            if not found:
                raise ValueError(f'inputs: the folder {item} holds no image ({IMG_EXTENSIONS})')
            images.extend(found)
        elif path.is_file():
            images.append(path)
        else:
            raise FileNotFoundError(f'inputs: {item} is not an image file nor a folder')
    stems = [image.stem for image in images]
    repeated = sorted({stem for stem in stems if stems.count(stem) > 1})
    if repeated:
        raise ValueError(f'inputs: several images are named {repeated} (outputs are named by '
                         'the image name)')
    return images


def training_template_set(cfg: Config) -> str:
    """The prompt set of the class embeddings the detector was configured with.

    Args:
        cfg (Config): The detector config (``model.roi_head.bbox_head.class_embeddings``).

    Returns:
        str: The set their sidecar names, else :data:`DEFAULT_TEMPLATE_SET`.
    """
    sidecar = read_embedding_sidecar(cfg.model.roi_head.bbox_head.class_embeddings) or {}
    template_set = sidecar.get(TEMPLATE_SET_KEY)
    return template_set if template_set in PROMPT_SETS else DEFAULT_TEMPLATE_SET


def detections(result: DetDataSample, names: Sequence[str],
               novel: Sequence[bool]) -> List[Dict[str, Any]]:
    """The json records of a result's detections.

    Args:
        result (DetDataSample): A result of ``inference_detector``.
        names (Sequence[str]): The C class names.
        novel (Sequence[bool]): Whether each class is novel, C flags.

    Returns:
        List[dict]: One record per detection, in the model's order.
    """
    pred = result.pred_instances
    return [dict(bbox=bbox, score=score, label=label, label_name=names[label],
                 novel=novel[label])
            for bbox, score, label in zip(pred.bboxes.tolist(), pred.scores.tolist(),
                                          pred.labels.tolist())]


def main(argv: Optional[List[str]] = None) -> None:
    """Detect the vocabulary in the images and write the drawings and the json files.

    Args:
        argv (List[str], optional): The arguments; None reads ``sys.argv``. Defaults to None.
    """
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    model = init_detector(cfg, args.checkpoint, device=args.device)
    template_set = args.templates or training_template_set(cfg)
    set_vocabulary(model, args.names,
                   embed_vocabulary(model, args.names, get_prompt_set(template_set)), args.novel)
    novel = model.roi_head.classifier.novel_mask.tolist()

    visualizer = DetLocalVisualizer.get_instance(VISUALIZER_NAME)
    visualizer.dataset_meta = dict(classes=[
        name + (NOVEL_MARK if is_novel else '') for name, is_novel in zip(args.names, novel)])
    out_dir = Path(args.out_dir)
    for folder in (VIS_DIR, PREDS_DIR):
        (out_dir / folder).mkdir(parents=True, exist_ok=True)
    for image in args.images:
        result = inference_detector(model, str(image))
        vis_file = out_dir / VIS_DIR / (image.stem + VIS_SUFFIX)
        visualizer.add_datasample(image.stem, mmcv.imread(str(image), channel_order='rgb'),
                                  result, draw_gt=False, pred_score_thr=args.score_thr,
                                  out_file=str(vis_file))
        record = dict(image=str(image), classes=args.names, novel_classes=args.novel,
                      templates=template_set, detections=detections(result, args.names, novel))
        preds_file = out_dir / PREDS_DIR / (image.stem + PREDS_SUFFIX)
        preds_file.write_text(json.dumps(record, indent=1))
    print(f'{len(args.images)} images, {len(args.names)} classes ({len(args.novel)} novel, '
          f'{template_set!r} prompts) -> {out_dir}/{VIS_DIR}, {out_dir}/{PREDS_DIR}')


if __name__ == '__main__':
    main()
