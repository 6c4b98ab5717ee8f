# Copyright (c) mmclim contributors. All rights reserved.
from pathlib import Path
from typing import List

import open_clip
import pytest
import torch
import torch.nn.functional as F

from mmclim.models.backbones import CLIPTextEncoder, save_clip_checkpoint
from mmclim.models.backbones.clip_text_encoder import TEXT_OUTPUTS


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


# BARON's pseudo words (Wu et al., CVPR 2023) on the bundled toy tower: context 16, width 96,
# embed_dim 64. The references are open_clip's own CLIP.encode_text and a forward hook on the
# last transformer block, never the code under test.
TOY_VIT = 'mmclim-toy-vit'
TOY_CONTEXT, TOY_WIDTH, TOY_EMBED = 16, 96, 64
ATOL = 1e-5


@pytest.fixture(scope='module')
def toy() -> CLIPTextEncoder:
    torch.manual_seed(7)
    return CLIPTextEncoder(TOY_VIT)


def _tokens(encoder: CLIPTextEncoder, ids: List[int]) -> torch.Tensor:
    """A (1, context) token tensor built by hand: SOT, ``ids``, EOT, zero padding."""
    row = [encoder.sot_token_id, *ids, encoder.eot_token_id]
    return torch.tensor([row + [0] * (TOY_CONTEXT - len(row))])


def _word_ids(encoder: CLIPTextEncoder, caption: str) -> List[int]:
    """The ids of the tokenizer's word tokens of a caption (between its SOT and EOT)."""
    tokens = encoder.tokenizer([caption])[0]
    end = int(tokens.argmax())
    assert int(tokens[0]) == encoder.sot_token_id and int(tokens[end]) == encoder.eot_token_id
    return tokens[1:end].tolist()


def _last_block_reference(clip: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """The EOT row of the last resblock's output during open_clip's encode_text, normalised."""
    captured = []
    handle = clip.transformer.resblocks[-1].register_forward_hook(
        lambda module, args, out: captured.append(out))
    try:
        with torch.no_grad():
            clip.encode_text(tokens)
    finally:
        handle.remove()
    assert clip.transformer.batch_first  # the hook's output is (N, L, W)
    out = captured[0]
    return F.normalize(out[torch.arange(len(tokens)), tokens.argmax(dim=-1)], dim=-1)


def test_sizes_of_the_toy_tower(toy: CLIPTextEncoder) -> None:
    assert TEXT_OUTPUTS == ('projection', 'last_block')
    assert (toy.word_dim, toy.context_length, toy.embed_dim) == (TOY_WIDTH, TOY_CONTEXT,
                                                                 TOY_EMBED)
    assert toy.output_dim('projection') == TOY_EMBED
    assert toy.output_dim('last_block') == TOY_WIDTH
    with pytest.raises(ValueError, match=r"output: expected one of .*, got 'attn12'"):
        toy.output_dim('attn12')


def test_token_embeddings_give_open_clips_text_embedding(toy: CLIPTextEncoder) -> None:
    clip = toy.clip
    tokens = toy.tokenizer(['a red circle', 'a photo of a dog', 'two cats'])
    with torch.no_grad():
        expected = clip.encode_text(tokens, normalize=True)
        embeddings = toy.encode_token_embeddings(clip.token_embedding(tokens),
                                                 tokens.argmax(dim=-1))
    torch.testing.assert_close(embeddings, expected, atol=ATOL, rtol=ATOL)
    raw = toy.encode_token_embeddings(clip.token_embedding(tokens), tokens.argmax(dim=-1),
                                      normalize=False)
    torch.testing.assert_close(raw, clip.encode_text(tokens), atol=ATOL, rtol=ATOL)


def test_real_words_as_pseudo_words_give_the_caption(toy: CLIPTextEncoder) -> None:
    clip = toy.clip
    caption = 'a photo of a small dog'
    ids = _word_ids(toy, caption)
    num_words = len(ids)
    words = clip.token_embedding(torch.tensor([ids])).detach()  # (1, K, W)
    with torch.no_grad():
        expected = clip.encode_text(toy.tokenizer([caption]), normalize=True)
        torch.testing.assert_close(toy.encode_pseudo_words(words), expected, atol=ATOL,
                                   rtol=ATOL)
        # Dropping words: the caption re-tokenised from the kept tokens only.
        keep = torch.tensor([[index % 2 == 0 for index in range(num_words)]])
        kept_ids = [i for i, kept in zip(ids, keep[0].tolist()) if kept]
        expected = clip.encode_text(_tokens(toy, kept_ids), normalize=True)
        torch.testing.assert_close(toy.encode_pseudo_words(words, keep), expected, atol=ATOL,
                                   rtol=ATOL)


def test_pseudo_word_rows_are_independent(toy: CLIPTextEncoder) -> None:
    """Rows of different lengths in one call: a row's dropped words, random or not, do not
    change it, and each row equals its caption built by hand."""
    clip = toy.clip
    captions = ['two cats', 'a photo of a red circle', 'a dog on the grass']
    ids = [_word_ids(toy, caption) for caption in captions]
    num_words = max(len(row) for row in ids) + 2
    generator = torch.Generator().manual_seed(0)
    words = torch.randn(len(captions), num_words, TOY_WIDTH, generator=generator)
    keep = torch.zeros(len(captions), num_words, dtype=torch.bool)
    # Row 0 at the front, row 1 after two random words, row 2 with a random word inside.
    slots = [list(range(len(ids[0]))), [s + 2 for s in range(len(ids[1]))],
             [0, 1, *range(3, len(ids[2]) + 1)]]
    for row, (row_ids, row_slots) in enumerate(zip(ids, slots)):
        words[row, row_slots] = clip.token_embedding(torch.tensor(row_ids)).detach()
        keep[row, row_slots] = True
    with torch.no_grad():
        expected = torch.cat([clip.encode_text(_tokens(toy, row_ids), normalize=True)
                              for row_ids in ids])
        for output in TEXT_OUTPUTS:
            embeddings = toy.encode_pseudo_words(words, keep, output=output)
            if output == 'projection':
                torch.testing.assert_close(embeddings, expected, atol=ATOL, rtol=ATOL)
            else:
                reference = torch.cat([_last_block_reference(clip, _tokens(toy, row_ids))
                                       for row_ids in ids])
                torch.testing.assert_close(embeddings, reference, atol=ATOL, rtol=ATOL)


def test_last_block_is_the_eot_token_after_the_last_block(toy: CLIPTextEncoder) -> None:
    clip = toy.clip
    texts = ['a red circle', 'a photo of a dog', 'two cats']
    tokens = toy.tokenizer(texts)
    expected = _last_block_reference(clip, tokens)
    assert expected.shape == (3, TOY_WIDTH)
    embeddings = toy(texts, output='last_block')
    assert embeddings.shape == (3, TOY_WIDTH) and embeddings.grad_fn is None
    torch.testing.assert_close(embeddings, expected, atol=ATOL, rtol=ATOL)
    with torch.no_grad():
        from_embeddings = toy.encode_token_embeddings(clip.token_embedding(tokens),
                                                      tokens.argmax(dim=-1), output='last_block')
    torch.testing.assert_close(from_embeddings, expected, atol=ATOL, rtol=ATOL)
    # Not CLIP's text embedding: another size, and not ln_final of it.
    assert toy(texts).shape == (3, TOY_EMBED)
    with torch.no_grad():
        ln_final = F.normalize(clip.ln_final(expected), dim=-1)
    assert not torch.allclose(ln_final, expected, atol=1e-3)


def test_gradients_reach_the_words_not_the_tower(toy: CLIPTextEncoder) -> None:
    generator = torch.Generator().manual_seed(1)
    words = torch.randn(2, 4, TOY_WIDTH, generator=generator, requires_grad=True)
    keep = torch.tensor([[True, False, True, True], [False, False, True, False]])
    for output in TEXT_OUTPUTS:
        words.grad = None
        toy.encode_pseudo_words(words, keep, output=output).sum().backward()
        assert words.grad is not None
        used = words.grad.abs().sum(dim=-1) > 0
        assert torch.equal(used, keep)  # dropped words take no part
    assert all(param.grad is None and not param.requires_grad for param in toy.parameters())
    tokens = toy.tokenizer(['two cats'])
    embeddings = toy.clip.token_embedding(tokens).detach().requires_grad_(True)
    toy.encode_token_embeddings(embeddings, tokens.argmax(dim=-1)).sum().backward()
    assert embeddings.grad is not None and embeddings.grad.abs().sum() > 0
    assert all(param.grad is None for param in toy.parameters())


def test_pseudo_word_and_token_embedding_errors(toy: CLIPTextEncoder) -> None:
    words = torch.zeros(2, 3, TOY_WIDTH)
    with pytest.raises(ValueError, match=r'num_words K=15 plus SOT and EOT exceeds the context '
                                         r'length 16'):
        toy.encode_pseudo_words(torch.zeros(1, TOY_CONTEXT - 1, TOY_WIDTH))
    toy.encode_pseudo_words(torch.zeros(1, TOY_CONTEXT - 2, TOY_WIDTH))  # the most that fit
    with pytest.raises(ValueError, match=r'keep: every row must keep at least one word; rows '
                                         r'\[1\] keep none'):
        toy.encode_pseudo_words(words, torch.tensor([[True, False, False], [False] * 3]))
    with pytest.raises(ValueError, match=r'keep: expected a bool tensor of shape \(2, 3\)'):
        toy.encode_pseudo_words(words, torch.ones(2, 3))
    with pytest.raises(ValueError, match=r'words: expected shape \(N, K, 96\)'):
        toy.encode_pseudo_words(torch.zeros(2, 3, TOY_EMBED))
    with pytest.raises(ValueError, match=r"output: expected one of .*, got 'attn12'"):
        toy.encode_pseudo_words(words, output='attn12')
    with pytest.raises(ValueError, match=r"output: expected one of .*, got 'attn12'"):
        toy(['two cats'], output='attn12')
    with pytest.raises(ValueError, match='embeddings: 17 tokens exceed the context length 16'):
        toy.encode_token_embeddings(torch.zeros(1, TOY_CONTEXT + 1, TOY_WIDTH),
                                    torch.tensor([3]))
    with pytest.raises(ValueError, match=r'eot_index: expected an integer tensor of shape '
                                         r'\(2,\)'):
        toy.encode_token_embeddings(words, torch.tensor([1]))
    with pytest.raises(ValueError, match=r'eot_index: expected positions in \[0, 3\)'):
        toy.encode_token_embeddings(words, torch.tensor([1, 3]))
    with pytest.raises(ValueError, match=r"output: expected one of .*, got 'attn12'"):
        toy.encode_token_embeddings(words, torch.tensor([1, 2]), output='attn12')
