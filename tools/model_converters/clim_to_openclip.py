# Copyright (c) mmclim contributors. All rights reserved.
"""Turn a trained CLIMCLIP or RegionCLIP checkpoint into an OpenAI/open_clip-format CLIP state
dict (the trained student; a RegionCLIP teacher is left out).

The output loads with ``OpenCLIPRegion(pretrained=OUT)`` (so detector configs can use it), with
open_clip's ``load_checkpoint`` or with ``open_clip.create_model(name, pretrained=OUT)``.

Weight ensembling, as the official CLIM code exports its models (``--alpha 0.7``): the saved
weights are ``A * trained + (1 - A) * original`` for every floating-point tensor. By default
``A`` is the checkpoint's own ``model.weight_ensemble`` and the original weights are read from
its ``model.clip.pretrained`` (both from the config stored in the checkpoint), so the export is
the model that was evaluated during training; ``--alpha`` and ``--original`` override them,
``--alpha 1`` exports the trained weights as they are. Ensembling happens at export, so training
checkpoints and resuming stay untouched.

Usage:
    python tools/model_converters/clim_to_openclip.py work_dirs/clim/epoch_100.pth out.pt
    python tools/model_converters/clim_to_openclip.py CKPT out.pt --alpha 0.5 --original ViT-B-16.pt
"""
import argparse
import ast
import os.path as osp
import pickle
from typing import Any, Dict, Optional, Tuple

import torch
from torch import Tensor

import mmclim  # noqa: F401  (allow-lists mmengine checkpoint types)
from mmclim.engine import assert_finite
from mmclim.models.backbones import read_clip_state_dict

# Where the open_clip model sits inside CLIMCLIP and RegionCLIP: .clip (OpenCLIPRegion).clip
# (CLIP).
CLIP_PREFIX = 'clip.clip.'
DTYPES = dict(fp16=torch.float16, fp32=torch.float32)


def load_checkpoint(checkpoint_path: str) -> Dict[str, Any]:
    """An mmengine checkpoint, read as data (``weights_only``: nothing in the file is run; globals
    outside torch's and mmclim's allow-list are refused, naming the file)."""
    if not osp.isfile(checkpoint_path):
        raise FileNotFoundError(f'checkpoint {checkpoint_path} does not exist')
    try:
        return torch.load(checkpoint_path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as error:
        raise pickle.UnpicklingError(f'checkpoint {checkpoint_path} is refused: it is not plain '
                                     f'weights ({error})') from error


def extract_clip_state_dict(checkpoint: Dict[str, Any], checkpoint_path: str,
                            prefix: str = CLIP_PREFIX) -> Dict[str, Tensor]:
    """The open_clip CLIP weights inside an mmengine checkpoint of a CLIMCLIP model.

    Args:
        checkpoint (dict): The loaded checkpoint (``state_dict`` of the whole model).
        checkpoint_path (str): Named in errors.
        prefix (str): Key prefix of the CLIP model. Defaults to ``'clip.clip.'``.

    Returns:
        dict[str, Tensor]: The CLIP state dict with the prefix removed.
    """
    state_dict = checkpoint.get('state_dict', checkpoint)
    clip = {key[len(prefix):]: value for key, value in state_dict.items() if key.startswith(prefix)}
    if not clip:
        raise KeyError(f'{checkpoint_path} has no key starting with {prefix!r}; is it a CLIMCLIP '
                       f'checkpoint? First keys: {list(state_dict)[:5]}')
    return clip


def _literal(node: ast.AST) -> Any:
    """The value of a literal expression, ``dict(...)`` calls included; nothing is executed."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == 'dict' \
            and not node.args:
        return {keyword.arg: _literal(keyword.value) for keyword in node.keywords}
    if isinstance(node, ast.Dict):
        return {_literal(key): _literal(value) for key, value in zip(node.keys, node.values)}
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(element) for element in node.elts]
    return ast.literal_eval(node)


def ensemble_defaults(checkpoint: Dict[str, Any]) -> Tuple[Optional[float], Optional[str]]:
    """``model.weight_ensemble`` and ``model.clip.pretrained`` of the config stored in an
    mmengine checkpoint (``meta.cfg``, read as literals, never executed); ``(None, None)`` when
    it has none."""
    text = checkpoint.get('meta', {}).get('cfg')
    if not isinstance(text, str):
        return None, None
    for node in ast.parse(text).body:
        if isinstance(node, ast.Assign) and any(
                isinstance(target, ast.Name) and target.id == 'model' for target in node.targets):
            try:
                model = _literal(node.value)
            except ValueError:
                return None, None
            clip = model.get('clip') if isinstance(model, dict) else None
            return (model.get('weight_ensemble') if isinstance(model, dict) else None,
                    clip.get('pretrained') if isinstance(clip, dict) else None)
    return None, None


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
    parser.add_argument('--alpha', type=float,
                        help="weight of the trained model when ensembling (default: the "
                        "checkpoint's model.weight_ensemble); 1 = no ensembling")
    parser.add_argument('--original', help="original CLIP checkpoint to ensemble with (default: "
                        "the checkpoint's model.clip.pretrained)")
    parser.add_argument('--dtype', choices=sorted(DTYPES), default='fp32',
                        help='dtype of the saved floating-point weights (OpenAI ships fp16)')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    checkpoint = load_checkpoint(args.checkpoint)
    # A diverged run's weights are never exported: refuse NaN / inf, naming the tensor.
    assert_finite(checkpoint.get('state_dict', checkpoint),
                  f'refusing to convert {args.checkpoint}')
    clip = extract_clip_state_dict(checkpoint, args.checkpoint)
    default_alpha, default_original = ensemble_defaults(checkpoint)
    alpha = args.alpha if args.alpha is not None else (default_alpha or 1.0)
    if alpha != 1.0:
        original = args.original or default_original
        if original is None:
            raise ValueError(f'--alpha {alpha} needs the original weights: pass --original (the '
                             'checkpoint records no model.clip.pretrained)')
        clip = ensemble(clip, read_clip_state_dict(original), alpha, original)
    dtype = DTYPES[args.dtype]
    clip = {k: v.to(dtype) if v.is_floating_point() else v for k, v in clip.items()}
    assert_finite(clip, f'refusing to write {args.out} (--dtype {args.dtype})')  # fp16 overflow
    torch.save(clip, args.out)
    print(f'saved {len(clip)} tensors ({args.dtype}, alpha={alpha}) to {args.out}')


if __name__ == '__main__':
    main()
