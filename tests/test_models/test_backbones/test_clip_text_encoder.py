# Copyright (c) mmclim contributors. All rights reserved.
from pathlib import Path

import open_clip
import pytest
import torch

from mmclim.models.backbones import CLIPTextEncoder, save_clip_checkpoint


def test_embeddings_are_open_clips_and_frozen(tmp_path: Path) -> None:
    reference = open_clip.create_model('mmclim-tiny-vit', pretrained=None).eval()
    checkpoint = tmp_path / 'tiny.pt'
    save_clip_checkpoint(reference, str(checkpoint), dtype=torch.float32)
    encoder = CLIPTextEncoder('mmclim-tiny-vit', pretrained=str(checkpoint), batch_size=2)
    encoder.train()  # stays in eval mode
    assert not encoder.training and encoder.embed_dim == 32
    assert not any(p.requires_grad for p in encoder.parameters())
    texts = ['a red circle', 'a photo of a dog', 'two cats']  # two forward batches
    tokens = open_clip.get_tokenizer('mmclim-tiny-vit')(texts)
    with torch.no_grad():
        expected = reference.encode_text(tokens, normalize=True)
    embeddings = encoder(texts)
    assert torch.allclose(embeddings, expected, atol=1e-6)
    assert embeddings.grad_fn is None and encoder(texts[:0]).shape == (0, 32)
    # The image tower is gone.
    assert not any(name.startswith('clip.visual.') for name, _ in encoder.named_parameters())
    with pytest.raises(ValueError, match='texts: expected a list of str'):
        encoder('a red circle')
