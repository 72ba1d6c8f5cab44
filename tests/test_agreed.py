"""Modality.agreed: the value many draws of the code agree on (captions and classes generated
from the conditional prior)."""
import pytest
import torch
from torch import nn

from omnivae.modalities.categorical import CategoricalModality, CategoricalSpec
from omnivae.modalities.text import TextModality, TextSpec

CAPTIONS = ["a thin seven", "a thick two, slanted left", "an upright four", "nine"]
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny networks run fastest on one thread


def text(decoder: str) -> TextModality:
    torch.manual_seed(1)
    return TextModality.from_data("caption", TextSpec(decoder=decoder, max_len=8, embed_dim=16, hidden=32),
                                  4, CAPTIONS).eval()


def label(classes: int = 3) -> CategoricalModality:
    torch.manual_seed(0)
    return CategoricalModality("label", CategoricalSpec(num_classes=classes, hidden=[8]), 4).eval()


def by_hand(mod, z: torch.Tensor) -> torch.Tensor:
    """The definition, one value at a time: each draw's decode, scored by its mean log-likelihood
    under every draw of the same value; the best one."""
    k, n = z.shape[:2]
    out = []
    with torch.no_grad():
        for i in range(n):
            cands = mod.generate(z[:, i])  # [K, ...]: draw j's decode
            scores = [float(mod.log_likelihood(z[:, i:i + 1], cands[j:j + 1]).mean()) for j in range(k)]
            out.append(cands[max(range(k), key=scores.__getitem__)])
    return torch.stack(out)


@pytest.mark.parametrize("make", [lambda: text("gru"), lambda: text("transformer"), label],
                         ids=["gru", "transformer", "label"])
def test_agreed_is_the_decode_the_draws_find_likeliest(make):
    mod = make()
    z = torch.randn(5, 7, 4) * 2
    with torch.no_grad():
        got = mod.agreed(z)
        chunked = mod.agreed(z, rows=10)  # two values scored at a time
    expected = by_hand(mod, z)
    assert torch.equal(got, expected) and torch.equal(chunked, expected)
    first = mod.generate(z[0])
    assert not torch.equal(got, first)  # else the test could not tell agreement from the first draw


def test_a_lone_draw_is_outvoted():
    """Class 0 when z[0] > 0, class 1 when below: four draws above zero and one below give class 0,
    whichever draw comes first."""
    mod = label(2)
    mod.decoder = nn.Linear(4, 2)
    with torch.no_grad():
        mod.decoder.weight.zero_()
        mod.decoder.weight[0, 0], mod.decoder.weight[1, 0] = 4.0, -4.0
        mod.decoder.bias.zero_()
    z = torch.zeros(5, 3, 4)
    z[:, :, 0] = torch.tensor([-1.0, 1.0, 1.0, 0.5, 2.0])[:, None]  # draw 0 alone says class 1
    assert mod.generate(z[0]).tolist() == [1, 1, 1]
    assert mod.agreed(z).tolist() == [0, 0, 0]
    z[:, :, 0] *= -1
    assert mod.agreed(z).tolist() == [1, 1, 1]


def test_sampling_decodes_one_draw():
    """Asked to sample, a caption or class is a sample from the first draw's code: samples are meant
    to vary, so no agreement is sought."""
    z = torch.randn(6, 5, 4)
    for mod, options in [(text("gru"), {"strategy": "sample"}), (text("gru"), {"sample": True}),
                         (label(), {"sample": True})]:
        torch.manual_seed(1)
        got = mod.agreed(z, **options)
        torch.manual_seed(1)
        assert torch.equal(got, mod.generate(z[0], **options))
