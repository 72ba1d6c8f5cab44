"""Scoring what inputs leave open: coherence counts only the attributes the given modalities
determine and the target expresses; diversity counts distinct values of the open ones;
sharpness drops with blur."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from omnivae.errors import InputError
from omnivae.metrics.coherence import accuracy, required_attributes
from omnivae.metrics.samples import laplacian_sharpness


def test_an_attribute_the_caption_leaves_open_is_not_scored():
    truth = {"shape": torch.tensor([0, 1, 2]), "position": torch.tensor([3, 3, 3])}
    pred = {"shape": torch.tensor([0, 1, 2]), "position": torch.tensor([0, 1, 2])}  # positions all differ
    caption = {"shape": torch.tensor([0, 1, 2]), "position": torch.tensor([-1, -1, -1])}  # never named
    required = required_attributes([caption], pred, {})
    out = accuracy(pred, truth, required)
    assert out["all"] == 1.0 and out["shape"] == 1.0 and math.isnan(out["position"])
    assert accuracy(pred, truth)["all"] == 0.0  # scoring every attribute calls them all wrong


def test_a_named_attribute_must_be_right():
    truth = {"size": torch.tensor([0, 1, 0, 1])}
    caption = {"size": torch.tensor([0, -1, 0, -1])}  # named in rows 0 and 2 only
    pred = {"size": torch.tensor([1, 0, 0, 0])}
    out = accuracy(pred, truth, required_attributes([caption], pred, {}))
    assert out["size"] == 0.5 and out["all"] == 0.5


def test_a_caption_target_is_scored_only_on_what_it_can_say():
    truth = {"shape": torch.tensor([0, 1]), "size": torch.tensor([0, 1]), "position": torch.tensor([2, 3])}
    image = {t: v.clone() for t, v in truth.items()}  # the image determines everything
    generated = {"shape": torch.tensor([0, 1]), "size": torch.tensor([-1, 0]), "position": torch.tensor([-1, -1])}
    rates = {"shape": 1.0, "size": 0.5, "position": 0.0}  # real captions: size sometimes, position never
    required = required_attributes([image], generated, rates)
    assert required["position"].tolist() == [False, False]  # captions never say it
    assert required["size"].tolist() == [False, True]  # optional: scored where the caption says it
    out = accuracy(generated, truth, required)
    assert out["shape"] == 1.0 and out["size"] == 0.0 and out["all"] == 0.5


def test_sharpness_drops_with_blur():
    gen = torch.Generator().manual_seed(0)
    images = (torch.rand(8, 3, 32, 32, generator=gen) > 0.7).float()
    blurred = F.avg_pool2d(images, 3, 1, 1)
    assert laplacian_sharpness(blurred) < 0.5 * laplacian_sharpness(images)
    assert laplacian_sharpness((images * 255).to(torch.uint8)) == pytest.approx(laplacian_sharpness(images), rel=1e-5)
    with pytest.raises(InputError, match="N,C,H,W"):
        laplacian_sharpness(torch.rand(3, 32, 32))


def test_diversity_counts_distinct_values_of_the_open_attribute(tiny_config, make_raw):
    from omnivae import build_model
    from omnivae.data.tensors import TensorData
    from omnivae.metrics.samples import open_attribute_diversity

    raw = make_raw(12, names=("image", "label"))
    raw.targets["label"] = raw.modalities["label"].copy()
    raw.targets["band"] = (raw.modalities["label"] + 1) % 3
    model = build_model(tiny_config("mopoe", ("image", "label")), raw).eval()
    data = TensorData.from_raw(model, raw)
    def image_scorer(x):  # rows are [draw, input] flattened: "band" takes all 3 values over the draws
        n = len(x)
        return {"label": torch.full((n,), -1), "band": torch.arange(n) % 3}

    scorers = {"image": image_scorer, "label": lambda x: {"label": x}}
    out = open_attribute_diversity(model, data, scorers, ["label"], "image", n_samples=6, n_inputs=4)
    assert out["open"]["band"] == {"classes": 3, "inputs": 4, "distinct_mean": 3.0, "distinct_min": 3,
                                   "share_at_least_3": 1.0}
    assert "label" not in out["open"]  # the given label determines it
    with pytest.raises(InputError, match="n_samples"):
        open_attribute_diversity(model, data, scorers, ["label"], "image", n_samples=1)


def test_classifier_scorer_reads_uint8_pixels_like_unit_floats(make_raw):
    from omnivae.metrics.coherence import classifier_scorer

    raw = make_raw(48, names=("image", "label"), image_shape=(1, 16, 16))
    raw.targets["label"] = raw.modalities["label"].copy()
    pixels = torch.as_tensor(raw.modalities["image"])
    score = classifier_scorer(pixels.float() / 255, raw, "conv", epochs=1, seed=0)
    assert torch.equal(score(pixels)["label"], score(pixels.float() / 255)["label"])


def test_joint_coherence_ignores_what_a_caption_leaves_unsaid(tiny_config, make_raw):
    from omnivae import build_model
    from omnivae.metrics.coherence import joint_coherence

    raw = make_raw(12, names=("image", "label"))
    model = build_model(tiny_config("mopoe", ("image", "label")), raw).eval()
    image = lambda x: {"shape": torch.zeros(len(x), dtype=torch.long), "position": torch.arange(len(x)) % 4}
    caption = lambda x: {"shape": torch.zeros(len(x), dtype=torch.long), "position": torch.full((len(x),), -1)}
    assert joint_coherence(model, {"image": image, "label": caption}, n=8)["all"] == 1.0
    wrong = lambda x: {"shape": torch.ones(len(x), dtype=torch.long), "position": torch.full((len(x),), -1)}
    assert joint_coherence(model, {"image": image, "label": wrong}, n=8)["all"] == 0.0
    silent = lambda x: {"shape": torch.full((len(x),), -1), "position": torch.full((len(x),), -1)}
    assert joint_coherence(model, {"image": image, "label": silent}, n=8)["all"] == 0.0
