"""End-to-end caption quality after a short training on the built-in shapes data: the caption
decoder uses z (different images give different captions, with attributes far above chance),
and padding never changes a trained model's loss."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from omnivae.data.shapes import parse_caption
from omnivae.data.tensors import TensorData
from omnivae.metrics.captions import attribute_accuracy
from omnivae.metrics.collapse import caption_sensitivity
from omnivae.modalities.text.tokenizer import EOS, PAD
from omnivae.run import train_run

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def config(level: str, n: int, epochs: int, text: dict) -> dict:
    return {"data": {"source": "shapes", "options": {"n": n, "level": level, "seed": 0}, "test_fraction": 0.15},
            "model": {"model": "mopoe", "latent_dim": 8, "modalities": {
                "image": {"channels": [8, 16, 32]},
                "text": {"max_len": 10, "hidden": 64, "embed_dim": 32, **text}}},
            "train": {"max_epochs": epochs, "max_minutes": 1.0, "batch_size": 32, "lr": 3e-3, "patience": None,
                      "progress": False, "tensorboard": False, "num_threads": 1, "val_fraction": 0.05}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.manual_seed(0)
    return train_run(config("easy", 1500, 8, {}), tmp_path_factory.mktemp("quality") / "easy", overwrite=True)


def test_captions_depend_on_the_image(trained):
    model, test = trained.model, trained.splits.test
    data = TensorData.from_raw(model, test)
    captions = model.generate(data.batch(), given=["image"], targets=["text"], mean=True)["text"]
    truth = {a: test.targets[a] for a in ("shape", "color")}
    acc = attribute_accuracy(captions, truth, lambda t: parse_caption(t, "easy"))
    assert len(set(captions)) > 1
    assert acc["all"] > 0.7, (acc, captions[:10])  # chance: 1/12
    assert acc["shape"] > 0.8 and acc["color"] > 0.8, acc
    z = model.encode(data.batch(), given=["image"])
    assert caption_sensitivity(model, "text", z) > 4 / len(z)  # many captions, not one for all z


def with_noisy_padding(x: torch.Tensor, vocab: int, seed: int = 0) -> torch.Tensor:
    """The same captions with every position after <eos> replaced by a random token."""
    gen = torch.Generator().manual_seed(seed)
    after = torch.arange(x.shape[1]) > (x == EOS).long().argmax(1, keepdim=True)
    noise = torch.randint(4, vocab, x.shape, generator=gen)
    return torch.where(after, noise, x)


def text_losses(model, batch, seed: int = 0) -> torch.Tensor:
    """Per-example text terms at fixed noise: -log p(caption | z) and the text posterior's KL."""
    torch.manual_seed(seed)
    text = model.modalities["text"]
    q = text.encode(batch.data["text"])
    z = q.rsample(1)
    return torch.stack([-text.log_likelihood(z, batch.data["text"])[0], q.kl_standard()])


@pytest.mark.parametrize("kind", ["gru", "transformer"])
def test_padding_never_changes_the_loss(trained, tmp_path, kind):
    run = trained
    if kind == "transformer":  # medium captions: three templates of different lengths
        torch.manual_seed(0)
        run = train_run(config("medium", 300, 1, {"encoder": "transformer", "decoder": "transformer"}),
                        tmp_path / kind, overwrite=True)
    model = run.model.eval()
    data = TensorData.from_raw(model, run.splits.train)
    batch = data.batch(torch.arange(40))
    x = batch.data["text"]
    assert (x == PAD).any()
    with torch.no_grad():
        base = text_losses(model, batch)
        noisy = type(batch)({**batch.data, "text": with_noisy_padding(x, model.modalities["text"].spec.vocab_size)})
        assert torch.allclose(text_losses(model, noisy), base, atol=1e-4)
        torch.manual_seed(1)
        full = model.loss(batch).total
        torch.manual_seed(1)
        assert torch.allclose(model.loss(noisy).total, full, atol=1e-4)
        # a caption's terms do not depend on how long the others in its batch are
        lengths = (x != PAD).sum(1)
        short = int(lengths.argmin())
        alone = type(batch)({"text": x[short:short + 1].expand(len(x), -1)})
        assert torch.allclose(text_losses(model, alone)[:, short], base[:, short], atol=1e-4)
    assert np.isfinite(float(full))
