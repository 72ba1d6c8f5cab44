import time

import numpy as np
import pytest

from omnivae.data.shapes import (ATTRIBUTES, CENTRES, LEVELS, RGB, Level, caption_for, make_shapes,
                                 named_attributes, parse_caption)
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
    named = data.info["named"]
    assert set(named) == set(ATTRIBUTES)
    assert all(m.dtype == bool and m.shape == (600,) for m in named.values())
    assert named["shape"].all() and named["color"].all()


def test_varied_attributes_per_level():
    assert LEVELS["easy"].varied() == ["shape", "color"]
    assert LEVELS["medium"].varied() == ["shape", "color", "size"]
    assert LEVELS["hard"].varied() == ["shape", "color", "size", "position"]
    assert LEVELS["partial"].varied() == ["shape", "color", "size", "position"]


def test_partial_draws_like_hard():
    hard, partial = LEVELS["hard"], LEVELS["partial"]
    same = ("shapes", "colors", "sizes", "radii", "positions", "jitter", "noise")
    assert all(getattr(hard, f) == getattr(partial, f) for f in same)


def test_captions_parse_back_to_targets(data):
    """Every attribute a caption names is the example's target; info["named"] says which."""
    level = data.info["level"]
    named = data.info["named"]
    for i, caption in enumerate(data.modalities["text"]):
        parsed = parse_caption(caption, level)
        for a in ATTRIBUTES:
            expected = int(data.targets[a][i]) if named[a][i] else None
            assert parsed[a] == expected, (caption, a)
        assert named_attributes(caption, level) == {a for a in ATTRIBUTES if named[a][i]}, caption


def test_named_attributes_per_level(data):
    """The old levels name every attribute they vary (position only at hard); partial
    never names the position and names the size in about half of its captions."""
    level, named = data.info["level"], data.info["named"]
    rate = {a: float(m.mean()) for a, m in named.items()}
    if level == "partial":
        assert rate["shape"] == rate["color"] == 1 and rate["position"] == 0
        assert 0.3 < rate["size"] < 0.7
    else:
        assert rate == {a: float(a in data.info["varied"]) for a in ATTRIBUTES}


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
    if LEVELS[data.info["level"]].noise:
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
    if len(LEVELS[level].positions) > 1:
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


POSITION_WORDS = {w for p in CENTRES for w in p.split()} | {"at", "position", "corner", "middle", "center"}


def test_partial_captions_say_less():
    d = make_shapes(2000, "partial", seed=11)
    captions = d.modalities["text"]
    words = {w for c in captions for w in c.replace(",", " ").split()}
    assert not words & POSITION_WORDS
    assert all(parse_caption(c, "partial")["position"] is None for c in captions)
    sizes = np.array([parse_caption(c, "partial")["size"] is not None for c in captions])
    assert 0.3 < sizes.mean() < 0.7
    assert np.array_equal(sizes, d.info["named"]["size"])
    # chosen per example, for both sizes and every shape, not per class or per run
    for a in ("size", "shape"):
        for k in range(len(d.info["classes"][a])):
            assert 0.3 < sizes[d.targets[a] == k].mean() < 0.7
    # every template is used; the size-free ones name shape and colour only
    assert {c.split()[0] for c in captions} == {"a", "one"}
    assert len(set(captions)) > 100
    short = [c for c, s in zip(captions, sizes) if not s]
    assert all(len(c.split()) == 3 or c.startswith("one ") for c in short)


def test_partial_images_show_the_position():
    """Centroid of the non-background pixels (any channel >= 128; the noise stays below 40)
    lies in the quadrant of the example's position target, whatever the caption says."""
    d = make_shapes(400, "partial", seed=5)
    images = d.modalities["image"]
    ink = images.max(axis=1) >= 128
    area = ink.sum(axis=(1, 2))
    assert (area > 0).all()
    size = images.shape[-1]
    ys, xs = np.mgrid[0:size, 0:size]
    cy, cx = (ink * ys).sum(axis=(1, 2)) / area, (ink * xs).sum(axis=(1, 2)) / area
    names = d.info["classes"]["position"]
    for i, p in enumerate(d.targets["position"]):
        vertical, horizontal = names[p].split()
        assert (cy[i] < (size - 1) / 2) == (vertical == "top"), i
        assert (cx[i] < (size - 1) / 2) == (horizontal == "left"), i
    # and the size target shows in the area, though half of the captions leave it open
    for s in range(4):
        k = d.targets["shape"] == s
        assert area[k & (d.targets["size"] == 0)].max() * 1.5 < area[k & (d.targets["size"] == 1)].min()


def test_partial_same_images_as_hard_and_deterministic():
    a, b, c = (make_shapes(300, "partial", seed=s) for s in (7, 7, 8))
    hard = make_shapes(300, "hard", seed=7)
    assert a.modalities["text"] == b.modalities["text"] and a.modalities["text"] != c.modalities["text"]
    assert all(np.array_equal(a.info["named"][k], b.info["named"][k]) for k in ATTRIBUTES)
    assert np.array_equal(a.modalities["image"], b.modalities["image"])
    assert np.array_equal(a.modalities["image"], hard.modalities["image"])
    assert all(np.array_equal(a.targets[k], hard.targets[k]) for k in ATTRIBUTES)
    assert a.modalities["text"] != hard.modalities["text"]


def test_partial_caption_for():
    assert caption_for({"shape": 3, "color": 1, "size": 1, "position": 3}, "partial") == "a green diamond"
    rng = np.random.default_rng(0)
    attrs = {"shape": 1, "color": 2, "size": 1, "position": 2}
    texts = [caption_for(attrs, "partial", rng) for _ in range(200)]
    assert set(texts) == {t.format(shape="square", color="blue", size="big") for t in LEVELS["partial"].templates}
    assert all(named_attributes(t, "partial") in ({"shape", "color"}, {"shape", "color", "size"}) for t in texts)
    assert parse_caption("one big square in blue", "partial") == {"shape": 1, "color": 2, "size": 1, "position": None}
    assert named_attributes("a small red circle at the top left", "partial") == set(ATTRIBUTES)
    assert named_attributes("a red circle", "easy") == {"shape", "color"}
    assert named_attributes("nothing here") == set()


def test_level_needs_a_template_for_each_choice():
    fields = dict(shapes=("circle",), colors=("red",), sizes=("small", "big"), radii=(0.1, 0.2),
                  positions=("centre",), jitter=0.0, noise=0)
    with pytest.raises(ValueError, match="no template names exactly"):
        Level(**fields, templates=("a {size} {color} {shape}",), optional=("size",))
    Level(**fields, templates=("a {size} {color} {shape}", "a {shape}"), optional=("size",))


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
    ({"level": "extreme"}, ["'extreme'", "easy", "medium", "hard", "partial"]),
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


def test_named_attributes_follow_a_split():
    """info["named"] is per example: a split keeps it aligned with its captions."""
    data = make_shapes(300, "partial", seed=3)
    for part in data.split((0.7, 0.3), seed=1):
        assert len(part.info["named"]["size"]) == len(part)
        for caption, size_named in zip(part.modalities["text"], part.info["named"]["size"]):
            assert ("size" in named_attributes(caption, "partial")) == bool(size_named)
