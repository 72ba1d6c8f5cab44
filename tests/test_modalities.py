"""Image, categorical and vector modalities: shapes, likelihoods against torch's own
formulas, preprocessing, and the InputError raised for bad inputs."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from omnivae import ConfigError, InputError
from omnivae.modalities import (CategoricalSpec, ImageSpec, VectorSpec, build_modality, infer_spec,
                                likelihoods, parse_spec)

pytestmark = pytest.mark.usefixtures("one_thread")

D = 4


def image(shape, arch="conv", name="img", **options):
    extra = {"hidden": [32]} if arch == "mlp" else {}
    return build_modality(name, ImageSpec(shape=shape, arch=arch, **{**extra, **options}), D)


def labels(num_classes=3, classes=None, name="lab"):
    return build_modality(name, CategoricalSpec(num_classes=num_classes, classes=classes, hidden=[8]), D)


def vector(dim=3, name="vec", **options):
    return build_modality(name, VectorSpec(dim=dim, hidden=[8], **options), D)


def random_images(n, shape, seed=0):
    return torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


# -- images ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["conv", "mlp"])
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (3, 64, 64)])
def test_image_shapes(arch, shape):
    torch.manual_seed(0)
    mod = image(shape, arch)
    x = random_images(2, shape)
    q = mod.encode(x)
    assert q.mu.shape == q.logvar.shape == (2, D)
    z = torch.randn(5, 2, D)
    ll = mod.log_likelihood(z, x)
    assert ll.shape == (5, 2) and torch.isfinite(ll).all() and (ll <= 0).all()
    out = mod.generate(torch.randn(3, D))
    assert out.shape == (3, *shape) and out.min() >= 0 and out.max() <= 1
    sample = mod.generate(torch.randn(3, D), sample=True)
    assert sample.shape == (3, *shape) and set(sample.unique().tolist()) <= {0.0, 1.0}
    assert mod.decode(torch.randn(3, D)).shape == (3, *shape)


@pytest.mark.parametrize("arch", ["conv", "mlp"])
def test_bernoulli_log_likelihood_is_minus_bce(arch):
    torch.manual_seed(1)
    shape = (3, 32, 32)
    mod = image(shape, arch)
    x = random_images(4, shape, seed=1)
    z = torch.randn(2, 4, D)
    ll = mod.log_likelihood(z, x)
    logits = mod.decode(z.reshape(8, D)).reshape(2, 4, *shape)
    target = (x.float() / 255).expand(2, *x.shape)
    want = -F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(2).sum(-1)
    torch.testing.assert_close(ll, want, rtol=1e-5, atol=1e-3)


def test_likelihood_formulas_match_torch_distributions():
    g = torch.Generator().manual_seed(2)
    out, x = torch.randn(3, 4, 5, generator=g), torch.randn(4, 5, generator=g)
    log_scale = torch.randn(5, generator=g) * 0.3
    normal = torch.distributions.Normal(out, log_scale.exp()).log_prob(x).sum(-1)
    laplace = torch.distributions.Laplace(out, log_scale.exp()).log_prob(x).sum(-1)
    torch.testing.assert_close(likelihoods.gaussian(out, x, log_scale), normal)
    torch.testing.assert_close(likelihoods.laplace(out, x, log_scale), laplace)
    logits, y = torch.randn(3, 4, 6, generator=g), torch.tensor([0, 5, 2, 2])
    want = -F.cross_entropy(logits.reshape(12, 6), y.repeat(3), reduction="none").view(3, 4)
    torch.testing.assert_close(likelihoods.categorical(logits, y), want)


@pytest.mark.parametrize("kind", ["gaussian", "laplace"])
def test_continuous_image_likelihood_uses_sigmoid_mean_and_scale(kind):
    torch.manual_seed(3)
    mod = image((1, 8, 8), "mlp", likelihood=kind, scale=0.2)
    x = random_images(3, (1, 8, 8))
    z = torch.randn(2, 3, D)
    mean = torch.sigmoid(mod.decode(z.reshape(6, D))).reshape(2, 3, -1)
    dist = torch.distributions.Normal if kind == "gaussian" else torch.distributions.Laplace
    want = dist(mean, 0.2).log_prob((x.float() / 255).reshape(3, -1)).sum(-1)
    torch.testing.assert_close(mod.log_likelihood(z, x), want, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("arch", ["conv", "mlp"])
def test_uint8_and_float_pixels_encode_the_same(arch):
    torch.manual_seed(4)
    mod = image((3, 32, 32), arch)
    x = random_images(3, (3, 32, 32), seed=4)
    a, b = mod.encode(x), mod.encode(x.float() / 255)
    torch.testing.assert_close(a.mu, b.mu)
    torch.testing.assert_close(a.logvar, b.logvar)
    assert x.dtype == torch.uint8  # features() must not scale the caller's tensor in place
    torch.testing.assert_close(mod.log_likelihood(torch.zeros(1, 3, D), x),
                               mod.log_likelihood(torch.zeros(1, 3, D), x.float() / 255))


def test_image_prepare_adds_channel_for_grayscale_and_keeps_dtype():
    mod = image((1, 8, 8), "mlp")
    x = np.zeros((5, 8, 8), dtype=np.uint8)
    out = mod.prepare(x)
    assert out.shape == (5, 1, 8, 8) and out.dtype == torch.uint8
    out = mod.prepare(np.full((2, 1, 8, 8), 0.5, dtype=np.float64))
    assert out.dtype == torch.float32 and torch.all(out == 0.5)
    assert torch.equal(mod.to_output(torch.full((1, 8, 8), 255, dtype=torch.uint8)), torch.ones(1, 8, 8))


@pytest.mark.parametrize("bad, words", [
    (torch.zeros(2, 3, 8, 8), ["3, 8, 8", "1, 8, 8"]),  # wrong channels
    (torch.zeros(2, 1, 8, 9), ["8, 9"]),  # wrong width
    (torch.zeros(1, 8), ["1, 8"]),  # wrong rank
    (torch.zeros(2, 1, 8, 8, dtype=torch.int64), ["int64"]),
    (torch.zeros(2, 1, 8, 8, dtype=torch.bool), ["bool"]),
    (torch.full((2, 1, 8, 8), float("nan")), ["NaN"]),
    (torch.full((2, 1, 8, 8), float("inf")), ["infinite"]),
    (torch.full((2, 1, 8, 8), 1.5), ["[0, 1]", "1.5"]),
    (torch.full((2, 1, 8, 8), -0.1), ["[0, 1]", "-0.1"]),
])
def test_image_bad_inputs_raise_input_error_naming_the_modality(bad, words):
    mod = image((1, 8, 8), "mlp", name="photo")
    with pytest.raises(InputError) as info:
        mod.prepare(bad)
    message = str(info.value)
    assert "'photo'" in message
    for w in words:
        assert w in message


def test_image_too_small_for_conv_layers():
    with pytest.raises(InputError, match="too small"):
        image((1, 4, 4), "conv")


# -- categorical ---------------------------------------------------------------------------------------
def test_categorical_class_names_round_trip():
    mod = labels(3, ["cat", "dog", "owl"])
    x = mod.prepare(["owl", "cat", "dog", "owl"])
    assert x.dtype == torch.long and x.tolist() == [2, 0, 1, 2]
    assert mod.prepare(np.array(["dog"])).tolist() == [1]
    assert mod.to_output(torch.tensor([1, 2])) == ["dog", "owl"]
    with pytest.raises(InputError, match="'lab'.*'emu'"):
        mod.prepare(["cat", "emu"])
    with pytest.raises(InputError, match="'lab'"):
        labels(3).prepare(["cat"])  # names given but the spec has none


@pytest.mark.parametrize("bad, pattern", [
    ([0, 3], "0..2"), ([-1, 0], "0..2"), ([0.5, 1.0], "integers"), ([float("nan")], "NaN"),
    ([[0, 1]], r"\[batch\]"),
])
def test_categorical_bad_labels(bad, pattern):
    mod = labels(3)
    with pytest.raises(InputError, match=pattern) as info:
        mod.prepare(torch.tensor(bad))
    assert "'lab'" in str(info.value)


def test_categorical_integral_floats_become_long():
    out = labels(3).prepare(np.array([2.0, 0.0]))
    assert out.dtype == torch.long and out.tolist() == [2, 0]


def test_categorical_likelihood_shape_and_value():
    torch.manual_seed(5)
    mod = labels(4)
    y, z = torch.tensor([0, 3, 1]), torch.randn(2, 3, D)
    ll = mod.log_likelihood(z, y)
    logits = mod.decoder(z)
    torch.testing.assert_close(ll, torch.log_softmax(logits, -1).gather(-1, y.expand(2, 3)[..., None])[..., 0])
    p = mod.probabilities(z[0])
    torch.testing.assert_close(p.sum(-1), torch.ones(3))
    assert torch.equal(mod.generate(z[0]), p.argmax(-1))
    assert mod.placeholder(4).tolist() == [0, 0, 0, 0]


def test_categorical_spec_errors():
    with pytest.raises(InputError, match="at least 2"):
        labels(1)
    with pytest.raises(InputError, match="2 class names"):
        labels(3, ["a", "b"])


# -- vector --------------------------------------------------------------------------------------------
def test_vector_fit_standardises_with_training_statistics():
    rng = np.random.default_rng(6)
    raw = rng.normal([1.0, -5.0, 100.0], [0.5, 2.0, 30.0], size=(200, 3)).astype(np.float32)
    mod = vector(3)
    mod.fit(raw)
    np.testing.assert_allclose(mod.mean.numpy(), raw.mean(0), rtol=1e-5)
    np.testing.assert_allclose(mod.std.numpy(), raw.std(0, ddof=1), rtol=1e-4)
    f = mod.features(mod.prepare(raw))
    torch.testing.assert_close(f.mean(0), torch.zeros(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(f.std(0), torch.ones(3), atol=1e-4, rtol=0)
    # generate maps the decoder output back to data units
    z = torch.randn(4, D)
    torch.testing.assert_close(mod.generate(z), mod.decoder(z) * torch.from_numpy(raw.std(0, ddof=1))
                               + torch.from_numpy(raw.mean(0)), rtol=1e-4, atol=1e-3)
    # likelihood: Normal(decoder(z), exp(log_scale)) on standardised values
    x = mod.prepare(raw[:3])
    zz = torch.randn(2, 3, D)
    want = torch.distributions.Normal(mod.decoder(zz), mod.log_scale.exp()).log_prob(
        (x - torch.from_numpy(raw.mean(0))) / torch.from_numpy(raw.std(0, ddof=1))).sum(-1)
    torch.testing.assert_close(mod.log_likelihood(zz, x), want, rtol=1e-4, atol=1e-3)


def test_vector_without_standardisation_and_single_row():
    mod = vector(2, standardize=False)
    mod.fit(np.array([[10.0, 20.0], [30.0, 40.0]]))
    assert mod.mean.tolist() == [0.0, 0.0] and mod.std.tolist() == [1.0, 1.0]
    one = vector(2)
    one.fit([[3.0, 4.0]])
    assert one.mean.tolist() == [3.0, 4.0] and one.std.tolist() == [1.0, 1.0]
    assert vector(1).prepare([1.0, 2.0]).shape == (2, 1)


@pytest.mark.parametrize("bad, pattern", [
    (np.zeros((2, 4)), r"\[batch, 3\].*\[2, 4\]"), (np.zeros(3), r"\[3\]"),
    (np.array([[0.0, float("nan"), 1.0]]), "NaN"), (np.array([[0.0, float("inf"), 1.0]]), "infinite"),
    (torch.zeros(2, 3, dtype=torch.bool), "bool"),
])
def test_vector_bad_inputs(bad, pattern):
    with pytest.raises(InputError, match=pattern) as info:
        vector(3).prepare(bad)
    assert "'vec'" in str(info.value)


def test_vector_non_numeric_input_names_the_modality():
    with pytest.raises(InputError, match="'vec'"):
        vector(2).prepare([["a", "b"]])


# -- user values of the wrong type (finding F1): InputError naming the modality, never numpy's errors ------
@pytest.mark.parametrize("make, bad, pattern", [
    (lambda: image((1, 2, 2), "mlp"), None, "images, got NoneType"),
    (lambda: image((1, 2, 2), "mlp"), [["a", "b"], ["c", "d"]], "images, got strings"),
    (lambda: image((1, 2, 2), "mlp"), [[[0, 1], [2]]], "ragged"),
    (lambda: vector(2), "abc", "vectors, got str 'abc'"),
    (lambda: vector(2), np.ones((1, 2), np.complex64), "complex"),
    (lambda: labels(3), np.array(0, np.uint8), r"\[batch\], got \[\]"),
    (lambda: labels(3), [b"1"], "bytes"),
    (lambda: labels(3), [None, 1], "mixed Python objects"),
    (lambda: labels(3), [2 ** 70], "mixed Python objects"),
    (lambda: labels(3), np.array([2 ** 63], np.uint64), "0..2"),
    (lambda: labels(3, ["a", "b", "c"]), ["a", 1], "mix class names"),
    (lambda: labels(3), torch.zeros(2, dtype=torch.complex64), "dtype"),
])
def test_wrong_kinds_of_values_raise_input_error(make, bad, pattern):
    mod = make()
    with pytest.raises(InputError, match=pattern) as info:
        mod.prepare(bad)
    assert f"'{mod.name}'" in str(info.value)


def test_wide_unsigned_labels_and_flipped_arrays_are_accepted():
    assert labels(3).prepare(np.array([2, 0], np.uint16)).tolist() == [2, 0]
    assert labels(3).prepare(np.array([1], np.uint64)).dtype == torch.long
    flipped = np.flip(np.arange(8, dtype=np.uint8).reshape(2, 1, 2, 2), -1)  # negative strides
    assert image((1, 2, 2), "mlp").prepare(flipped)[0, 0, 0].tolist() == [1, 0]


# -- values absurdly far from the training data (finding F7) ----------------------------------------------
def test_vector_refuses_values_a_million_standard_deviations_out():
    mod = vector(2)
    mod.fit(np.array([[0.0, 10.0], [2.0, 10.0], [4.0, 10.0]]))  # std 2; a constant feature is only centred
    assert mod.std.tolist() == [2.0, 1.0]
    assert mod.prepare([[2e6, 10.0], [0.0, 1e6]]).dtype == torch.float32  # 1e6 units out: still accepted
    with pytest.raises(InputError, match=r"'vec'.*3e\+06 standard deviations.*row: 1"):
        mod.prepare([[0.0, 10.0], [0.0, 3e6 + 10]])
    with pytest.raises(InputError, match="standard deviations"):
        mod.prepare(np.array([[1e300, 0.0]]))  # beyond float32: refused, not turned into inf
    big = vector(1)
    big.fit(np.array([1e30, -1e30, 3e30]))  # training data in huge units is fine (fitted in float64)
    assert torch.isfinite(big.std).all() and big.prepare([2e30]).shape == (1, 1)


# -- specs ----------------------------------------------------------------------------------------------
def test_parse_spec_errors_and_infer_spec():
    with pytest.raises(ConfigError, match="'x'.*unknown kind 'video'"):
        parse_spec("x", {"kind": "video"})
    with pytest.raises(ConfigError, match="kind"):
        parse_spec("x", {"shape": [1, 2, 2]})
    with pytest.raises(ConfigError, match="arch"):
        parse_spec("x", {"kind": "image", "shape": [1, 8, 8], "arch": "transformer"})
    spec = infer_spec("img", "image", np.zeros((4, 8, 6), np.uint8), np.ones(4, bool), {"arch": "mlp"})
    assert tuple(spec.shape) == (1, 8, 6) and spec.arch == "mlp"
    spec = infer_spec("lab", "categorical", np.array([0, 4, 9]), np.array([True, True, False]))
    assert spec.num_classes == 5  # the missing entry (9) does not count
    spec = infer_spec("lab", "categorical", np.array([0, 1]), np.ones(2, bool), class_names=["a", "b", "c"])
    assert spec.num_classes == 3 and spec.classes == ["a", "b", "c"]
    assert infer_spec("v", "vector", np.zeros((3, 7)), np.ones(3, bool)).dim == 7


def test_image_features_are_converted_once_per_batch_and_never_stale():
    from omnivae.modalities import build_modality, parse_spec

    mod = build_modality("image", parse_spec("image", {"kind": "image", "shape": [1, 4, 4], "arch": "mlp",
                                                        "hidden": [8]}), 2)
    x = torch.randint(0, 256, (3, 1, 4, 4), dtype=torch.uint8)
    first = mod.features(x)
    assert mod.features(x) is first  # encoder input and likelihood target share one conversion
    assert torch.equal(first, x.float() / 255)
    x[0] = 0  # changed in place: the cached conversion must not be served
    assert torch.equal(mod.features(x), x.float() / 255)
    assert mod.features(x.clone()) is not mod.features(x)
    out = mod.to_output(x)
    out.fill_(7.0)  # a caller editing what it got back does not reach the cache
    assert torch.equal(mod.features(x), x.float() / 255)


def test_each_kind_reads_its_own_training_data():
    """The data-side class methods (no model needed) that data sources dispatch to."""
    from omnivae.modalities import MODALITY_KINDS as K

    assert K["vector"].infer_spec(np.zeros((3, 7)), np.ones(3, bool)) == {"dim": 7}
    assert K["text"].infer_spec(["a", "b"], np.ones(2, bool)) == {}
    assert K["image"].claims_array(np.zeros((2, 8, 8), np.uint8))
    assert not K["image"].claims_array(np.zeros((2, 8, 8), np.float32))
    assert K["signal"].claims_array(np.zeros((2, 8, 8), np.float32))
    assert K["categorical"].claims_array(np.arange(3)) and K["vector"].claims_array(np.arange(3))
    values, mask, names = K["image"].read_array("im", np.zeros((2, 8, 6, 3), np.uint8))
    assert values.shape == (2, 3, 8, 6) and mask.all() and names is None
    values, mask, names = K["categorical"].read_array("c", np.array(["b", "", "a"]))
    assert values.tolist() == [1, -1, 0] and mask.tolist() == [True, False, True] and names == ["a", "b"]
    values, mask, _ = K["signal"].read_array("s", np.array([[1.0, 2.0], [np.nan, 0.0]]))
    assert values.shape == (2, 1, 2) and values.dtype == np.float32 and mask.tolist() == [True, False]
    with pytest.raises(InputError, match="vector array 'v' has shape"):
        K["vector"].read_array("v", np.zeros((2, 2, 2)))
    assert K["text"].raw_array(["a", None]).tolist() == ["a", ""]
    assert K["text"].stack_values(("a", None)) == ["a", None]
    assert K["categorical"].stack_values([1, 2]).dtype == np.int64
    assert K["categorical"].summarize(np.array([0, 1, 1, -1]), np.array([1, 1, 1, 0], bool), ["x", "y"]) == \
        {"num_classes": 2, "counts": {"x": 1, "y": 2}}


def test_generated_values_go_back_to_the_data_representation():
    img = image((1, 4, 4), arch="mlp")
    back = img.to_raw(torch.full((2, 1, 4, 4), 0.5), np.zeros((5, 1, 4, 4), np.uint8))
    assert back.dtype == np.uint8 and (back == 128).all()
    assert img.to_raw(torch.full((2, 1, 4, 4), 0.5), np.zeros((5, 1, 4, 4), np.float32)).dtype == np.float32
    lab = labels(3, ["a", "b", "c"])
    assert lab.to_raw(torch.tensor([2, 0]), np.zeros(4, np.int64)).tolist() == [2, 0]
    assert lab.to_raw(torch.tensor([2, 0]), ["a"]) == ["c", "a"]
