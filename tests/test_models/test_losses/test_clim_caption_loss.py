# Copyright (c) mmclim contributors. All rights reserved.
"""CLIMCaptionLoss: hand-computed values, duplicate captions, empty input, input checks, and two
gloo processes against one process holding the whole batch (loss and DDP-averaged gradients)."""
import math
from datetime import timedelta
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import pytest
import torch
import torch.distributed as dist
import torch.nn as nn
from conftest import fork_process, join_process
from mmdet.registry import MODELS

from mmclim.models.losses import CLIMCaptionLoss, caption_ids_from_texts, contrastive_caption_loss
from mmclim.models.utils.all_gather import all_gather_with_grad

# Hand example: 3 regions and 3 texts in 2-D, scale 2. Dot products R @ T.T are
# [[1, 1, 0], [0, 1, 1], [1, 2, 1]], so the logits are twice that.
REGIONS = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]
TEXTS = [[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]
SCALE = 2.0
# Rows 0 and 1 carry the same caption.
DUPLICATE_IDS = [7, 7, 3]
# Positive factors that rescale each row; normalize=True must not see them.
REGION_ROW_FACTORS = [[3.0], [0.5], [2.0]]
TEXT_ROW_FACTORS = [[0.25], [4.0], [1.5]]

WORLD_SIZE = 2
IN_DIM = 5
FEAT_DIM = 4
MODEL_SEED = 0
DATA_SEED = 1
LOG_SCALE_INIT = math.log(10.0)
# Captions of the 6-row global batch: 'a dog' twice within rank 0, 'a cat' on both ranks.
CAPTIONS = ['a dog', 'a cat', 'a dog', 'a bird', 'a cat', 'a cow']
# Name -> (rows per rank, use caption ids, gather across ranks).
DIST_CASES = {
    'equal': ((3, 3), False, True),
    'unequal': ((4, 2), False, True),
    'empty_rank': ((5, 0), False, True),
    'duplicates': ((4, 2), True, True),
    'local_only': ((3, 3), False, False),
}
# Rows of rank r in the direct check of all_gather_with_grad, and the width of each row.
GATHER_ROWS = (2, 1)
GATHER_WIDTH = 3
DIST_TIMEOUT_S = 60
TOLERANCE = 1e-10


def _neg_log_softmax(logits: Sequence[float], positive: int) -> float:
    """-log softmax(logits)[positive], with the log-sum-exp written out; -inf entries drop out."""
    return math.log(sum(math.exp(x) for x in logits if x != -math.inf)) - logits[positive]


def _hand_tensors(dtype: torch.dtype = torch.float64) -> Tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(REGIONS, dtype=dtype), torch.tensor(TEXTS, dtype=dtype)


def test_hand_computed_3x3() -> None:
    regions, texts = _hand_tensors()
    loss = contrastive_caption_loss(regions, texts, SCALE, normalize=False)
    # Row CE (region -> text) and column CE (text -> region) of the logits 2 * R @ T.T:
    # rows [2, 2, 0], [0, 2, 2], [2, 4, 2]; columns [2, 0, 2], [2, 2, 4], [0, 2, 2]; each
    # positive logit is 2. So a = log(2e^2 + 1) - 2 appears 4 times, b = log(2e^2 + e^4) - 2 twice.
    a = math.log(2 * math.exp(2) + 1) - 2
    b = math.log(2 * math.exp(2) + math.exp(4)) - 2
    expected = ((2 * a + b) / 3 + (2 * a + b) / 3) / 2
    assert loss.item() == pytest.approx(expected, abs=TOLERANCE)
    # A tensor scale gives the same value.
    tensor_scale = contrastive_caption_loss(regions, texts, torch.tensor(SCALE), normalize=False)
    assert tensor_scale.item() == pytest.approx(expected, abs=TOLERANCE)


def test_bfloat16_autocast_computes_the_loss_in_float32() -> None:
    """bfloat16 features under CPU autocast: the loss equals the float64 loss of the same
    (bfloat16-rounded) features. At a logit scale of 100 a bfloat16 matrix product would round the
    logits to steps of 0.25 to 0.5 and miss it by far more than the tolerance."""
    generator = torch.Generator().manual_seed(0)
    regions = torch.randn(16, 32, generator=generator).bfloat16()
    texts = torch.randn(16, 32, generator=generator).bfloat16()
    expected = contrastive_caption_loss(regions.double(), texts.double(), 100.0)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        loss = contrastive_caption_loss(regions, texts, torch.tensor(100.0))
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(expected.item(), abs=1e-4)


def test_normalize_on_and_off() -> None:
    regions, texts = _hand_tensors()
    scaled_regions = regions * torch.tensor(REGION_ROW_FACTORS, dtype=regions.dtype)
    scaled_texts = texts * torch.tensor(TEXT_ROW_FACTORS, dtype=texts.dtype)
    # Cosines: rows [1, 1/sqrt2, 0], [0, 1/sqrt2, 1], [1/sqrt2, 1, 1/sqrt2]; times 2 with
    # c = sqrt2: rows [2, c, 0], [0, c, 2], [c, 2, c], positives 2, c, c; the columns hold the
    # same multisets with the same positives.
    c = math.sqrt(2.0)
    big = math.log(math.exp(2) + math.exp(c) + 1)
    small = math.log(2 * math.exp(c) + math.exp(2))
    expected = (2 * big + small - 2 - 2 * c) / 3
    loss = contrastive_caption_loss(scaled_regions, scaled_texts, SCALE, normalize=True)
    assert loss.item() == pytest.approx(expected, abs=TOLERANCE)
    unnormalized = contrastive_caption_loss(scaled_regions, scaled_texts, SCALE, normalize=False)
    assert abs(unnormalized.item() - expected) > 0.1


def test_module_loss_weight_and_registry() -> None:
    regions, texts = _hand_tensors()
    unweighted = contrastive_caption_loss(regions, texts, SCALE, normalize=False)
    loss_module = MODELS.build(dict(type='CLIMCaptionLoss', normalize=False, loss_weight=0.5))
    assert isinstance(loss_module, CLIMCaptionLoss)
    assert loss_module(regions, texts, SCALE).item() == pytest.approx(
        0.5 * unweighted.item(), abs=TOLERANCE)
    assert CLIMCaptionLoss(normalize=False, loss_weight=3.0)(regions, texts, SCALE).item() == \
        pytest.approx(3.0 * unweighted.item(), abs=TOLERANCE)


def test_duplicate_captions_are_masked() -> None:
    regions, texts = _hand_tensors()
    ids = torch.tensor(DUPLICATE_IDS)
    loss = contrastive_caption_loss(regions, texts, SCALE, normalize=False, caption_ids=ids)
    inf = -math.inf
    # Rows 0 and 1 share a caption: each drops the other's column, in both directions.
    rows = [_neg_log_softmax([2, inf, 0], 0), _neg_log_softmax([inf, 2, 2], 1),
            _neg_log_softmax([2, 4, 2], 2)]
    columns = [_neg_log_softmax([2, inf, 2], 0), _neg_log_softmax([inf, 2, 4], 1),
               _neg_log_softmax([0, 2, 2], 2)]
    expected = (sum(rows) / 3 + sum(columns) / 3) / 2
    assert loss.item() == pytest.approx(expected, abs=TOLERANCE)
    unmasked = contrastive_caption_loss(regions, texts, SCALE, normalize=False)
    assert abs(unmasked.item() - expected) > 0.1
    # Distinct ids change nothing.
    distinct = contrastive_caption_loss(
        regions, texts, SCALE, normalize=False, caption_ids=torch.tensor([1, 2, 3]))
    assert distinct.item() == pytest.approx(unmasked.item(), abs=TOLERANCE)


def test_caption_ids_from_texts() -> None:
    ids = caption_ids_from_texts(CAPTIONS)
    assert ids.dtype == torch.int64 and ids.shape == (len(CAPTIONS), )
    for i, first in enumerate(CAPTIONS):
        for j, second in enumerate(CAPTIONS):
            assert (ids[i] == ids[j]).item() == (first == second), (first, second)
    assert caption_ids_from_texts([]).shape == (0, )
    with pytest.raises(TypeError, match=r'captions\[1\]'):
        caption_ids_from_texts(['a dog', 3])


def test_empty_input_gives_connected_zero() -> None:
    regions = torch.zeros(0, FEAT_DIM, requires_grad=True)
    texts = torch.zeros(0, FEAT_DIM, requires_grad=True)
    loss = CLIMCaptionLoss()(regions, texts, SCALE, caption_ids=caption_ids_from_texts([]))
    assert loss.item() == 0.0
    assert loss.grad_fn is not None
    loss.backward()
    assert regions.grad is not None and regions.grad.shape == (0, FEAT_DIM)
    assert texts.grad is not None and texts.grad.shape == (0, FEAT_DIM)


def test_gather_without_process_group_is_identity() -> None:
    assert not dist.is_initialized()
    rows = torch.randn(3, FEAT_DIM)
    gathered, offset = all_gather_with_grad(rows)
    assert gathered is rows and offset == 0
    regions, texts = _hand_tensors()
    assert contrastive_caption_loss(regions, texts, SCALE, gather=True).item() == \
        contrastive_caption_loss(regions, texts, SCALE, gather=False).item()


@pytest.mark.parametrize('regions_shape, texts_shape, kwargs, message', [
    ((3, 2), (4, 2), {}, r'region_feats \(3, 2\) and text_feats \(4, 2\)'),
    ((3, ), (3, ), {}, r'region_feats must be a 2-D tensor .* got shape \(3,\)'),
    ((3, 2), (3, 2, 1), {}, r'text_feats must be a 2-D tensor .* got shape \(3, 2, 1\)'),
    ((3, 2), (3, 2), dict(caption_ids=torch.tensor([1, 2])), r'caption_ids .* got shape \(2,\)'),
    ((3, 2), (3, 2), dict(caption_ids=torch.tensor([1.0, 2.0, 3.0])), r'caption_ids .*float'),
    ((3, 2), (3, 2), dict(logit_scale=torch.ones(2)), r'logit_scale .* got shape \(2,\)'),
    ((3, 2), (3, 2), dict(logit_scale=0.0), r'logit_scale must be a positive number'),
])
def test_invalid_inputs_name_the_argument(regions_shape: Tuple[int, ...],
                                          texts_shape: Tuple[int, ...], kwargs: dict,
                                          message: str) -> None:
    kwargs = dict(dict(logit_scale=SCALE), **kwargs)
    with pytest.raises(ValueError, match=message):
        contrastive_caption_loss(torch.ones(regions_shape), torch.ones(texts_shape), **kwargs)


class _ToyCLIM(nn.Module):
    """Two linear projections and CLIP's learned log scale, feeding CLIMCaptionLoss."""

    def __init__(self, gather: bool) -> None:
        super().__init__()
        self.region_proj = nn.Linear(IN_DIM, FEAT_DIM)
        self.text_proj = nn.Linear(IN_DIM, FEAT_DIM)
        self.log_scale = nn.Parameter(torch.tensor(LOG_SCALE_INIT))
        self.loss = CLIMCaptionLoss(gather=gather)

    def forward(self, region_inputs: torch.Tensor, text_inputs: torch.Tensor,
                caption_ids: Optional[torch.Tensor]) -> torch.Tensor:
        return self.loss(self.region_proj(region_inputs), self.text_proj(text_inputs),
                         self.log_scale.exp(), caption_ids)


def _loss_and_grads(rows: slice, num_total: int, use_ids: bool,
                    gather: bool) -> Tuple[float, Dict[str, torch.Tensor]]:
    """Loss and parameter gradients of the toy model on ``rows`` of a fixed global batch."""
    torch.manual_seed(MODEL_SEED)
    model = _ToyCLIM(gather).double()
    generator = torch.Generator().manual_seed(DATA_SEED)
    region_inputs = torch.randn(num_total, IN_DIM, generator=generator, dtype=torch.float64)
    text_inputs = torch.randn(num_total, IN_DIM, generator=generator, dtype=torch.float64)
    ids = caption_ids_from_texts(CAPTIONS[:num_total][rows]) if use_ids else None
    loss = model(region_inputs[rows], text_inputs[rows], ids)
    loss.backward()
    return loss.item(), {name: param.grad for name, param in model.named_parameters()}


def _check_gather(rank: int) -> Dict[str, object]:
    """Gather rows of unequal count; rank s's loss weights the gathered rows by s + 1."""
    start = sum(GATHER_ROWS[:rank])
    values = torch.arange(sum(GATHER_ROWS) * GATHER_WIDTH, dtype=torch.float64).view(
        -1, GATHER_WIDTH)
    local = values[start:start + GATHER_ROWS[rank]].clone().requires_grad_()
    gathered, offset = all_gather_with_grad(local)
    ((rank + 1) * values * gathered).sum().backward()
    return dict(gathered=gathered.detach(), offset=offset, grad=local.grad)


def _dist_worker(rank: int, init_file: Path, out_dir: Path) -> None:
    """One of WORLD_SIZE gloo processes: every case, with gradients averaged as DDP does."""
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank,
                            world_size=WORLD_SIZE, timeout=timedelta(seconds=DIST_TIMEOUT_S))
    try:
        results = {}
        for name, (sizes, use_ids, gather) in DIST_CASES.items():
            start = sum(sizes[:rank])
            loss, grads = _loss_and_grads(slice(start, start + sizes[rank]), sum(sizes), use_ids,
                                          gather)
            for grad in grads.values():
                dist.all_reduce(grad)
                grad /= WORLD_SIZE
            results[name] = dict(loss=loss, grads=grads)
        results['gather'] = _check_gather(rank)
        torch.save(results, out_dir / f'rank{rank}.pt')
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope='module')
def dist_results(tmp_path_factory: pytest.TempPathFactory) -> List[dict]:
    """Results of the WORLD_SIZE gloo processes, one dict per rank (forked from this process:
    spawned ones would spend about 10 s each importing mmdet again)."""
    out_dir = tmp_path_factory.mktemp('clim_dist')
    processes = [fork_process(_dist_worker, rank, out_dir / 'init', out_dir)
                 for rank in range(WORLD_SIZE)]
    assert [join_process(process) for process in processes] == [0] * WORLD_SIZE
    return [torch.load(out_dir / f'rank{rank}.pt') for rank in range(WORLD_SIZE)]


@pytest.mark.parametrize('case', ['equal', 'unequal', 'empty_rank', 'duplicates'])
def test_two_processes_match_one(dist_results: List[dict], case: str) -> None:
    sizes, use_ids, _ = DIST_CASES[case]
    num_total = sum(sizes)
    loss, grads = _loss_and_grads(slice(0, num_total), num_total, use_ids, gather=True)
    rank_mean = sum(result[case]['loss'] for result in dist_results) / WORLD_SIZE
    assert rank_mean == pytest.approx(loss, abs=TOLERANCE)
    for result in dist_results:
        assert result[case]['grads'].keys() == grads.keys()
        for name, grad in grads.items():
            torch.testing.assert_close(result[case]['grads'][name], grad, atol=TOLERANCE, rtol=0,
                                       msg=lambda m: f'{case}, {name}: {m}')
    if case == 'equal':
        # With equal counts each rank's value is its own mean: the ranks differ, so the check
        # above is not trivially met by every rank returning the global loss.
        assert abs(dist_results[0][case]['loss'] - dist_results[1][case]['loss']) > 1e-3
    if case == 'empty_rank':
        assert dist_results[1][case]['loss'] == 0.0
    if case == 'duplicates':
        # The duplicate spanning both ranks matters: without ids the loss is different.
        unmasked, _ = _loss_and_grads(slice(0, num_total), num_total, False, gather=True)
        assert abs(unmasked - loss) > 1e-3


def test_two_processes_without_gather_use_local_rows(dist_results: List[dict]) -> None:
    sizes, use_ids, _ = DIST_CASES['local_only']
    for rank, result in enumerate(dist_results):
        start = sum(sizes[:rank])
        local, _ = _loss_and_grads(slice(start, start + sizes[rank]), sum(sizes), use_ids,
                                   gather=False)
        assert result['local_only']['loss'] == pytest.approx(local, abs=TOLERANCE)
    assert dist_results[0]['local_only']['loss'] != pytest.approx(
        dist_results[0]['equal']['loss'], abs=1e-3)


def test_all_gather_with_grad_unequal_rows(dist_results: List[dict]) -> None:
    values = torch.arange(sum(GATHER_ROWS) * GATHER_WIDTH, dtype=torch.float64).view(
        -1, GATHER_WIDTH)
    # Rank s weights the gathered rows by s + 1, so each row's gradient sums to 1 + 2 = 3 times.
    grad_factor = sum(rank + 1 for rank in range(WORLD_SIZE))
    for rank, result in enumerate(dist_results):
        start = sum(GATHER_ROWS[:rank])
        torch.testing.assert_close(result['gather']['gathered'], values, atol=0, rtol=0)
        assert result['gather']['offset'] == start
        torch.testing.assert_close(result['gather']['grad'],
                                   grad_factor * values[start:start + GATHER_ROWS[rank]])
