import time

import numpy as np
import pytest

from omnivae.data.shapes import ATTRIBUTES, LEVELS, RGB, caption_for, make_shapes, parse_caption
from omnivae.errors import InputError


@pytest.fixture(scope="module", params=sorted(LEVELS))
def data(request):
    return make_shapes(600, request.param, seed=3)


def masks_and_colors(data):
    """Per example: bool mask of shape pixels (exact clean colour) and that colour's name."""
    level = LEVELS[data.info["level"]]
    rgb = np.array([RGB[c] for c in level.colors], dtype=np.uint8)[data.targets["color"]]
    images = data.modalities["image"]
    return (images == rgb[:, :, None, None]).all(axis=1)


def test_layout_and_info(data):
    level = data.info["level"]
    spec = LEVELS[level]
    images, captions = data.modalities["image"], data.modalities["text"]
    assert images.shape == (600, 3, 32, 32) and images.dtype == np.uint8
    assert len(captions) == 600 and all(isinstance(c, str) and c for c in captions)
    assert data.kinds == {"image": "image", "text": "text"}
    assert data.info["source"] == "shapes" and data.info["level"] == level
    assert set(data.targets) == set(ATTRIBUTES)
    for a in ATTRIBUTES:
        t = data.targets[a]
        classes = data.info["classes"][a]
        assert t.dtype == np.int64 and t.min() >= 0 and t.max() < len(classes)
        if a in data.info["varied"]:
            assert len(np.unique(t)) == len(classes) > 1
        else:
            assert (t == 0).all() and len(classes) == 1
    assert data.info["classes"]["shape"] == list(spec.shapes)


def test_varied_attributes_per_level():
    assert LEVELS["easy"].varied() == ["shape", "color"]
    assert LEVELS["medium"].varied() == ["shape", "color", "size"]
    assert LEVELS["hard"].varied() == ["shape", "color", "size", "position"]


def test_captions_parse_back_to_targets(data):
    level = data.info["level"]
    varied = data.info["varied"]
    for i, caption in enumerate(data.modalities["text"]):
        parsed = parse_caption(caption, level)
        for a in ATTRIBUTES:
            expected = int(data.targets[a][i]) if a in varied or a in ("shape", "color") else None
            assert parsed[a] == expected, (caption, a)


def test_several_templates_used_except_easy(data):
    level = data.info["level"]
    captions = data.modalities["text"]
    first_words = {c.split()[0] for c in captions}
    if level == "easy":
        assert first_words == {"a"}
    else:
        assert len(first_words) >= 2


def test_image_pixels_match_colour_and_background(data):
    mask = masks_and_colors(data)
    images = data.modalities["image"]
    area = mask.sum(axis=(1, 2))
    assert (area > 15).all()
    background = images.transpose(1, 0, 2, 3)[:, ~mask]
    if data.info["level"] == "hard":
        assert background.max() < 64 and background.mean() > 5
    else:
        assert background.max() == 0


def test_shape_geometry(data):
    """Fill ratio of the bounding box and the widest row tell the four shapes apart."""
    mask = masks_and_colors(data)
    names = data.info["classes"]["shape"]
    for i in range(0, 600, 7):
        rows = np.flatnonzero(mask[i].any(1))
        cols = np.flatnonzero(mask[i].any(0))
        box = mask[i, rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        fill = box.mean()
        widths = box.sum(1)
        widest = np.flatnonzero(widths == widths.max()).mean() / (len(widths) - 1)
        name = names[data.targets["shape"][i]]
        if name == "square":
            assert fill > 0.95
        elif name == "circle":
            assert 0.65 < fill < 0.9
        elif name == "triangle":
            assert fill < 0.7 and widest > 0.75
        else:
            assert fill < 0.7 and 0.3 < widest < 0.7


def test_size_and_position(data):
    level = data.info["level"]
    mask = masks_and_colors(data)
    area = mask.sum(axis=(1, 2))
    shape, size = data.targets["shape"], data.targets["size"]
    if level != "easy":
        for s in range(len(data.info["classes"]["shape"])):
            small, big = area[(shape == s) & (size == 0)], area[(shape == s) & (size == 1)]
            assert small.max() * 1.5 < big.min()
    ys, xs = np.arange(32)[:, None], np.arange(32)[None, :]
    cy = (mask * ys).sum(axis=(1, 2)) / area
    cx = (mask * xs).sum(axis=(1, 2)) / area
    if level == "hard":
        names = data.info["classes"]["position"]
        for i, p in enumerate(data.targets["position"]):
            vertical, horizontal = names[p].split()
            assert (cy[i] < 15.5) == (vertical == "top")
            assert (cx[i] < 15.5) == (horizontal == "left")
    else:
        assert np.abs(cx - 15.5).max() < 3.5 and np.abs(cy - 15.5).max() < 4.5


def test_deterministic_from_seed():
    a, b, c = make_shapes(300, "hard", seed=7), make_shapes(300, "hard", seed=7), make_shapes(300, "hard", seed=8)
    assert np.array_equal(a.modalities["image"], b.modalities["image"])
    assert a.modalities["text"] == b.modalities["text"]
    assert all(np.array_equal(a.targets[k], b.targets[k]) for k in ATTRIBUTES)
    assert not np.array_equal(a.modalities["image"], c.modalities["image"])
    assert a.modalities["text"] != c.modalities["text"]


@pytest.mark.parametrize("size", [16, 28, 64])
def test_other_image_sizes(size):
    d = make_shapes(200, "hard", seed=1, image_size=size)
    assert d.modalities["image"].shape == (200, 3, size, size)
    mask = masks_and_colors(d)
    area = mask.sum(axis=(1, 2))
    assert (area > 0).all()
    fraction = area / size**2
    assert 0.01 < fraction.mean() < 0.2


def test_fast_enough():
    start = time.perf_counter()
    for level in LEVELS:
        make_shapes(10000, level, seed=0)
    assert (time.perf_counter() - start) / len(LEVELS) < 2.0


def test_parse_caption_is_robust():
    assert parse_caption("  A   SMALL Red\tcircle, at the TOP   left ") == {
        "shape": 0, "color": 0, "size": 0, "position": 0}
    assert parse_caption("a diamond", "medium") == {"shape": 3, "color": None, "size": None, "position": None}
    assert parse_caption("a diamond", "easy")["shape"] is None  # not a class at that level
    assert parse_caption("a red blue square")["color"] is None  # contradictory
    assert parse_caption("something else entirely") == dict.fromkeys(ATTRIBUTES)
    assert parse_caption("in the bottom right, one big cyan triangle", "hard") == {
        "shape": 2, "color": 5, "size": 1, "position": 3}


def test_caption_for():
    assert caption_for({"shape": 0, "color": 0}, "easy") == "a red circle"
    assert caption_for({"shape": 3, "color": 1, "size": 0}, "medium") == "a small green diamond"
    rng = np.random.default_rng(0)
    texts = {caption_for({"shape": 1, "color": 2, "size": 1, "position": 2}, "hard", rng) for _ in range(40)}
    assert len(texts) == len(LEVELS["hard"].templates)
    assert all(parse_caption(t, "hard") == {"shape": 1, "color": 2, "size": 1, "position": 2} for t in texts)
    with pytest.raises(InputError, match="color index 9"):
        caption_for({"shape": 0, "color": 9}, "easy")


@pytest.mark.parametrize("kwargs, words", [
    ({"level": "extreme"}, ["'extreme'", "easy", "medium", "hard"]),
    ({"n": 0}, ["n must", "0"]),
    ({"image_size": 8}, ["image_size", ">= 16", "8"]),
    ({"seed": -1}, ["seed", ">= 0", "-1"]),  # numpy's own error named no argument (finding F5)
    ({"seed": 2.5}, ["seed", "2.5"]),
    ({"n": "10"}, ["n must", "'10'"]),
    ({"level": ["easy"]}, ["['easy']", "easy"]),  # was TypeError: unhashable
])
def test_bad_arguments(kwargs, words):
    with pytest.raises(InputError) as info:
        make_shapes(**{"n": 10, **kwargs})
    assert all(w in str(info.value) for w in words)
    if "level" in kwargs:
        with pytest.raises(InputError):
            parse_caption("a red circle", kwargs["level"])
