# Copyright (c) mmclim contributors. All rights reserved.
"""Test vocabularies: random class-name embeddings and an open-vocabulary split file."""
import json
from pathlib import Path
from typing import Sequence, Tuple

import numpy as np


def write_vocabulary(folder: Path, num_classes: int, embed_dim: int,
                     novel_labels: Sequence[int]) -> Tuple[str, str]:
    """Write random unit text embeddings of shape (num_classes, embed_dim) and a split file
    whose category ids are 10, 20, ... (label i is id 10 * (i + 1)).

    Returns:
        Tuple[str, str]: The ``.npy`` and split ``.json`` paths.
    """
    embeddings = np.random.RandomState(0).randn(num_classes, embed_dim).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    embeddings_file = folder / f'embeddings_{num_classes}x{embed_dim}.npy'
    np.save(embeddings_file, embeddings)
    ids = [10 * (label + 1) for label in range(num_classes)]
    split_file = folder / f'split_{num_classes}.json'
    split_file.write_text(json.dumps(dict(
        base_category_ids=[i for label, i in enumerate(ids) if label not in novel_labels],
        novel_category_ids=[ids[label] for label in novel_labels])))
    return str(embeddings_file), str(split_file)
