import json

import pytest
import torch

from omnivae.errors import InputError
from omnivae.metrics.classifier import cached_classifier, predict, train_classifier


def square_images(n, seed, size=32):
    """Class c places a bright 8x8 square in horizontal quarter c (4 classes)."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=gen)
    x = 0.2 * torch.rand(n, 1, size, size, generator=gen)
    rows = torch.randint(0, size - 8, (n,), generator=gen)
    for i in range(n):
        col = int(y[i]) * size // 4
        x[i, 0, rows[i] : rows[i] + 8, col : col + 8] = 1.0
    return x, y


@pytest.fixture(scope="module")
def image_data():
    return square_images(800, 0), square_images(200, 1)


@pytest.fixture(scope="module")
def image_clf(image_data):
    (x, y), _ = image_data
    return train_classifier(x, y, "conv", num_classes=4, epochs=4, batch_size=64)


def test_image_classifier_learns_square_position(image_clf, image_data):
    _, (xt, yt) = image_data
    pred = predict(image_clf, xt)
    assert pred.dtype == torch.long and pred.shape == yt.shape
    assert (pred == yt).float().mean() > 0.95


def test_image_classifier_accepts_other_sizes():
    x, y = square_images(64, 2, size=20)
    clf = train_classifier(x, y, "conv", num_classes=4, epochs=1)
    assert predict(clf, x).shape == (64,)


def test_vector_and_token_classifiers():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(400, 5, generator=gen)
    y = (x[:, 0] > 0).long()
    clf = train_classifier(x, y, "mlp", num_classes=2, epochs=20)
    assert (predict(clf, x) == y).float().mean() > 0.95
    tokens = torch.randint(3, 20, (400, 6), generator=gen)
    tokens[:, 4:] = 0  # padding
    y = torch.randint(0, 2, (400,), generator=gen)
    tokens[:, 0] = y + 1  # the label word, ids 1 or 2
    clf = train_classifier(tokens, y, "tokens", num_classes=2, epochs=30, vocab_size=20)
    assert (predict(clf, tokens) == y).float().mean() > 0.95


def test_training_is_seeded():
    x, y = square_images(64, 3)
    a = train_classifier(x, y, "conv", num_classes=4, epochs=1, seed=5)
    b = train_classifier(x, y, "conv", num_classes=4, epochs=1, seed=5)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_cache_round_trip_and_corruption(tmp_path, image_clf, image_data):
    _, (xt, _) = image_data
    built = []

    def builder():
        built.append(1)
        return image_clf

    first = cached_classifier(tmp_path, "shapes-image", builder)
    again = cached_classifier(tmp_path, "shapes-image", builder)
    assert len(built) == 1 and again is not image_clf
    assert torch.equal(predict(again, xt), predict(first, xt))
    assert json.loads((tmp_path / "shapes-image.json").read_text())["spec"]["kind"] == "conv"
    assert not list(tmp_path.glob("*.tmp"))

    weights = tmp_path / "shapes-image.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10:] = b"\x00" * 10  # flips weights but keeps the header readable
    weights.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="rebuilding"):
        rebuilt = cached_classifier(tmp_path, "shapes-image", builder)
    assert len(built) == 2 and torch.equal(predict(rebuilt, xt), predict(first, xt))

    weights.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="rebuilding"):
        cached_classifier(tmp_path, "shapes-image", builder)
    assert len(built) == 3
    assert torch.equal(predict(cached_classifier(tmp_path, "shapes-image", builder), xt),
                       predict(first, xt))


@pytest.mark.parametrize("call, word", [
    (lambda: train_classifier(torch.rand(4, 1, 8, 8), torch.zeros(4).long(), "conv", 2), "H, W >= 16"),
    (lambda: train_classifier(torch.rand(4, 1, 16, 16).double().long(), torch.zeros(4).long(), "conv", 2),
     "float"),
    (lambda: train_classifier(torch.rand(4, 3), torch.zeros(5).long(), "mlp", 2), "y"),
    (lambda: train_classifier(torch.rand(4, 3), torch.full((4,), 3), "mlp", 2), "labels in"),
    (lambda: train_classifier(torch.full((4, 3), float("nan")), torch.zeros(4).long(), "mlp", 2), "finite"),
    (lambda: train_classifier(torch.ones(4, 3).long(), torch.zeros(4).long(), "tokens", 2), "vocab_size"),
    (lambda: train_classifier(torch.rand(4, 3), torch.zeros(4).long(), "audio", 2), "kind"),
    (lambda: cached_classifier("/tmp", "../escape", lambda: None), "key"),
])
def test_bad_arguments_raise_input_error(call, word):
    with pytest.raises(InputError, match=word):
        call()


def test_predict_checks_input_shape(image_clf):
    with pytest.raises(InputError, match="dim 1"):
        predict(image_clf, torch.rand(2, 3, 32, 32))


def test_degrade_blurs_half_and_keeps_the_rest():
    from omnivae.metrics.classifier import degrade

    x = torch.zeros(64, 3, 16, 16)
    x[:, :, 6:10, 6:10] = 1.0
    gen = torch.Generator().manual_seed(0)
    same = degrade(x, gen, p=0.0)
    assert torch.equal(same, x)
    out = degrade(x, torch.Generator().manual_seed(0), p=1.0)
    assert out.shape == x.shape
    edges = lambda t: (t[..., 1:, :] - t[..., :-1, :]).pow(2).sum((1, 2, 3))  # noqa: E731
    assert float(edges(out).mean()) < 0.8 * float(edges(x).mean())  # blurred: weaker edges
    assert abs(float(out.mean() - x.mean())) < 0.01  # brightness kept


def test_augment_trains_on_degraded_copies(image_data):
    """augment=True changes what the classifier sees (same seed, other weights), and the image
    scorers of coherence use it: the benchmark records their accuracy on blurred real images."""
    (x, y), _ = image_data
    plain = train_classifier(x, y, "conv", int(y.max()) + 1, epochs=1, seed=0)
    again = train_classifier(x, y, "conv", int(y.max()) + 1, epochs=1, seed=0)
    augmented = train_classifier(x, y, "conv", int(y.max()) + 1, epochs=1, seed=0, augment=True)
    w = lambda c: torch.cat([p.flatten() for p in c.parameters()])  # noqa: E731
    assert torch.equal(w(plain), w(again))
    assert not torch.allclose(w(plain), w(augmented))


def test_augment_is_for_images_only():
    with pytest.raises(InputError, match="augment"):
        train_classifier(torch.randn(8, 4), torch.tensor([0, 1] * 4), "mlp", 2, epochs=1, augment=True)


def two_attribute_images(n, seed):
    """Attribute "column": which horizontal quarter holds the square; "bright": its brightness (2 levels)."""
    x, column = square_images(n, seed)
    gen = torch.Generator().manual_seed(seed + 100)
    bright = torch.randint(0, 2, (n,), generator=gen)
    x = torch.where(x > 0.5, torch.where(bright[:, None, None, None] == 1, 1.0, 0.6), x)
    return x, {"column": column, "bright": bright}


def test_one_network_learns_every_attribute_with_missing_labels():
    """A head per attribute over one shared trunk; -1 (unknown) labels are left out of a head's loss,
    so hiding half of one attribute's labels still teaches it; predict gives a dict."""
    x, y = two_attribute_images(800, 0)
    xt, yt = two_attribute_images(200, 1)
    hidden = y["bright"].clone()
    hidden[::2] = -1
    clf = train_classifier(x, {"column": y["column"], "bright": hidden}, "conv", epochs=4, batch_size=64)
    assert clf.spec["classes"] == {"column": 4, "bright": 2}
    pred = predict(clf, xt)
    assert set(pred) == {"column", "bright"}
    assert (pred["column"] == yt["column"]).float().mean() > 0.95
    assert (pred["bright"] == yt["bright"]).float().mean() > 0.9
    assert clf.embed(xt[:3]).shape == (3, 128)  # the shared features (Frechet distance reads them)


def test_multi_head_classifier_round_trips_through_the_cache(tmp_path):
    x, y = two_attribute_images(64, 2)
    built = cached_classifier(tmp_path, "two", lambda: train_classifier(x, y, "conv", epochs=1))
    loaded = cached_classifier(tmp_path, "two", lambda: pytest.fail("rebuilt a valid cache entry"))
    for key, value in predict(built, x).items():
        assert torch.equal(predict(loaded, x)[key], value)


def test_unknown_labels_are_refused_without_attribute_names():
    with pytest.raises(InputError, match="labels in \\[0, 2\\)"):
        train_classifier(torch.rand(4, 3), torch.tensor([0, 1, -1, 1]), "mlp", 2, epochs=1)


def test_loading_a_cached_classifier_leaves_the_global_rng_alone(tmp_path):
    """Evaluation seeds torch once and then samples; reading a classifier from the cache must not
    draw from that stream (building the network to load into would), or a second evaluation
    samples other codes than the first."""
    x, y = two_attribute_images(32, 3)
    cached_classifier(tmp_path, "rng", lambda: train_classifier(x, y, "conv", epochs=1))
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    cached_classifier(tmp_path, "rng", lambda: pytest.fail("rebuilt a valid cache entry"))
    assert torch.equal(torch.rand(3), expected)


def test_predict_and_features_are_the_same_in_any_batching(image_clf, image_data):
    from omnivae.metrics.classifier import features

    _, (xt, _) = image_data
    with torch.no_grad():
        whole = image_clf.embed(xt)  # one pass in the default memory layout
        logits = image_clf(xt)
    scale = float(whole.abs().max())  # float32 sums round relative to their terms, whose size this is
    for batch_size in (1, 7, 64, 1000):
        assert torch.allclose(features(image_clf, xt, batch_size=batch_size), whole, atol=1e-5 * scale)
        assert torch.equal(predict(image_clf, xt, batch_size=batch_size), logits[next(iter(logits))].argmax(1))
    with pytest.raises(InputError, match="batch_size"):
        features(image_clf, xt, batch_size=0)
