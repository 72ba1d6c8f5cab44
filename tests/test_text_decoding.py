"""Decoding strategies: determinism, reproducible sampling, beam search against greedy and brute force."""
import itertools

import pytest
import torch

from omnivae.modalities.text import TextModality, TextSpec
from omnivae.modalities.text import decoding
from omnivae.modalities.text.tokenizer import EOS, PAD, UNK

CAPTIONS = ["a red circle", "a blue square", "the small green triangle", "one big yellow star"]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run far faster on one thread than with threading overhead on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make(decoder="gru", max_len=8, captions=CAPTIONS, seed=0):
    torch.manual_seed(seed)
    spec = TextSpec(decoder=decoder, max_len=max_len, embed_dim=16, hidden=32)
    return TextModality.from_data("caption", spec, 4, captions).eval()


def log_prob(m, z, ids):
    with torch.no_grad():
        return m.log_likelihood(z[None], ids)[0]


@pytest.fixture(params=["gru", "transformer"])
def model(request):
    return make(request.param)


def test_greedy_is_deterministic_and_padded(model):
    z = torch.randn(16, 4)
    ids = model.generate(z)
    assert torch.equal(ids, model.generate(z))
    model.check(ids)
    after_eos = torch.cumsum(ids == EOS, 1) - (ids == EOS).long() > 0
    assert (ids[after_eos] == PAD).all()


def test_batched_generation_matches_one_at_a_time(model):
    z = torch.randn(5, 4)
    for strategy in ["greedy", "beam"]:
        together = model.generate(z, strategy=strategy)
        alone = torch.cat([model.generate(z[i:i + 1], strategy=strategy) for i in range(5)])
        assert torch.equal(together, alone)


def test_sampling_is_reproducible_and_top1_is_greedy(model):
    z = torch.randn(16, 4)
    torch.manual_seed(1)
    a = model.generate(z, strategy="sample", temperature=2.0)
    torch.manual_seed(1)
    assert torch.equal(a, model.generate(z, strategy="sample", temperature=2.0))
    g = torch.Generator().manual_seed(3)
    b = model.generate(z, strategy="sample", generator=g)
    assert torch.equal(b, model.generate(z, strategy="sample", generator=torch.Generator().manual_seed(3)))
    assert not torch.equal(model.generate(z, strategy="sample", temperature=5.0), model.generate(z))
    assert torch.equal(model.generate(z, strategy="sample", top_k=1, temperature=3.0), model.generate(z))
    assert torch.equal(model.generate(z, sample=True, top_k=1), model.generate(z))


def test_beam_of_one_is_greedy(model):
    z = torch.randn(16, 4)
    pure = decoding.beam_search(model.decoder, z, 8, 8, beam_size=1, keep_greedy=False)
    assert torch.equal(pure, model.generate(z))
    assert torch.equal(model.generate(z, strategy="beam", beam_size=1), model.generate(z))


@pytest.mark.parametrize("beam_size", [2, 4, 8])
def test_beam_scores_at_least_greedy(model, beam_size):
    z = torch.randn(32, 4)
    beam = model.generate(z, strategy="beam", beam_size=beam_size)
    model.check(beam)
    assert (log_prob(model, z, beam) >= log_prob(model, z, model.generate(z)) - 1e-5).all()


def test_wide_beam_finds_the_most_probable_caption():
    """With a beam as wide as all prefixes, beam search is exact: compare with brute force."""
    m = make(max_len=3, captions=["red blue green"])
    assert m.spec.vocab_size == 7  # the model can emit <unk>, <eos> and ids 4..6
    z, choices = torch.randn(6, 4), [UNK, 4, 5, 6]
    rows = ([[EOS, PAD, PAD]] + [[a, EOS, PAD] for a in choices]
            + [[a, b, EOS] for a, b in itertools.product(choices, choices)])
    every = torch.tensor(rows)
    scores = torch.stack([log_prob(m, z, every[i].expand(6, -1)) for i in range(len(rows))], 1)
    beam = decoding.beam_search(m.decoder, z, 3, 3, beam_size=len(rows), keep_greedy=False)
    assert torch.allclose(log_prob(m, z, beam), scores.max(1).values)
    assert (torch.logsumexp(scores, 1) < 0).all()  # the rest of the mass is on longer captions
