"""Text networks: shapes, padding masking, word dropout, saving, and a small overfit."""
import pytest
import torch
import torch.nn.functional as F

from omnivae.errors import InputError
from omnivae.modalities.text import TextModality, TextSpec
from omnivae.modalities.text.tokenizer import EOS, PAD

CAPTIONS = ["a red circle", "a blue square", "the small green triangle", "one big yellow star"]
ARCHS = [("gru", "gru"), ("transformer", "transformer"), ("gru", "transformer"), ("transformer", "gru")]


def make(encoder="gru", decoder="gru", latent_dim=4, **spec):
    spec = TextSpec(encoder=encoder, decoder=decoder, max_len=8, embed_dim=16, hidden=32, **spec)
    return TextModality.from_data("caption", spec, latent_dim, CAPTIONS)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run far faster on one thread than with threading overhead on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("encoder, decoder", ARCHS)
def test_shapes(encoder, decoder):
    torch.manual_seed(0)
    m = make(encoder, decoder, layers=2)
    x = m.prepare(CAPTIONS[:3])
    q = m.encode(x)
    assert q.mu.shape == q.logvar.shape == (3, 4)
    ll = m.log_likelihood(torch.randn(5, 3, 4), x)
    assert ll.shape == (5, 3) and torch.isfinite(ll).all() and (ll < 0).all()
    for strategy in ["greedy", "sample", "beam"]:
        ids = m.generate(torch.randn(6, 4), strategy=strategy)
        assert ids.shape == (6, 8) and ids.dtype == torch.long
        m.check(ids)
        assert m.encode(ids).mu.shape == (6, 4)  # generated captions feed back into the encoder


@pytest.mark.parametrize("encoder, decoder", ARCHS[:2])
def test_padding_and_junk_after_eos_never_matter(encoder, decoder):
    torch.manual_seed(0)
    m = make(encoder, decoder).eval()
    x = torch.tensor([[5, 6, 7, EOS, PAD, PAD, PAD, PAD], [8, EOS, PAD, PAD, PAD, PAD, PAD, PAD]])
    junk = x.clone()
    junk[0, 4:] = torch.tensor([9, EOS, 5, 6])
    junk[1, 2:] = 7
    z = torch.randn(3, 2, 4)
    ll = m.log_likelihood(z, x)
    assert torch.allclose(m.log_likelihood(z, junk), ll)
    assert torch.allclose(m.log_likelihood(z, F.pad(x, (0, 5))), ll)
    assert torch.allclose(m.encode(junk).mu, m.encode(x).mu, atol=1e-6)
    changed = x.clone()
    changed[0, 2] = 9  # a real token does matter
    assert not torch.allclose(m.log_likelihood(z, changed)[:, 0], ll[:, 0])


def test_loss_is_sum_over_tokens_up_to_eos():
    torch.manual_seed(0)
    m = make().eval()
    x, z = m.prepare(["a red circle"]), torch.randn(1, 4)
    logits = m.decoder(torch.tensor([[2, *x[0, :3].tolist()]]), z)
    expected = torch.log_softmax(logits, -1)[0, torch.arange(4), x[0, :4]].sum()
    assert torch.allclose(m.log_likelihood(z[None], x)[0, 0], expected)


def test_word_dropout_only_in_training():
    torch.manual_seed(0)
    m = make(word_dropout=0.5)
    x, z = m.prepare(CAPTIONS), torch.randn(1, 4, 4)
    with torch.no_grad():
        assert len({m.log_likelihood(z, x).sum().item() for _ in range(5)}) > 1
        m.eval()
        assert len({m.log_likelihood(z, x).sum().item() for _ in range(5)}) == 1


@pytest.mark.parametrize("decoder", ["gru", "transformer"])
def test_gradients_are_finite(decoder):
    m = make(decoder=decoder)
    x = m.prepare(CAPTIONS)
    q = m.encode(x)
    (-m.log_likelihood(q.rsample(2), x).mean()).backward()
    grads = [p.grad for p in m.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_rebuilt_from_files_scores_identically(tmp_path):
    torch.manual_seed(0)
    m = make("transformer", "gru").eval()
    for fname, text in m.extra_files().items():
        (tmp_path / fname).write_text(text)
    rebuilt = TextModality("caption", TextSpec.from_dict(m.spec.to_dict()), 4)
    rebuilt.load_extra_files(tmp_path)
    rebuilt.load_state_dict(m.state_dict())
    rebuilt.eval()
    x, z = m.prepare(CAPTIONS), torch.randn(2, 4, 4)
    assert torch.equal(rebuilt.prepare(CAPTIONS), x)
    assert torch.allclose(rebuilt.log_likelihood(z, x), m.log_likelihood(z, x))


def test_generate_options():
    torch.manual_seed(0)
    m = make()
    z = torch.randn(5, 4)
    short = m.generate(z, max_len=3)
    assert short.shape == (5, 8) and (short[:, 3:] == PAD).all() and (short == EOS).any(1).all()
    texts = m.generate_text(z, strategy="beam", beam_size=2)
    assert isinstance(texts, list) and len(texts) == 5 and all(isinstance(t, str) for t in texts)
    assert m.generate(z, return_ids=False) == m.to_output(m.generate(z))
    assert m.training  # generate restores the training mode it found
    for bad in [dict(strategy="nucleus"), dict(temperature=0.0), dict(max_len=9), dict(max_len=0),
                dict(beam_size=0), dict(top_k=-1)]:
        with pytest.raises(ValueError):
            m.generate(z, **bad)
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        m.generate(torch.randn(5, 3))


def test_bad_specs_are_refused():
    with pytest.raises(InputError, match="divisible"):
        make("transformer", "gru", heads=3)
    with pytest.raises(InputError, match="max_len"):
        TextModality.from_data("caption", TextSpec(max_len=1), 4, CAPTIONS)


@pytest.mark.parametrize("decoder", ["gru", "transformer"])
def test_each_code_decodes_to_its_own_caption(decoder):
    """A decoder fitted on 4 captions with 4 fixed codes reproduces each one: z steers the caption."""
    torch.manual_seed(0)
    m = make(decoder=decoder)
    x, z = m.prepare(CAPTIONS), 2.0 * torch.eye(4)
    opt = torch.optim.Adam(m.decoder.parameters(), lr=1e-2)
    for _ in range(150):
        loss = -m.log_likelihood(z[None], x).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert m.generate_text(z) == CAPTIONS
    assert m.generate_text(z, strategy="beam") == CAPTIONS
    assert m.generate_text(z.flip(0)) == CAPTIONS[::-1]
