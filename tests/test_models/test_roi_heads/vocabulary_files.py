# Copyright (c) mmclim contributors. All rights reserved.
"""Test vocabularies: random class embeddings with their sidecar, and a split file."""
from pathlib import Path
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F

from mmclim.structures import save_class_embeddings, split_record, write_split_file

# The open_clip model the test embeddings claim to come from.
TEST_MODEL = 'mmclim-tiny-vit12'


def write_vocabulary(folder: Path, num_classes: int, embed_dim: int, novel_labels: Sequence[int],
                     model_name: str = TEST_MODEL) -> Tuple[str, str]:
    """Write random unit class embeddings of shape (num_classes, embed_dim) made "with"
    ``model_name``, and a split file whose category ids are 10, 20, ... (label i is id
    10 * (i + 1)), named ``class_<i>``.

    Returns:
        Tuple[str, str]: The ``.npy`` and split ``.json`` paths.
    """
    generator = torch.Generator().manual_seed(0)
    embeddings = F.normalize(torch.randn(num_classes, embed_dim, generator=generator), dim=-1)
    embeddings_file = str(folder / f'embeddings_{num_classes}x{embed_dim}_{model_name}.npy')
    save_class_embeddings(embeddings_file, embeddings, model_name)
    names = {10 * (label + 1): f'class_{label}' for label in range(num_classes)}
    split_file = str(folder / f'split_{num_classes}.json')
    write_split_file(split_file, split_record(
        names, [10 * (label + 1) for label in range(num_classes) if label not in novel_labels],
        [10 * (label + 1) for label in novel_labels], 'test'))
    return embeddings_file, split_file
