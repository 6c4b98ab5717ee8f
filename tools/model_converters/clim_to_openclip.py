# Copyright (c) mmclim contributors. All rights reserved.
"""Turn a trained CLIMCLIP checkpoint into an OpenAI/open_clip-format CLIP state dict.

The output loads with ``OpenCLIPRegion(pretrained=OUT)`` (so detector configs can use it), with
open_clip's ``load_checkpoint`` or with ``open_clip.create_model(name, pretrained=OUT)``.

Weight ensembling (optional, ``--alpha A --original CKPT``): the saved weights are
``A * trained + (1 - A) * original`` for every floating-point tensor, the original CLIP's weights
read from ``CKPT`` (OpenAI ``.pt`` or open_clip file). ``A = 1`` keeps the trained weights; a
smaller ``A`` trades some of CLIM's region gain for the original model's image-level robustness.
Ensembling happens here, at save time, so training checkpoints and resuming stay untouched.

Usage:
    python tools/model_converters/clim_to_openclip.py work_dirs/clim/iter_1000.pth out.pt
    python tools/model_converters/clim_to_openclip.py CKPT out.pt --alpha 0.5 --original ViT-B-16.pt
"""
import argparse
import os.path as osp
from typing import Dict, Optional

import torch
from torch import Tensor

import mmclim  # noqa: F401  (allow-lists mmengine checkpoint types)
from mmclim.models.backbones import read_clip_state_dict

# Where the open_clip model sits inside CLIMCLIP: CLIMCLIP.clip (OpenCLIPRegion).clip (CLIP).
CLIP_PREFIX = 'clip.clip.'
DTYPES = dict(fp16=torch.float16, fp32=torch.float32)


def extract_clip_state_dict(checkpoint_path: str, prefix: str = CLIP_PREFIX) -> Dict[str, Tensor]:
    """The open_clip CLIP weights inside an mmengine checkpoint of a CLIMCLIP model.

    Args:
        checkpoint_path (str): mmengine checkpoint (``state_dict`` of the whole model).
        prefix (str): Key prefix of the CLIP model. Defaults to ``'clip.clip.'``.

    Returns:
        dict[str, Tensor]: The CLIP state dict with the prefix removed.
    """
    if not osp.isfile(checkpoint_path):
        raise FileNotFoundError(f'checkpoint {checkpoint_path} does not exist')
    checkpoint = torch.load(checkpoint_path, map_location='cpu', weights_only=True)
    state_dict = checkpoint.get('state_dict', checkpoint)
    clip = {key[len(prefix):]: value for key, value in state_dict.items() if key.startswith(prefix)}
    if not clip:
        raise KeyError(f'{checkpoint_path} has no key starting with {prefix!r}; is it a CLIMCLIP '
                       f'checkpoint? First keys: {list(state_dict)[:5]}')
    return clip


def ensemble(trained: Dict[str, Tensor], original: Dict[str, Tensor],
             alpha: float, original_path: Optional[str] = None) -> Dict[str, Tensor]:
    """``alpha * trained + (1 - alpha) * original`` for floating-point tensors.

    Args:
        trained (dict[str, Tensor]): Fine-tuned weights.
        original (dict[str, Tensor]): The original CLIP's weights, same keys and shapes.
        alpha (float): Weight of the fine-tuned model, in [0, 1].
        original_path (str, optional): Named in errors.

    Returns:
        dict[str, Tensor]: The ensembled weights (non-float tensors from ``trained``).
    """
    if not 0 <= alpha <= 1:
        raise ValueError(f'--alpha must be in [0, 1], got {alpha}')
    missing = sorted(set(trained) - set(original))
    if missing:
        raise KeyError(f'original checkpoint {original_path} lacks {len(missing)} keys of the '
                       f'trained model, first: {missing[0]!r}')
    out = {}
    for key, value in trained.items():
        base = original[key]
        if base.shape != value.shape:
            raise ValueError(f'original checkpoint {original_path}: {key!r} has shape '
                             f'{tuple(base.shape)}, the trained model {tuple(value.shape)}')
        out[key] = (alpha * value.float() + (1 - alpha) * base.float()).to(
            value.dtype) if value.is_floating_point() else value
    return out


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('checkpoint', help='mmengine checkpoint of a CLIMCLIP model')
    parser.add_argument('out', help='output file (.pt)')
    parser.add_argument('--alpha', type=float, default=1.0,
                        help='weight of the trained model when ensembling; 1 = no ensembling')
    parser.add_argument('--original', help='original CLIP checkpoint, needed when --alpha < 1')
    parser.add_argument('--dtype', choices=sorted(DTYPES), default='fp32',
                        help='dtype of the saved floating-point weights (OpenAI ships fp16)')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    clip = extract_clip_state_dict(args.checkpoint)
    if args.alpha != 1.0:
        if args.original is None:
            raise ValueError('--alpha < 1 needs --original, the checkpoint to ensemble with')
        clip = ensemble(clip, read_clip_state_dict(args.original), args.alpha, args.original)
    dtype = DTYPES[args.dtype]
    torch.save({k: v.to(dtype) if v.is_floating_point() else v for k, v in clip.items()}, args.out)
    print(f'saved {len(clip)} tensors ({args.dtype}, alpha={args.alpha}) to {args.out}')


if __name__ == '__main__':
    main()
