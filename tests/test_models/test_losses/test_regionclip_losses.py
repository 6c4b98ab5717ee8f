# Copyright (c) mmclim contributors. All rights reserved.
"""RegionCLIP's region-concept contrastive and distillation losses on hand-worked examples."""
import math

import pytest
import torch

from mmclim.models.losses import (ConceptDistillLoss, RegionConceptLoss, concept_distillation_loss,
                                  region_concept_contrastive_loss)

E2 = math.exp(2.0)


def test_region_concept_loss_sums_the_softmax_over_every_column_of_the_row_concept() -> None:
    # Regions (1,0), (0,1) and (1,0) (the first scaled: features are normalised), labelled with
    # concepts 0, 1, 0 whose embeddings are (1,0) and (0,1); temperature 0.5.
    regions = torch.tensor([[3.0, 0.0], [0.0, 1.0], [1.0, 0.0]], dtype=torch.float64,
                           requires_grad=True)
    concepts = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    labels = torch.tensor([0, 1, 0])
    loss = region_concept_contrastive_loss(regions, concepts, labels, temperature=0.5)
    # Row 0: logits (2, 0, 2), positives columns 0 and 2: -log(2e^2 / (2e^2 + 1)); row 2 too.
    # Row 1: logits (0, 2, 0), positive column 1: -log(e^2 / (e^2 + 2)).
    expected = (2 * math.log(1 + 1 / (2 * E2)) + math.log(1 + 2 / E2)) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert regions.grad.abs().sum() > 0


def test_region_concept_loss_module_weights_and_empty_batch() -> None:
    regions = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    concepts = regions.clone()
    labels = torch.tensor([0, 1])
    # Two distinct concepts at temperature 1: each row -log(e / (e + 1)).
    expected = math.log(1 + math.exp(-1))
    module = RegionConceptLoss(temperature=1.0, loss_weight=2.0)
    assert module(regions, concepts, labels).item() == pytest.approx(2 * expected, rel=1e-6)
    empty = torch.zeros(0, 2, requires_grad=True)
    zero = module(empty, torch.zeros(0, 2), torch.zeros(0, dtype=torch.int64))
    assert zero.item() == 0 and zero.requires_grad
    with pytest.raises(ValueError, match='labels'):
        module(regions, concepts, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match='temperature'):
        RegionConceptLoss(temperature=0)


def test_distillation_is_kl_from_teacher_to_student_per_region() -> None:
    pool = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    regions = torch.tensor([[1.0, 0.0], [0.0, 2.0]], requires_grad=True)
    teacher = torch.tensor([[0.5, 0.5], [1.0, 0.0]])
    loss = concept_distillation_loss(regions, pool, teacher, temperature=1.0)
    # Region 0: student q = (e, 1) / (e + 1) against p = (1/2, 1/2);
    # region 1: q = (1, e) / (1 + e) against p = (1, 0): KL = log(1 + e). Mean of the two.
    q0 = (math.e / (math.e + 1), 1 / (math.e + 1))
    kl0 = 0.5 * math.log(0.5 / q0[0]) + 0.5 * math.log(0.5 / q0[1])
    expected = (kl0 + math.log(1 + math.e)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert regions.grad.abs().sum() > 0
    assert ConceptDistillLoss(temperature=1.0, loss_weight=3.0)(
        regions, pool, teacher).item() == pytest.approx(3 * expected, rel=1e-6)
    # A student equal to the teacher distills nothing.
    cosines = torch.nn.functional.normalize(regions.detach(), dim=1) @ pool.t()
    same = concept_distillation_loss(regions, pool, cosines.softmax(dim=1), 1.0)
    assert same.item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match='teacher_probs'):
        concept_distillation_loss(regions, pool, teacher[:1])


def _gathered_rank(rank: int, init_file: str, out_dir: str) -> None:
    """Rank 0 holds region (1,0) of concept 0; rank 1 regions (0,1) and (1,0) of concepts 1, 0."""
    import torch.distributed as dist
    dist.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank, world_size=2)
    rows = ([[1.0, 0.0]], [0]) if rank == 0 else ([[0.0, 1.0], [1.0, 0.0]], [1, 0])
    regions = torch.tensor(rows[0], dtype=torch.float64)
    labels = torch.tensor(rows[1])
    loss = region_concept_contrastive_loss(regions, regions.clone(), labels, 1.0, gather=True)
    torch.save(loss, f'{out_dir}/rank{rank}.pt')
    dist.destroy_process_group()


def test_gathered_negatives_come_from_every_rank(tmp_path) -> None:
    from conftest import fork_process, join_process
    processes = [fork_process(_gathered_rank, rank, str(tmp_path / 'init'), str(tmp_path))
                 for rank in range(2)]
    assert [join_process(process) for process in processes] == [0, 0]
    # The columns of both ranks: concepts (1,0), (0,1), (1,0) with labels 0, 1, 0, temperature 1.
    # Rank 0: logits (1, 0, 1), positives 0 and 2. Rank 1: (0, 1, 0) with positive 1, and a row
    # like rank 0's. Alone, rank 0's loss would be 0 (its one column is its positive).
    row_0 = math.log(1 + 1 / (2 * math.e))
    row_1 = math.log(1 + 2 / math.e)
    assert torch.load(tmp_path / 'rank0.pt').item() == pytest.approx(row_0, rel=1e-9)
    assert torch.load(tmp_path / 'rank1.pt').item() == pytest.approx((row_1 + row_0) / 2,
                                                                     rel=1e-9)
