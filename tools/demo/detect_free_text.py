# Copyright (c) mmclim contributors. All rights reserved.
"""Detect the objects a free-text vocabulary names, with an open-vocabulary detector (F-VLM,
Detic or BARON).

The class names given on the command line are embedded as the detector's class embeddings were
(:func:`mmclim.apis.embed_vocabulary`): with its own CLIP text tower (F-VLM's backbone CLIP, a
Detic's or BARON's ``text_encoder``) or, for a Detic built without one, the CLIP of
``--text-model``; with the prompt templates and the text output (``'projection'`` or BARON's
``'last_block'``) that the sidecar of the config's class embeddings records. They are swapped
into every classifier of the detector (:func:`mmclim.apis.set_vocabulary`), the ``--novel`` ones
marked novel as the heads mark them (F-VLM's novel score fusion; Detic and BARON score all
classes alike). Each image gives, under ``--out-dir``, ``vis/<stem>.png`` (the boxes of at
least ``--score-thr``, drawn by mmdet's ``DetLocalVisualizer``, novel names marked) and
``preds/<stem>.json`` (the vocabulary, prompt set and text output, and every detection:
``bbox`` x1, y1, x2, y2 in image pixels, ``score``, ``label``, ``label_name`` and ``novel``), as
mmdet's ``demo/image_demo.py`` lays them out.

Examples::

    python tools/demo/detect_free_text.py configs/fvlm/fvlm_toy-vit_toy-shapes.py \\
        work_dirs/fvlm_toy/clim/seed0/train/iter_200.pth data/toy_shapes/val/000000.png \\
        --texts "red circle" "green triangle" --novel "green triangle" --out-dir outputs

    # a folder of images, the vocabulary from a file (one name per line)
    python tools/demo/detect_free_text.py CONFIG CHECKPOINT images/ --texts-file vocab.txt

    # a Detic without caption branches (no text tower): the CLIP of its class embeddings
    python tools/demo/detect_free_text.py \\
        configs/detic/toy/faster-rcnn_r18-fpn_toy-shapes-base.py \\
        work_dirs/detic_toy/base/iter_600.pth images/ --texts "red circle" zebra \\
        --text-model mmclim-toy-vit:work_dirs/demo/baseline/clip_openclip.pt
"""
import argparse
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import mmcv
from mmdet.apis import inference_detector, init_detector
from mmdet.apis.det_inferencer import IMG_EXTENSIONS
from mmdet.structures import DetDataSample
from mmdet.visualization import DetLocalVisualizer
from mmengine.config import Config, DictAction

from mmclim.apis import embed_vocabulary, resolve_text_tower, set_vocabulary
from mmclim.evaluation.metrics import (PROMPT_SETS, clean_class_name, get_prompt_set,
                                       load_class_names)
from mmclim.models.backbones import OpenCLIPRegion
from mmclim.structures import read_embedding_sidecar
from mmclim.structures.vocabulary import (DEFAULT_TEXT_OUTPUT, EMBEDDING_MODEL_KEY,
                                          EMBEDDING_TEXT_OUTPUT_KEY)

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
TEXT_MODEL_SEPARATOR = ':'  # --text-model MODEL_NAME:FILE


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """The arguments, checked before any model is built; ``names`` and ``images`` are added.

    Args:
        argv (List[str], optional): The arguments; None reads ``sys.argv``. Defaults to None.

    Returns:
        argparse.Namespace: The arguments (a bad one exits, naming its option).
    """
    parser = argparse.ArgumentParser(
        description='Open-vocabulary detection of free-text class names (F-VLM, Detic, BARON)')
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
    parser.add_argument(
        '--text-model', metavar='MODEL_NAME:FILE',
        help='for a detector without text tower (a Detic without caption branches): the CLIP '
        'whose text tower made its class embeddings, an open_clip config name and a local '
        'checkpoint')
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
    if args.text_model is not None:
        model_name, _, checkpoint = args.text_model.partition(TEXT_MODEL_SEPARATOR)
        if not (model_name and checkpoint):
            parser.error(f'--text-model: expected MODEL_NAME{TEXT_MODEL_SEPARATOR}FILE, got '
                         f'{args.text_model!r}')
        if not Path(checkpoint).is_file():
            parser.error(f'--text-model: the checkpoint {checkpoint} does not exist')
        args.text_model = (model_name, checkpoint)
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


def embedding_sidecar(cfg: Config) -> Dict[str, Any]:
    """The sidecar of the class embeddings the detector was configured with.

    Args:
        cfg (Config): The detector config (``model.roi_head.bbox_head.class_embeddings``; a
            cascade's box heads, a list, must share one file).

    Returns:
        dict: The sidecar, empty when the file has none.
    """
    heads = cfg.model.roi_head.bbox_head
    heads = list(heads) if isinstance(heads, (list, tuple)) else [heads]
    files = sorted({head.class_embeddings for head in heads})
    if len(files) != 1:
        raise ValueError(f'model.roi_head.bbox_head: the stages hold different class embeddings '
                         f'{files}; one vocabulary is embedded for all of them')
    return read_embedding_sidecar(files[0]) or {}


def training_template_set(sidecar: Dict[str, Any]) -> str:
    """The prompt set the sidecar of the config's class embeddings names, else
    :data:`DEFAULT_TEMPLATE_SET`."""
    template_set = sidecar.get(TEMPLATE_SET_KEY)
    return template_set if template_set in PROMPT_SETS else DEFAULT_TEMPLATE_SET


def load_text_model(text_model: Optional[Tuple[str, str]], sidecar: Dict[str, Any],
                    device: str) -> Optional[OpenCLIPRegion]:
    """The CLIP of ``--text-model``, if given.

    Args:
        text_model (Tuple[str, str], optional): ``(model name, checkpoint)`` of
            ``--text-model``.
        sidecar (dict): The sidecar of the config's class embeddings; the model it names (the
            text tower that made them) must be the given one.
        device (str): The torch device.

    Returns:
        OpenCLIPRegion | None: The CLIP in eval mode, None without ``--text-model``.
    """
    if text_model is None:
        return None
    model_name, checkpoint = text_model
    made_with = sidecar.get(EMBEDDING_MODEL_KEY)
    if made_with is not None and made_with != model_name:
        raise SystemExit(f'--text-model: the config\'s class embeddings were made with the text '
                         f'tower of {made_with!r} (their sidecar), got {model_name!r}')
    return OpenCLIPRegion(model_name, pretrained=checkpoint).to(device).eval()


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
    sidecar = embedding_sidecar(cfg)
    template_set = args.templates or training_template_set(sidecar)
    text_output = sidecar.get(EMBEDDING_TEXT_OUTPUT_KEY, DEFAULT_TEXT_OUTPUT)
    tower = load_text_model(args.text_model, sidecar, args.device)
    model = init_detector(cfg, args.checkpoint, device=args.device)
    try:
        resolve_text_tower(model, tower, text_output, field='--text-model')
    except ValueError as err:
        raise SystemExit(str(err)) from err
    set_vocabulary(model, args.names,
                   embed_vocabulary(model, args.names, get_prompt_set(template_set), tower,
                                    text_output), args.novel)
    novel = [name in args.novel for name in args.names]

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
                      templates=template_set, text_output=text_output,
                      detections=detections(result, args.names, novel))
        preds_file = out_dir / PREDS_DIR / (image.stem + PREDS_SUFFIX)
        preds_file.write_text(json.dumps(record, indent=1))
    print(f'{len(args.images)} images, {len(args.names)} classes ({len(args.novel)} novel, '
          f'{template_set!r} prompts, {text_output!r} text output) -> {out_dir}/{VIS_DIR}, '
          f'{out_dir}/{PREDS_DIR}')


if __name__ == '__main__':
    main()
