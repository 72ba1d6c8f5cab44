"""COCO-style captions (load_coco): several captions per image, one drawn per image each epoch,
caption metrics against all references, clear errors for malformed files, training via the CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

from omnivae.cli import app
from omnivae.data.coco import load_coco
from omnivae.data.inspect import guess_source
from omnivae.data.tensors import TensorData
from omnivae.errors import InputError
from omnivae.metrics.captions import bleu, exact_match, token_accuracy

COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}
SHAPES = ["square", "stripe"]


def picture(i: int) -> np.ndarray:
    """uint8 [8,8,3]: a colour square (even i) or stripe (odd i) on black; its colour is COLOURS[i % 3]."""
    a = np.zeros((8, 8, 3), dtype=np.uint8)
    colour = list(COLOURS.values())[i % 3]
    if i % 2:
        a[:, 3:5] = colour
    else:
        a[2:6, 2:6] = colour
    return a


def captions_of(i: int) -> list[str]:
    colour, shape = list(COLOURS)[i % 3], SHAPES[i % 2]
    return [f"a {colour} {shape}", f"{shape} coloured {colour}", f"one {colour} {shape} on black"][: 2 + i % 2]


def make_coco(root, n: int = 12, images_dir: str = "images", annotations_dir: str = "",
              name: str = "captions_train.json", doc: dict | None = None):
    """n 8x8 PNGs in root/images_dir and a COCO caption file; image i has 2 (even i) or 3 (odd i)
    captions, written interleaved across images as COCO files are. Returns the document written."""
    (root / images_dir).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(picture(i)).save(root / images_dir / f"{i:06d}.png")
    if doc is None:
        images = [{"id": 100 + i, "file_name": f"{i:06d}.png", "width": 8, "height": 8} for i in range(n)]
        annotations = [{"id": 1000 * k + i, "image_id": 100 + i, "caption": c}
                       for k in range(3) for i in range(n) for c in captions_of(i)[k:k + 1]]
        doc = {"info": {}, "images": images, "annotations": annotations}
    (root / annotations_dir).mkdir(parents=True, exist_ok=True)
    (root / annotations_dir / name).write_text(json.dumps(doc))
    return doc


def test_reads_images_and_every_caption_in_file_order(tmp_path):
    make_coco(tmp_path)
    assert guess_source(tmp_path) == "coco"
    raw = load_coco(tmp_path, image_size=8)
    assert raw.kinds == {"image": "image", "caption": "text"} and len(raw) == 12
    assert raw.modalities["image"].shape == (12, 3, 8, 8) and raw.modalities["image"].dtype == np.uint8
    assert np.array_equal(raw.modalities["image"][5], picture(5).transpose(2, 0, 1))
    refs = raw.info["references"]["caption"]
    assert [list(r) for r in refs] == [captions_of(i) for i in range(12)]
    assert [len(r) for r in refs] == [2, 3] * 6
    assert raw.modalities["caption"] == [captions_of(i)[0] for i in range(12)]
    assert raw.ids["image_id"].tolist() == [str(100 + i) for i in range(12)]
    last = [captions_of(i)[-1] for i in range(12)]  # the 2nd or 3rd caption of each image
    assert bleu(last, refs) == pytest.approx(100.0) and bleu(last, raw.modalities["caption"]) < 50
    part = raw.subset(np.array([7, 2]))  # references follow subset and concat
    assert [list(r) for r in part.info["references"]["caption"]] == [captions_of(7), captions_of(2)]
    both = type(raw).concat([part, raw.subset(np.array([4]))])
    assert [len(r) for r in both.info["references"]["caption"]] == [3, 2, 2]


def test_official_layout_and_options(tmp_path):
    """annotations/captions_val2017.json with the images in val2017/; image_size, mode and max_images."""
    make_coco(tmp_path, images_dir="val2017", annotations_dir="annotations", name="captions_val2017.json")
    raw = load_coco(tmp_path, image_size=4, mode="L", max_images=5)
    assert raw.modalities["image"].shape == (5, 1, 4, 4) and len(raw.modalities["caption"]) == 5
    assert guess_source(tmp_path) == "coco"


def tiny_model(raw):
    from omnivae.models import build_model
    from omnivae.run import resolve_model_config

    config = {"model": "mopoe", "latent_dim": 4, "modalities": {
        "image": {"arch": "mlp", "hidden": [16]}, "caption": {"hidden": 16, "embed_dim": 8, "max_len": 8}}}
    return build_model(resolve_model_config(config, raw), raw)


def test_each_epoch_draws_one_caption_per_image(tmp_path):
    from omnivae.train.sampler import ResumableLoader

    make_coco(tmp_path)
    raw = load_coco(tmp_path, image_size=8)
    model = tiny_model(raw)
    text = model.modalities["caption"]
    assert text.unknown_words(["one stripe coloured green on black"]) == []  # the tokenizer saw every caption
    data = TensorData.from_raw(model, raw)
    alt = data.alternatives["caption"]
    assert alt.counts.tolist() == [2, 3] * 6 and alt.flat.shape == (30, 8)
    every = list(range(12))
    assert text.to_output(data.__getitems__(every).data["caption"]) == raw.modalities["caption"]  # no draw yet: the first

    seen = []
    for epoch in range(12):
        data.choose(seed=3, epoch=epoch)
        captions = text.to_output(data.__getitems__(every).data["caption"])
        assert all(c in captions_of(i) for i, c in enumerate(captions)), captions
        seen.append(captions)
    assert len({tuple(s) for s in seen}) > 6  # different captions across epochs
    for i in range(12):  # over 12 epochs every caption of every image was drawn (chance of a miss: < 1e-2)
        assert {s[i] for s in seen} == set(captions_of(i))
    data.choose(seed=3, epoch=4)
    assert text.to_output(data.__getitems__(every).data["caption"]) == seen[4]  # a pure function of (seed, epoch)
    assert torch.equal(data.__getitems__([5, 1]).data["image"], data.data["image"][[5, 1]])  # other modalities as they were

    loader = ResumableLoader(TensorData.from_raw(model, raw), batch_size=5, seed=3)
    for epoch in (0, 7):  # the training loader draws the epoch's captions itself
        loader.sampler.set_epoch(epoch)
        order = loader.sampler.order(epoch)
        got = [c for batch in loader for c in text.to_output(batch.data["caption"])]
        assert got == [seen[epoch][i] for i in order]


def test_a_missing_caption_keeps_its_placeholder(tmp_path):
    make_coco(tmp_path, n=6)
    raw = load_coco(tmp_path, image_size=8)
    model = tiny_model(raw)
    raw.mask["caption"][2] = False
    data = TensorData.from_raw(model, raw)
    assert data.alternatives["caption"].counts.tolist() == [2, 3, 1, 3, 2, 3]
    for epoch in range(3):
        data.choose(0, epoch)
        batch = data.__getitems__([2, 3])
        assert torch.equal(batch.data["caption"][0], model.modalities["caption"].placeholder(1)[0])
        assert batch.mask["caption"].tolist() == [False, True]


def test_caption_metrics_score_against_every_reference():
    refs = [["a red square on black", "the red square is in the middle", "one small red square"],
            ["a blue stripe", "a vertical blue stripe on a black background"]]
    preds = ["the red square is in the middle", "a vertical blue stripe on a black background"]
    assert bleu(preds, refs) == pytest.approx(100.0)  # each prediction equals its 2nd reference
    assert bleu(preds, [r[0] for r in refs]) < 50  # scored against the first reference only
    assert exact_match(preds, refs) == 1.0 and exact_match(preds, [r[0] for r in refs]) == 0.0
    # "a red square" against its best reference, "a red square on black": 3 of 5 tokens; "blue stripe"
    # against "a blue stripe": 0 of 3 (shifted); best shares: 3/5 > 1/6 ("one small red square": 0/4)
    assert token_accuracy(["a red square", "blue stripe"], refs) == pytest.approx((3 + 0) / (5 + 3))
    with pytest.raises(InputError, match=r"refs\[1\]"):
        bleu(preds, [["x"], []])


def good_doc(n: int = 3) -> dict:
    return {"images": [{"id": i, "file_name": f"{i:06d}.png"} for i in range(n)],
            "annotations": [{"image_id": i, "caption": f"caption {i}"} for i in range(n)]}


def broken(change):
    doc = good_doc()
    change(doc)
    return doc


@pytest.mark.parametrize("doc, message", [
    (broken(lambda d: d.pop("annotations")), "has no 'annotations' key"),
    (broken(lambda d: d["images"][1].pop("file_name")), r"images\[1\] has no 'file_name' key"),
    (broken(lambda d: d["images"][2].pop("id")), r"images\[2\] has no 'id' key"),
    (broken(lambda d: d["annotations"][0].pop("caption")), r"annotations\[0\] has no 'caption' key"),
    (broken(lambda d: d["annotations"][1].update(caption="   ")), r"annotations\[1\] \(image_id 1\): the caption is empty"),
    (broken(lambda d: d["annotations"][1].update(caption=7)), r"annotations\[1\]: 'caption' is 7"),
    (broken(lambda d: d["annotations"].pop(2)), r"1 image\(s\) have no caption, e.g. id 2 \(000002.png\)"),
    (broken(lambda d: d["annotations"][0].update(image_id=99)), "image_id 99 is not the id of any entry"),
    (broken(lambda d: d["images"].append({"id": 0, "file_name": "x.png"})), "image id 0 repeats"),
    (broken(lambda d: d["images"].append({"id": 5, "file_name": "gone.png"})
            or d["annotations"].append({"image_id": 5, "caption": "gone"})), r"gone.png \(id 5 .*does not exist"),
    ([1, 2], "expected a JSON object, got list"),
])
def test_malformed_files_name_the_problem(tmp_path, doc, message):
    make_coco(tmp_path, n=3, doc=doc)
    with pytest.raises(InputError, match=message):
        load_coco(tmp_path)


def test_unreadable_files_and_ambiguous_folders(tmp_path):
    make_coco(tmp_path, n=3, doc=good_doc())
    (tmp_path / "images" / "000001.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="000001.png .id 1. cannot be read"):
        load_coco(tmp_path)
    (tmp_path / "captions_train.json").write_text("{not json")
    with pytest.raises(InputError, match="captions_train.json is not valid JSON"):
        load_coco(tmp_path)
    (tmp_path / "captions_val.json").write_text(json.dumps(good_doc()))
    with pytest.raises(InputError, match="several caption files"):
        load_coco(tmp_path)
    (tmp_path / "images").rename(tmp_path / "pictures")
    with pytest.raises(InputError, match="000000.png.*is in none of.*data.options.images=FOLDER"):
        load_coco(tmp_path, annotations="captions_val.json")
    Image.fromarray(picture(1)).save(tmp_path / "pictures" / "000001.png")
    assert len(load_coco(tmp_path, annotations="captions_val.json", images="pictures")) == 3
    with pytest.raises(InputError, match=r"no captions_\*.json"):
        load_coco(tmp_path / "pictures")


def test_one_epoch_through_the_cli(tmp_path):
    make_coco(tmp_path / "coco", n=24)
    out = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "train", "--data", str(tmp_path / "coco"), "--out", str(out), "--set", "train.max_epochs=1",
        "--set", "train.progress=false", "--set", "train.tensorboard=false", "--set", "train.batch_size=8",
        "--set", "data.options.image_size=8", "--set", "model.model=mopoe", "--set", "model.latent_dim=4",
        "--set", "model.conditional_prior=null",
        "--set", "model.modalities.image.arch=mlp", "--set", "model.modalities.caption.hidden=16"])
    assert result.exit_code == 0, result.output
    assert (out / "model" / "tokenizer_caption.json").is_file()
    run = yaml.safe_load((out / "run.yaml").read_text())
    assert run["data"]["source"] == "coco" and run["data"]["options"]["image_size"] == 8
