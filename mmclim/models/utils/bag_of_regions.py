# Copyright (c) mmclim contributors. All rights reserved.
"""BARON's bags of regions: sampling, box positions and the pseudo-word helpers.

BARON (Wu et al., CVPR 2023, "Aligning Bag of Regions for Open-Vocabulary Object Detection")
turns a bag of region proposals of one image (plus the image box) into a sequence of pseudo
words, adds an embedding of each box's position relative to the image, and reads the sequence
with CLIP's text tower. Its caption branch samples one bag per image
(``ovdet/methods/baron/baron_caption.py``, ``sample_on_topk``); BARON + CLIM samples one bag
inside each pseudo region (an image's cell) of a mosaic (:func:`sample_bag` with that cell as the
frame).
"""
import math
from numbers import Integral, Real
from typing import List, Optional, Union

import torch
import torch.nn as nn
from mmcv.ops import nms
from mmdet.structures.bbox import bbox_xyxy_to_cxcywh
from torch import Tensor

# Official OV-COCO sampling settings: ovdet/configs/baron/ov_coco/
# baron_caption_faster_rcnn_r50_caffe_c4_90k.py (``sampling_cfg``), line numbers there.
BAG_SAMPLING_DEFAULTS = dict(
    topk=128,  # L52: proposals kept by score before the filters (obtain_topk_proposal)
    shape_ratio_thr=0.25,  # L47: width / height must lie in (0.25, 4)
    area_ratio_thr=0.01,  # L48: a proposal must cover > 1% of the frame
    objectness_thr=0.85,  # L49: RPN score must be > 0.85
    nms_thr=0.2,  # L50: IoU threshold of the NMS among the kept proposals
    max_num=10,  # L51: proposals per bag (the frame box is added to them)
    # Ours (the paper only says "we sample region proposals inside a pseudo region"): a proposal
    # must have at least half of its area inside the frame. One mostly over a neighbouring cell
    # of the mosaic describes another image, and its clipped remainder would be a sliver of it.
    inside_thr=0.5,
)
# Same config: random orders of a bag read by the text tower (``max_perms``, L53).
DEFAULT_MAX_PERMS = 4
# SinePositionalEncoding of ovdet/methods/baron/utils.py, as BaronBase builds it
# (baron_base.py: ``SinePositionalEncoding(num_feats=128, ...)``; the other two are its defaults).
DEFAULT_POS_NUM_FEATS = 128
DEFAULT_POS_TEMPERATURE = 1.2
DEFAULT_POS_SCALE = 2 * math.pi
# Official width / height ratio: ``w / (h + 1e-12)`` (baron_base.py, preprocess_proposals).
_SHAPE_EPS = 1e-12
# Guards the division by a proposal's own area (degenerate boxes have no area).
_AREA_EPS = 1e-12


def _check_int(name: str, value: int, minimum: int) -> None:
    """Raise a ValueError naming ``name`` unless ``value`` is an int >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ValueError(f'{name} must be an int >= {minimum}, got {value!r}')


def _check_real(name: str, value: float, low: float, high: float, low_open: bool,
                high_open: bool) -> None:
    """Raise a ValueError naming ``name`` unless ``value`` is a number in the interval."""
    ok = not isinstance(value, bool) and isinstance(value, Real)
    if ok:
        above = low < value if low_open else low <= value
        below = value < high if high_open else value <= high
        ok = above and below
    if not ok:
        interval = f'{"(" if low_open else "["}{low}, {high}{")" if high_open else "]"}'
        raise ValueError(f'{name} must be a number in {interval}, got {value!r}')


def _check_frame(frame: Tensor) -> None:
    """Raise a ValueError unless ``frame`` is (x1, y1, x2, y2) of positive width and height."""
    if frame.shape != (4, ):
        raise ValueError(f'frame must have shape (4,) (x1, y1, x2, y2), got {tuple(frame.shape)}')
    if not bool((frame[2:] > frame[:2]).all()):
        raise ValueError(f'frame must have x2 > x1 and y2 > y1, got {frame.tolist()}')


def _randperm(n: int, generator: Optional[torch.Generator], device: torch.device) -> Tensor:
    """``torch.randperm(n)`` drawn from ``generator`` (on its device), moved to ``device``."""
    draw_device = generator.device if generator is not None else device
    return torch.randperm(n, generator=generator, device=draw_device).to(device)


def sample_bag(boxes: Tensor,
               scores: Tensor,
               frame: Tensor,
               topk: int,
               shape_ratio_thr: float,
               area_ratio_thr: float,
               objectness_thr: float,
               nms_thr: float,
               max_num: int,
               inside_thr: float,
               generator: Optional[torch.Generator] = None) -> Tensor:
    """The proposals of one bag of regions inside ``frame``, without the frame box itself.

    Steps (1 is ours, for the pseudo regions of a mosaic; 2-6 are the official
    ``obtain_topk_proposal``, ``preprocess_proposals`` and ``sample_on_topk`` for a whole image):

    1. Keep the proposals whose intersection with the frame is at least ``inside_thr`` of their
       own area, clipped to the frame.
    2. Keep the ``topk`` of highest score among them.
    3. Keep those with width / height in (``shape_ratio_thr``, 1 / ``shape_ratio_thr``),
       covering more than ``area_ratio_thr`` of the frame's area, and of score >
       ``objectness_thr``.
    4. If none is left, return the highest-scoring proposal of step 2 alone.
    5. NMS at IoU ``nms_thr`` (mmcv's, as the official code).
    6. A uniform random subset of at most ``max_num`` of them, in random order.

    Args:
        boxes (Tensor): Proposals (x1, y1, x2, y2), shape (P, 4), in the frame's coordinates.
        scores (Tensor): Their objectness scores, shape (P,).
        frame (Tensor): The image or pseudo region (x1, y1, x2, y2), shape (4,), of positive
            width and height.
        topk (int): Proposals kept by score in step 2, >= 1.
        shape_ratio_thr (float): Bound of the width / height ratio, in (0, 1).
        area_ratio_thr (float): Minimum fraction (exclusive) of the frame's area a proposal must
            cover, in [0, 1).
        objectness_thr (float): Minimum score (exclusive).
        nms_thr (float): IoU threshold of the NMS, in [0, 1].
        max_num (int): Maximum number of proposals returned, >= 1.
        inside_thr (float): Minimum fraction (inclusive) of a proposal's area inside the frame,
            in (0, 1].
        generator (torch.Generator, optional): Source of the random subset. Defaults to None
            (torch's default generator).

    Returns:
        Tensor: Shape (k, 4), k <= ``max_num``, dtype and device of ``boxes``: proposals inside
        ``frame`` (clipped to it). (0, 4) when no proposal has ``inside_thr`` of its area inside.
    """
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f'boxes must have shape (P, 4) (x1, y1, x2, y2), got '
                         f'{tuple(boxes.shape)}')
    if scores.shape != boxes.shape[:1]:
        raise ValueError(f'scores must have shape ({boxes.shape[0]},) (one per box), got '
                         f'{tuple(scores.shape)}')
    _check_frame(frame)
    _check_int('topk', topk, 1)
    _check_real('shape_ratio_thr', shape_ratio_thr, 0.0, 1.0, True, True)
    _check_real('area_ratio_thr', area_ratio_thr, 0.0, 1.0, False, True)
    _check_real('objectness_thr', objectness_thr, -math.inf, math.inf, True, True)
    _check_real('nms_thr', nms_thr, 0.0, 1.0, False, False)
    _check_int('max_num', max_num, 1)
    _check_real('inside_thr', inside_thr, 0.0, 1.0, True, False)

    frame = frame.to(boxes)
    scores = scores.to(boxes.device)
    # 1. Inside the frame, clipped to it.
    lower, upper = frame[:2].repeat(2), frame[2:].repeat(2)  # (x1, y1, x1, y1), (x2, y2, x2, y2)
    clipped = torch.minimum(torch.maximum(boxes, lower), upper)
    inter = (clipped[:, 2:] - clipped[:, :2]).clamp(min=0).prod(dim=1)
    own_area = (boxes[:, 2:] - boxes[:, :2]).clamp(min=0).prod(dim=1)
    inside = inter >= inside_thr * own_area.clamp(min=_AREA_EPS)
    clipped, scores, inter = clipped[inside], scores[inside], inter[inside]
    if clipped.shape[0] == 0:
        return boxes.new_zeros(0, 4)

    # 2. Top-k by score, best first.
    top = scores.topk(min(int(topk), scores.shape[0])).indices
    clipped, scores, inter = clipped[top], scores[top], inter[top]

    # 3. The official filters. A clipped box lies in the frame: its intersection with the frame
    # is its own area (``inter``), divided by the frame's (mmdet's 'iof' of (frame, proposals)).
    sizes = clipped[:, 2:] - clipped[:, :2]
    shape_ratio = sizes[:, 0] / (sizes[:, 1] + _SHAPE_EPS)
    frame_area = (frame[2:] - frame[:2]).prod()
    valid = ((shape_ratio > shape_ratio_thr) & (shape_ratio < 1.0 / shape_ratio_thr)
             & (inter / frame_area > area_ratio_thr) & (scores > objectness_thr))
    if not bool(valid.any()):
        # 4. The fallback: the best proposal (row 0 after the top-k).
        return clipped[:1].clone()
    clipped, scores = clipped[valid], scores[valid]

    # 5. NMS (mmcv's, through mmclim's ops fallback on devices mmcv was not built for).
    _, kept = nms(clipped.float(), scores.float(), float(nms_thr))
    clipped = clipped[kept.to(clipped.device)]

    # 6. At most max_num of them, uniformly at random.
    order = _randperm(clipped.shape[0], generator, clipped.device)[:int(max_num)]
    return clipped[order]


def boxes_in_frame(boxes: Tensor, frame: Tensor) -> Tensor:
    """Box coordinates relative to ``frame``: the frame itself is (0, 0, 1, 1).

    The official ``get_normed_boxes`` (``ovdet/methods/baron/utils.py``), without its 1e-12 in
    the division (the frame is checked to have a positive size instead).

    Args:
        boxes (Tensor): Boxes (x1, y1, x2, y2), shape (N, 4).
        frame (Tensor): The frame (x1, y1, x2, y2), shape (4,), of positive width and height.

    Returns:
        Tensor: Shape (N, 4): ((x1 - fx1) / fw, (y1 - fy1) / fh, (x2 - fx1) / fw,
        (y2 - fy1) / fh) with fw, fh the frame's width and height.
    """
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f'boxes must have shape (N, 4) (x1, y1, x2, y2), got '
                         f'{tuple(boxes.shape)}')
    _check_frame(frame)
    frame = frame.to(boxes)
    return (boxes - frame[:2].repeat(2)) / (frame[2:] - frame[:2]).repeat(2)


def sine_box_encoding(boxes_cxcywh: Tensor, num_feats: int, temperature: float,
                      scale: float) -> Tensor:
    r"""Sine encoding of each coordinate of a box (BARON's positional feature before its MLP).

    For each coordinate :math:`c` of a box and :math:`i < \text{num\_feats}`, with
    :math:`t_i = \text{temperature}^{\lfloor i/2 \rfloor - \lfloor \text{num\_feats}/4 \rfloor}`,
    the feature is :math:`\sin(\text{scale} \cdot c \cdot t_i)` for even :math:`i` and
    :math:`\cos(\text{scale} \cdot c \cdot t_i)` for odd :math:`i`; the 4 coordinates' features
    are concatenated in the order (cx, cy, w, h). The official ``SinePositionalEncoding``
    (``ovdet/methods/baron/utils.py``) before ``pos_proj``.

    Args:
        boxes_cxcywh (Tensor): Boxes (cx, cy, w, h), normalised to their frame, shape (N, 4).
        num_feats (int): Features per coordinate, >= 1.
        temperature (float): Base of the frequencies, > 0.
        scale (float): Multiplier of the coordinates.

    Returns:
        Tensor: Shape (N, 4 * num_feats), floating dtype of ``boxes_cxcywh`` (float32 for
        integer boxes).
    """
    if boxes_cxcywh.dim() != 2 or boxes_cxcywh.shape[1] != 4:
        raise ValueError(f'boxes_cxcywh must have shape (N, 4) (cx, cy, w, h), got '
                         f'{tuple(boxes_cxcywh.shape)}')
    _check_int('num_feats', num_feats, 1)
    _check_real('temperature', temperature, 0.0, math.inf, True, True)
    _check_real('scale', scale, -math.inf, math.inf, True, True)
    if not boxes_cxcywh.is_floating_point():
        boxes_cxcywh = boxes_cxcywh.float()
    index = torch.arange(num_feats, device=boxes_cxcywh.device)
    exponents = (index.div(2, rounding_mode='floor') - num_feats // 4).to(boxes_cxcywh.dtype)
    dim_t = float(temperature)**exponents  # (num_feats,)
    angles = boxes_cxcywh[:, :, None] * float(scale) * dim_t  # (N, 4, num_feats)
    even = (index % 2 == 0)
    features = torch.where(even, angles.sin(), angles.cos())
    return features.flatten(1)


class BoxPositionalEmbedding(nn.Module):
    """BARON's box position embedding: one vector per pseudo word of a box.

    :func:`sine_box_encoding` of the box as (cx, cy, w, h), then the official MLP
    ``Linear(4 * num_feats, word_dim) -> LayerNorm(word_dim) -> Linear(word_dim, num_words *
    word_dim)`` (``SinePositionalEncoding.pos_proj`` of ``ovdet/methods/baron/utils.py``). It is
    added to the pseudo words of the box.

    Args:
        num_words (int): Pseudo words per box, >= 1.
        word_dim (int): Size of a word embedding of the text tower, >= 1.
        num_feats (int): Sine features per coordinate. Defaults to 128.
        temperature (float): Base of the sine frequencies. Defaults to 1.2.
        scale (float): Multiplier of the coordinates. Defaults to 2 * pi.
    """

    def __init__(self,
                 num_words: int,
                 word_dim: int,
                 num_feats: int = DEFAULT_POS_NUM_FEATS,
                 temperature: float = DEFAULT_POS_TEMPERATURE,
                 scale: float = DEFAULT_POS_SCALE) -> None:
        super().__init__()
        _check_int('num_words', num_words, 1)
        _check_int('word_dim', word_dim, 1)
        _check_int('num_feats', num_feats, 1)
        _check_real('temperature', temperature, 0.0, math.inf, True, True)
        _check_real('scale', scale, -math.inf, math.inf, True, True)
        self.num_words = int(num_words)
        self.word_dim = int(word_dim)
        self.num_feats = int(num_feats)
        self.temperature = float(temperature)
        self.scale = float(scale)
        self.pos_proj = nn.Sequential(
            nn.Linear(4 * self.num_feats, self.word_dim), nn.LayerNorm(self.word_dim),
            nn.Linear(self.word_dim, self.num_words * self.word_dim))

    def forward(self, normed_boxes: Tensor) -> Tensor:
        """Embed boxes given relative to their frame (:func:`boxes_in_frame`).

        Args:
            normed_boxes (Tensor): Boxes (x1, y1, x2, y2) normalised to their frame, shape
                (N, 4).

        Returns:
            Tensor: Shape (N, num_words, word_dim).
        """
        if normed_boxes.dim() != 2 or normed_boxes.shape[1] != 4:
            raise ValueError(f'normed_boxes must have shape (N, 4) (x1, y1, x2, y2), got '
                             f'{tuple(normed_boxes.shape)}')
        weight = self.pos_proj[0].weight
        features = sine_box_encoding(
            bbox_xyxy_to_cxcywh(normed_boxes.to(weight.dtype)), self.num_feats, self.temperature,
            self.scale)
        return self.pos_proj(features).view(-1, self.num_words, self.word_dim)

    def extra_repr(self) -> str:
        """Fields shown by ``repr``."""
        return (f'num_words={self.num_words}, word_dim={self.word_dim}, '
                f'num_feats={self.num_feats}, temperature={self.temperature}, '
                f'scale={self.scale}')


def _num_permutations(n: int, max_perms: int) -> int:
    """min(n!, max_perms), without computing n! for large n."""
    count = 1
    for factor in range(2, n + 1):
        count *= factor
        if count >= max_perms:
            return max_perms
    return min(count, max_perms)


def random_permutations(n: int,
                        max_perms: int,
                        generator: Optional[torch.Generator] = None) -> List[List[int]]:
    """min(n!, ``max_perms``) distinct uniformly random permutations of range(n).

    The official ``pseudo_permutations`` (``ovdet/methods/baron/baron_caption.py``): random
    permutations are drawn until enough distinct ones are found (the identity is not forced).

    Args:
        n (int): Length of the permuted sequence, >= 0 (range(0) has one, empty, permutation).
        max_perms (int): Maximum number of permutations, >= 1.
        generator (torch.Generator, optional): Source of the draws. Defaults to None (torch's
            default generator).

    Returns:
        List[List[int]]: The permutations, in the order drawn.
    """
    _check_int('n', n, 0)
    _check_int('max_perms', max_perms, 1)
    count = _num_permutations(int(n), int(max_perms))
    device = generator.device if generator is not None else torch.device('cpu')
    seen = set()
    perms = []
    while len(perms) < count:
        perm = tuple(torch.randperm(n, generator=generator, device=device).tolist())
        if perm not in seen:
            seen.add(perm)
            perms.append(list(perm))
    return perms


def drop_words(num_rows: int,
               num_words: int,
               drop_ratio: float,
               training: bool,
               device: Union[str, torch.device, None] = None,
               generator: Optional[torch.Generator] = None) -> Tensor:
    """Which pseudo words to keep: each dropped with probability ``drop_ratio`` in training.

    The official ``_drop_word`` (``ovdet/methods/baron/baron_base.py``): in training every word
    is dropped independently; a row with no word left keeps its first word. In eval all are kept.

    Args:
        num_rows (int): Number of word sequences (rows), >= 0.
        num_words (int): Words per row, >= 1.
        drop_ratio (float): Probability of dropping a word, in [0, 1].
        training (bool): Drop words only when True.
        device (str | torch.device, optional): Device of the mask. Defaults to None (CPU).
        generator (torch.Generator, optional): Source of the draws. Defaults to None (torch's
            default generator).

    Returns:
        Tensor: Bool keep mask of shape (num_rows, num_words), at least one True per row.
    """
    _check_int('num_rows', num_rows, 0)
    _check_int('num_words', num_words, 1)
    _check_real('drop_ratio', drop_ratio, 0.0, 1.0, False, False)
    device = torch.device('cpu') if device is None else torch.device(device)
    if not training:
        return torch.ones(num_rows, num_words, dtype=torch.bool, device=device)
    draw_device = generator.device if generator is not None else device
    keep = torch.rand(num_rows, num_words, generator=generator, device=draw_device) >= drop_ratio
    keep = keep.to(device)
    keep[:, 0] |= ~keep.any(dim=1)
    return keep
