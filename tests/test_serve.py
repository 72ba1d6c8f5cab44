"""`omnivae serve`: every JSON endpoint against a small shapes model trained once per session,
known answers where the library gives them (embeddings, anomaly scores, retrieval of an
indexed item, interpolation end points), seeds, the limits, bad input (always a 4xx JSON
message, never a 500), the page and the command line."""
from __future__ import annotations

import asyncio
import base64
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

import httpx  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from omnivae.cli import app as cli_app  # noqa: E402
from omnivae.errors import ConfigError  # noqa: E402
from omnivae.serve import Limits, create_app  # noqa: E402

TINY = {
    "data": {"source": "shapes", "options": {"n": 240, "level": "easy", "image_size": 16}, "test_fraction": 0.2},
    "model": {"model": "mopoe", "latent_dim": 4, "modalities": {
        "image": {"arch": "mlp", "hidden": [32]}, "text": {"hidden": 16, "embed_dim": 8, "max_len": 6}}},
    "train": {"max_epochs": 2, "batch_size": 32, "progress": False, "tensorboard": False, "num_threads": 1,
              "seed": 0},
}
_RUNS: dict = {}


def trained_run(tmp_path_factory, config=TINY, name="serve"):
    """A run folder (model + run.yaml) trained once per session and config (a few seconds)."""
    key = json.dumps(config, sort_keys=True)
    if key not in _RUNS:
        from omnivae.run import train_run

        _RUNS[key] = train_run(config, tmp_path_factory.mktemp(name) / "run")
    return _RUNS[key]


def png_b64(array_chw: np.ndarray, fmt: str = "PNG") -> str:
    a = array_chw.transpose(1, 2, 0) if array_chw.shape[0] == 3 else array_chw[0]
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(a)).save(buf, format=fmt)
    return base64.b64encode(buf.getvalue()).decode()


def decode_png(url: str) -> np.ndarray:
    assert url.startswith("data:image/png;base64,")
    with Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) as img:
        assert img.format == "PNG"
        return np.asarray(img.convert("RGB"))


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Small requests run fastest on one torch thread (as `omnivae serve` does by default); the
    previous count comes back after the module."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return trained_run(tmp_path_factory)


@pytest.fixture(scope="module")
def client(run):
    app = create_app(run.run_dir / "model", index=run.run_dir, threads=1)
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture(scope="module")
def bare(run):
    """No index; tight limits for the limit tests."""
    app = create_app(run.run_dir / "model", threads=1, limits=Limits(
        max_body_bytes=4000, max_image_side=64, max_n=8, max_steps=5, max_batch=3, max_text_chars=40))
    return TestClient(app, raise_server_exceptions=False)


def ok(response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


# -- endpoints -----------------------------------------------------------------------------------
def test_info_describes_model_and_index(client, run):
    info = ok(client.get("/api/info"))
    assert info["model"] == "mopoe" and info["latent_dim"] == 4 and info["conditional_prior"] is True
    assert info["modalities"] == [{"name": "image", "kind": "image", "drawn": "picture", "shape": [3, 16, 16]},
                                  {"name": "text", "kind": "text", "drawn": "words", "max_len": 6}]
    assert info["index"]["loaded"] and info["index"]["size"] == len(run.splits.test)
    assert set(info["index"]["galleries"]) == {"image", "text"} and "neg_elbo" in info["index"]["scores"]
    assert info["limits"]["max_n"] == Limits().max_n


def test_generate_text_to_image_is_deterministic_per_seed(client):
    body = {"inputs": {"text": ["a red circle", "a blue square"]}, "targets": ["image", "text"], "n": 3, "seed": 7}
    first = ok(client.post("/api/generate", json=body))
    assert first["seed"] == 7 and first["kinds"] == {"image": "image", "text": "text"}
    images = first["outputs"]["image"]
    assert len(images) == 2 and all(len(row) == 3 for row in images)
    assert all(decode_png(u).shape == (16, 16, 3) for row in images for u in row)
    assert all(isinstance(t, str) for row in first["outputs"]["text"] for t in row)
    assert ok(client.post("/api/generate", json=body)) == first
    other = ok(client.post("/api/generate", json={**body, "seed": 8}))
    assert other["outputs"]["image"] != images
    # no seed: the one drawn is returned, and repeating it repeats the output
    free = ok(client.post("/api/generate", json={**body, "seed": None}))
    assert ok(client.post("/api/generate", json={**body, "seed": free["seed"]}))["outputs"] == free["outputs"]


def test_generate_defaults_mean_and_joint_samples(client):
    out = ok(client.post("/api/generate", json={"inputs": {"text": ["a red circle"]}, "temperature": 0}))
    assert list(out["outputs"]) == ["image"]  # default targets: every modality not given
    again = ok(client.post("/api/generate", json={"inputs": {"text": ["a red circle"]}, "temperature": 0, "seed": 99}))
    assert again["outputs"] == out["outputs"]  # the posterior mean does not depend on the seed
    joint = ok(client.post("/api/generate", json={"n": 4, "seed": 0}))
    assert len(joint["outputs"]["image"][0]) == 4 and len(joint["outputs"]["text"][0]) == 4
    cool = ok(client.post("/api/generate", json={"inputs": {"text": ["a red circle"]}, "n": 2, "temperature": 0.5,
                                                "seed": 0}))
    assert len(cool["outputs"]["image"][0]) == 2


def test_caption_accepts_data_urls_raw_base64_and_jpeg(client, run):
    image = run.splits.test.modalities["image"][0]
    url = "data:image/png;base64," + png_b64(image)
    out = ok(client.post("/api/caption", json={"image": url}))
    assert isinstance(out["caption"], str) and out["caption"] and out["target"] == "text"
    assert ok(client.post("/api/caption", json={"image": png_b64(image)}))["caption"] == out["caption"]
    assert isinstance(ok(client.post("/api/caption", json={"image": png_b64(image, "JPEG")}))["caption"], str)


def test_embed_equals_the_library(client, run):
    from omnivae.tasks.embed import embed

    captions = ["a red circle", "a green triangle"]
    out = ok(client.post("/api/embed", json={"inputs": {"text": captions}}))
    assert out["latent_dim"] == 4
    assert np.allclose(out["embeddings"], embed(run.model, {"text": captions}), atol=1e-5)
    image = run.splits.test.modalities["image"][:2]
    both = ok(client.post("/api/embed", json={"inputs": {"text": captions, "image": [png_b64(i) for i in image]},
                                              "given": ["image"]}))
    assert np.allclose(both["embeddings"], embed(run.model, {"image": image}), atol=1e-5)


def test_retrieve_finds_indexed_items(client, run):
    test = run.splits.test
    caption = test.modalities["text"][3]
    out = ok(client.post("/api/retrieve", json={"query": {"text": [caption]}, "gallery": "text", "k": 4}))
    hits = out["results"][0]
    assert len(hits) == 4 and hits[0]["item"] == caption and hits[0]["score"] > 0.9999
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    image = test.modalities["image"][5]
    out = ok(client.post("/api/retrieve", json={"query": {"image": [png_b64(image)]}, "gallery": "image", "k": 3}))
    top = out["results"][0][0]
    assert top["score"] > 0.9999 and (decode_png(top["thumbnail"]) == image.transpose(1, 2, 0)).all()
    assert all(isinstance(h["caption"], str) and "shape=" in h["description"] for h in out["results"][0])
    likely = ok(client.post("/api/retrieve", json={"query": {"text": [caption]}, "gallery": "image", "k": 2,
                                                   "score": "likelihood"}))
    assert len(likely["results"][0]) == 2


def test_anomaly_scores_equal_the_library(client, run):
    from omnivae.data.raw import RawData
    from omnivae.tasks.detect import AnomalyDetector

    test = run.splits.test
    images, captions = test.modalities["image"][:3], list(test.modalities["text"][:3])
    out = ok(client.post("/api/anomalies", json={"inputs": {"image": [png_b64(i) for i in images], "text": captions}}))
    want = AnomalyDetector(run.model, seed=0).score(RawData({"image": images, "text": captions},
                                                            {"image": "image", "text": "text"}))
    assert set(out["scores"]) == set(want)
    for name, values in want.items():
        assert np.allclose(out["scores"][name], values, rtol=1e-5), name

    top = ok(client.get("/api/anomalies/top", params={"k": 5}))
    every = np.sort(AnomalyDetector(run.model, seed=0).score(test)["neg_elbo"])[::-1]
    assert top["size"] == len(test) and [r["rank"] for r in top["rows"]] == [1, 2, 3, 4, 5]
    assert np.allclose([r["score"] for r in top["rows"]], every[:5], rtol=1e-5)
    assert all(decode_png(r["thumbnail"]).shape == (16, 16, 3) and r["caption"] for r in top["rows"])
    other = ok(client.get("/api/anomalies/top", params={"k": 2, "score": "disagreement"}))
    assert other["score"] == "disagreement" and len(other["rows"]) == 2


def test_interpolation_starts_and_ends_at_the_inputs(client):
    a, b = "a red circle", "a blue square"
    out = ok(client.post("/api/interpolate", json={"modality": "text", "a": a, "b": b, "target": "image", "steps": 5}))
    assert out["t"] == pytest.approx([0, 0.25, 0.5, 0.75, 1]) and len(out["outputs"]) == 5
    for end, caption in ((0, a), (-1, b)):
        mean = ok(client.post("/api/generate", json={"inputs": {"text": [caption]}, "targets": ["image"],
                                                     "temperature": 0}))["outputs"]["image"][0][0]
        diff = np.abs(decode_png(out["outputs"][end]).astype(int) - decode_png(mean).astype(int))
        assert diff.max() <= 1  # the same code decoded (PNG rounding may differ by one level)
    text = ok(client.post("/api/interpolate", json={"modality": "text", "a": a, "b": b, "target": "text"}))
    assert len(text["outputs"]) == 8 and all(isinstance(t, str) for t in text["outputs"])


def test_traverse_from_prior_mean_and_from_an_input(client):
    out = ok(client.post("/api/traverse", json={"dim": 2, "low": -2, "high": 2, "steps": 5}))
    assert out["values"] == pytest.approx([-2, -1, 0, 1, 2]) and out["target"] == "image"
    frames = [decode_png(u) for u in out["outputs"]]
    assert len(frames) == 5 and any((f != frames[0]).any() for f in frames[1:])
    flat = ok(client.post("/api/traverse", json={"dim": 0, "low": 1, "high": 1, "steps": 3,
                                                 "inputs": {"text": ["a red circle"]}, "target": "text"}))
    assert len(set(flat["outputs"])) == 1  # the same code three times


def test_without_an_index_retrieval_and_ranking_answer_409(bare):
    assert ok(bare.get("/api/info"))["index"]["loaded"] is False
    r = bare.post("/api/retrieve", json={"query": {"text": ["a red circle"]}, "gallery": "image"})
    assert r.status_code == 409 and "--index" in r.json()["detail"]
    r = bare.get("/api/anomalies/top")
    assert r.status_code == 409 and "--index" in r.json()["detail"]


def test_page_and_openapi(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    for element in ("gen-caption", "gen-button", "gen-images", "image-file", "caption-text", "neighbours",
                    "interp-slider", "interp-image", "anomaly-rows"):
        assert f'id="{element}"' in r.text
    paths = ok(client.get("/openapi.json"))["paths"]
    for path in ("/api/info", "/api/generate", "/api/caption", "/api/embed", "/api/retrieve", "/api/anomalies",
                 "/api/anomalies/top", "/api/interpolate", "/api/traverse"):
        assert path in paths
    assert client.get("/docs").status_code == 200


def test_labels_and_vectors_in_and_out(make_raw, tiny_config, tmp_path):
    """An untrained image + label + vector MVAE (no conditional prior): class labels and
    vectors as JSON numbers both ways, NaN and wrong sizes refused."""
    from omnivae.models import build_model

    raw = make_raw(24, names=("image", "label", "vector"))
    build_model(tiny_config("mvae", names=("image", "label", "vector")), raw).save(tmp_path / "model")
    c = TestClient(create_app(tmp_path / "model", index=raw, threads=1), raise_server_exceptions=False)
    vectors = raw.modalities["vector"][:2].tolist()
    out = ok(c.post(GEN, json={"inputs": {"vector": vectors}, "targets": ["label", "vector"], "n": 2, "seed": 0}))
    labels, vecs = out["outputs"]["label"], out["outputs"]["vector"]
    assert all(isinstance(v, int) and 0 <= v < 3 for row in labels for v in row)
    assert np.asarray(vecs).shape == (2, 2, 4) and np.isfinite(vecs).all()
    found = ok(c.post("/api/retrieve", json={"query": {"label": [1]}, "gallery": "vector", "k": 3}))
    assert all(len(h["item"]) == 4 and h["thumbnail"].startswith("data:image/png") for h in found["results"][0])
    bad = [({"inputs": {"vector": [[1.0, float("nan"), 0.0, 0.0]]}}, "NaN"),
           ({"inputs": {"vector": [[1.0, 2.0]]}}, "vector"),
           ({"inputs": {"vector": [["a", "b", "c", "d"]]}}, "numbers"),
           ({"inputs": {"label": [7]}}, "label"),
           ({"inputs": {"label": [True]}}, "class index"),
           ({"inputs": {"label": [1]}, "temperature": 0.5}, "conditional prior")]
    for body, words in bad:
        r = c.post(GEN, content=json.dumps(body), headers={"content-type": "application/json"})
        assert r.status_code == 400 and words in r.json()["detail"], (body, r.text)
    # /caption writes the first modality its kind draws as text: here the label's class
    found = ok(c.post("/api/caption", json={"image": png_b64(raw.modalities["image"][0])}))
    assert found["target"] == "label" and isinstance(found["caption"], int) and 0 <= found["caption"] < 3
    r = c.post("/api/caption", json={"image": png_b64(raw.modalities["image"][0]), "target": "vector"})
    assert r.status_code == 400 and "not drawn as a short text" in r.json()["detail"]


# -- bad input -----------------------------------------------------------------------------------
BAD_IMAGE = base64.b64encode(b"this is not an image").decode()
GEN = "/api/generate"
BAD = [
    (GEN, {"inputs": {"audio": ["x"]}}, 400, "audio"),
    (GEN, {"inputs": {"text": ["a red circle"]}, "targets": ["audio"]}, 400, "audio"),
    (GEN, {"inputs": {"text": [""]}}, 400, "empty"),
    (GEN, {"inputs": {"text": [12]}}, 400, "expected a string"),
    (GEN, {"inputs": {"text": []}}, 400, "empty"),
    (GEN, {"inputs": {"text": "a red circle"}}, 422, "list"),
    (GEN, {"inputs": {"image": ["a red circle"]}}, 400, "base64"),
    (GEN, {"inputs": {"image": [BAD_IMAGE]}}, 400, "cannot be read"),
    (GEN, {"inputs": {"image": [[[0.5]]]}}, 400, "base64"),
    (GEN, {"inputs": {"image": ["data:image/png,abc"]}}, 400, "base64"),
    (GEN, {"inputs": {"text": ["a red circle"]}, "n": 100_000}, 400, "at most"),
    (GEN, {"inputs": {"text": ["a red circle"]}, "n": 0}, 422, "n"),
    (GEN, {"inputs": {"text": ["a red circle"]}, "n": 2.5}, 422, "n"),
    (GEN, {"inputs": {"text": ["a red circle"]}, "temperature": -1}, 422, "temperature"),
    (GEN, {"inputs": {"text": ["a red circle"]}, "seed": -3}, 422, "seed"),
    (GEN, {"inputs": {"text": ["a red circle"]}, "sampler": "magic"}, 422, "sampler"),
    (GEN, {"inputs": {"text": ["a red circle"]}, "colour": "red"}, 422, "colour"),
    (GEN, {"inputs": {"text": ["a red circle"]}, "temperature": 0.5, "sampler": "posterior"}, 400, "conditional prior"),
    (GEN, {"inputs": {"text": ["a red circle", "a blue square"], "image": [BAD_IMAGE]}}, 400, "image"),
    ("/api/caption", {"image": ""}, 400, "empty"),
    ("/api/caption", {"image": "%%%"}, 400, "base64"),
    ("/api/caption", {"image": BAD_IMAGE, "target": "image"}, 400, "not drawn as a short text"),
    ("/api/caption", {}, 422, "image"),
    ("/api/embed", {"inputs": {"text": ["a red circle"]}, "given": ["audio"]}, 400, "audio"),
    ("/api/embed", {"inputs": {}}, 400, "empty"),
    ("/api/retrieve", {"query": {"text": ["a red circle"]}, "gallery": "audio"}, 400, "audio"),
    ("/api/retrieve", {"query": {"text": ["a red circle"]}, "gallery": "image", "k": 10_000}, 400, "at most"),
    ("/api/retrieve", {"query": {"text": ["a red circle"]}, "gallery": "image", "score": "vibes"}, 422, "score"),
    ("/api/anomalies", {"inputs": {"text": [None]}}, 400, "string"),
    ("/api/interpolate", {"modality": "text", "a": "a red circle", "b": "", "steps": 4}, 400, "empty"),
    ("/api/interpolate", {"modality": "text", "a": "a red circle", "b": "a blue square", "steps": 1000},
     400, "at most"),
    ("/api/interpolate", {"modality": "image", "a": "a red circle", "b": "a blue square"}, 400, "base64"),
    ("/api/traverse", {"dim": 99}, 400, "dimensions"),
    ("/api/traverse", {"dim": -1}, 422, "dim"),
    ("/api/traverse", {"dim": 0, "inputs": {"text": ["a red circle", "a blue square"]}}, 400, "one input"),
]


@pytest.mark.parametrize("path, body, status, words", BAD, ids=[f"{i}-{c[0]}" for i, c in enumerate(BAD)])
def test_bad_input_gets_a_4xx_json_message(client, path, body, status, words):
    r = client.post(path, json=body)
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and words in detail and "Traceback" not in r.text


@pytest.mark.parametrize("content, status, words", [
    (b"{not json", 400, "not valid JSON"),
    (b'{"inputs": {"text": ["a red circle"]}, "temperature": NaN}', 422, "finite"),
    (b'{"dim": 1, "low": -Infinity}', 422, "finite"),
    (b"[1, 2, 3]", 422, "dictionary"),
    (b"", 422, "required"),
    ("\u00ff\u00fe".encode("latin-1"), 400, "JSON"),
])
def test_malformed_bodies_get_a_4xx_json_message(client, content, status, words):
    path = "/api/traverse" if b"dim" in content else GEN
    r = client.post(path, content=content, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert words in r.json()["detail"]


@pytest.mark.parametrize("query, status", [({"k": 0}, 422), ({"k": "abc"}, 422), ({"k": 10_000}, 400),
                                           ({"score": "nope"}, 400)])
def test_bad_anomaly_queries(client, query, status):
    r = client.get("/api/anomalies/top", params=query)
    assert r.status_code == status and isinstance(r.json()["detail"], str)


# -- limits ----------------------------------------------------------------------------------------
def test_limits_body_size_image_side_counts_and_text(bare, run):
    r = bare.post(GEN, json={"inputs": {"text": ["x" * 5000]}})
    assert r.status_code == 413 and "4000 bytes" in r.json()["detail"]
    chunked = bare.post(GEN, content=iter([b'{"inputs": {"text": ["', b"y" * 3000, b"z" * 3000, b'"]}}']),
                        headers={"content-type": "application/json"})
    assert chunked.status_code == 413, chunked.text
    wide = np.zeros((3, 2, 100), dtype=np.uint8)
    r = bare.post("/api/caption", json={"image": png_b64(wide)})
    assert r.status_code == 400 and "100x2" in r.json()["detail"] and "64" in r.json()["detail"]
    assert bare.post(GEN, json={"inputs": {"text": ["a red circle"]}, "n": 9}).status_code == 400
    assert ok(bare.post(GEN, json={"inputs": {"text": ["a red circle"]}, "n": 8}))["n"] == 8
    r = bare.post(GEN, json={"inputs": {"text": ["a red circle"] * 4}})
    assert r.status_code == 400 and "at most 3" in r.json()["detail"]
    r = bare.post(GEN, json={"inputs": {"text": ["a " * 30]}})
    assert r.status_code == 400 and "at most 40" in r.json()["detail"]
    r = bare.post("/api/traverse", json={"dim": 0, "steps": 6})
    assert r.status_code == 400 and "at most 5" in r.json()["detail"]


def test_limits_are_checked():
    for bad in ({"max_n": 0}, {"timeout_s": float("nan")}, {"max_queue": 2.5}, {"max_body_bytes": True}):
        with pytest.raises(ConfigError):
            Limits(**bad)
    with pytest.raises(ConfigError, match="threads"):
        create_app("no-such-model", threads=0)


def test_timeout_answers_504_and_the_server_goes_on(run):
    client = TestClient(create_app(run.run_dir / "model", limits=Limits(timeout_s=1e-6), threads=1),
                        raise_server_exceptions=False)
    r = client.post(GEN, json={"inputs": {"text": ["a red circle"] * 16}, "n": 64})
    assert r.status_code == 504 and "did not answer" in r.json()["detail"]
    assert ok(client.get("/api/info"))["model"] == "mopoe"


def test_a_full_queue_answers_503(run):
    app = create_app(run.run_dir / "model", limits=Limits(max_queue=1), threads=1)

    async def flood():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            body = {"inputs": {"text": ["a red circle"] * 16}, "n": 64, "seed": 0}
            return await asyncio.gather(*(c.post(GEN, json=body) for _ in range(8)))

    codes = [r.status_code for r in asyncio.run(flood())]
    assert 200 in codes and 503 in codes and set(codes) <= {200, 503}, codes


def test_unexpected_errors_are_a_500_json_without_traceback(run):
    app = create_app(run.run_dir / "model", threads=1)

    def boom():
        raise RuntimeError("secret internals")

    app.add_api_route("/api/boom", boom)
    r = TestClient(app, raise_server_exceptions=False).get("/api/boom")
    assert r.status_code == 500 and r.json() == {"detail": "internal server error (RuntimeError)"}
    assert "secret" not in r.text and "Traceback" not in r.text


# -- command line ---------------------------------------------------------------------------------
runner = CliRunner()


def test_cli_serve_help_and_clean_refusals(run, tmp_path):
    result = runner.invoke(cli_app, ["serve", "--help"])
    text = " ".join(result.output.split())
    assert result.exit_code == 0 and all(o in text for o in ("--model", "--index", "--host", "--port", "127.0.0.1"))
    for args, words in [
        (["--model", str(tmp_path / "missing")], "does not exist"),
        (["--model", str(tmp_path)], "config.json is missing"),
        (["--model", str(run.run_dir / "model"), "--index", "nowhere"], "unknown data source"),
        (["--model", str(run.run_dir / "model"), "--port", "70000"], "--port"),
        (["--model", str(run.run_dir / "model"), "--max-n", "0"], "max_n"),
        (["--model", str(run.run_dir / "model"), "--index", str(run.run_dir), "--split", "some"], "--split"),
    ]:
        result = runner.invoke(cli_app, ["serve", *args])
        text = " ".join(result.output.split())
        assert result.exit_code == 2 and words in text and "Traceback" not in text, (args, result.output)
