# Copyright (c) mmclim contributors. All rights reserved.
"""Embed a data set's class names with a CLIP text tower: the classifier of zero-shot heads.

Writes ``OUT.npy`` of shape (C [+ 1], D), unit rows in ascending category-id order (then the
background row with ``--background``), and the sidecar ``OUT.json`` describing how, through
:func:`mmclim.structures.save_class_embeddings` (the sidecar names the open_clip ``--model``,
which models check when they load the file).

Examples::

    python tools/generate_text_embeddings.py data/coco/annotations/instances_val2017.json \\
        --model ViT-B-16-quickgelu --checkpoint checkpoints/ViT-B-16.pt \\
        --templates ensemble --out data/coco/clip_vitb16_coco_ensemble.npy

    # CLIM Table 5 (region classification): the official ViLD prompts of the 133 classes
    python tools/generate_text_embeddings.py data/coco/annotations/panoptic_val2017.json \\
        --model ViT-B-16-quickgelu --checkpoint checkpoints/clip/ViT-B-16.pt \\
        --templates vild --out data/coco/embeddings/coco_panoptic_ViT-B-16_vild.npy

    # BARON OV-COCO: the EOT token after the last text block, without ln_final and the
    # projection (the official coco_clip_hand_craft_attn12.npy), of size W
    python tools/generate_text_embeddings.py data/coco/annotations/instances_val2017.json \\
        --model ViT-B-32-quickgelu --checkpoint checkpoints/clip/ViT-B-32.pt \\
        --text-output last_block --out data/coco/embeddings/coco_ViT-B-32_last_block.npy
"""
import argparse
import sys
from pathlib import Path
from typing import List, Optional

import torch

from mmclim.evaluation.metrics import (BACKGROUND_CLASS_NAME, PROMPT_SETS, compute_text_embeddings,
                                       get_prompt_set, load_class_names)
from mmclim.models.backbones import OpenCLIPRegion
from mmclim.models.backbones.clip_text_paths import TEXT_OUTPUTS
from mmclim.models.backbones.open_clip_region import DEFAULT_TEXT_BATCH_SIZE
from mmclim.structures import save_class_embeddings
from mmclim.structures.vocabulary import (DEFAULT_TEXT_OUTPUT, EMBEDDING_BACKGROUND_KEY,
                                          EMBEDDING_SUFFIX, EMBEDDING_TEXT_OUTPUT_KEY, sidecar_path)

DEFAULT_MODEL = 'ViT-B-16-quickgelu'  # CLIM's main CLIP model (OpenAI ViT-B/16 weights)
DEFAULT_TEMPLATE_SET = 'ensemble'


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Generate class-name text embeddings')
    parser.add_argument(
        'classes', help='COCO/LVIS-style annotation .json (its categories, by id) or a .txt '
        'with one class name per line')
    parser.add_argument('--out', required=True, help='output .npy file; metadata goes to .json')
    parser.add_argument(
        '--model', default=DEFAULT_MODEL,
        help=f'open_clip model config, e.g. {DEFAULT_MODEL} or mmclim-tiny-vit')
    parser.add_argument(
        '--checkpoint', help='local CLIP checkpoint (OpenAI .pt, open_clip or mmclim-converted), '
        'read as data: nothing in the file is run; without it the weights are random')
    parser.add_argument(
        '--templates', default=DEFAULT_TEMPLATE_SET, choices=sorted(PROMPT_SETS),
        help='prompt-template set; vild: the 63 ViLD prompts of CLIM\'s official embeddings')
    parser.add_argument(
        '--background', action='store_true',
        help=f'append a last row embedding {BACKGROUND_CLASS_NAME!r} with the same templates')
    parser.add_argument(
        '--text-output', default=DEFAULT_TEXT_OUTPUT, choices=TEXT_OUTPUTS,
        help='projection: CLIP\'s text embedding (size embed_dim); last_block: the EOT token '
        'after the last text block, without ln_final and projection (size width; the official '
        'BARON OV-COCO classifier)')
    parser.add_argument(
        '--batch-size', type=int, default=DEFAULT_TEXT_BATCH_SIZE,
        help='prompts per text-tower forward pass')
    parser.add_argument('--device', default='cpu', help='torch device, e.g. cpu or cuda')
    args = parser.parse_args(argv)
    if not args.out.endswith(EMBEDDING_SUFFIX):
        parser.error(f'--out: expected a path ending in {EMBEDDING_SUFFIX}, got {args.out!r}')
    sidecar = Path(sidecar_path(args.out))
    if sidecar.resolve() == Path(args.classes).with_suffix(sidecar.suffix).resolve():
        parser.error(f'--out: its sidecar {sidecar_path(args.out)} would overwrite the one of '
                     f'{args.classes} (a concept pool\'s counts); give the .npy another name')
    return args


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    class_names = load_class_names(args.classes)
    prompt_set = get_prompt_set(args.templates)
    if args.checkpoint is None:
        print(f'warning: no --checkpoint: {args.model} has random weights, so the embeddings '
              'only suit tests', file=sys.stderr)
    model = OpenCLIPRegion(args.model, pretrained=args.checkpoint).to(args.device).eval()
    with torch.no_grad():
        embeddings = compute_text_embeddings(model, class_names, prompt_set,
                                             background=args.background,
                                             batch_size=args.batch_size,
                                             text_output=args.text_output)
    sidecar = save_class_embeddings(
        args.out, embeddings, args.model,
        {'checkpoint': args.checkpoint, 'classes_file': args.classes,
         'template_set': args.templates, 'templates': list(prompt_set.templates),
         'class_names': class_names, EMBEDDING_BACKGROUND_KEY: args.background,
         EMBEDDING_TEXT_OUTPUT_KEY: args.text_output})
    print(f'{len(class_names)} classes{" + background" if args.background else ""}: '
          f'embeddings of shape {tuple(embeddings.shape)} -> {args.out} (metadata: {sidecar})')


if __name__ == '__main__':
    main()
