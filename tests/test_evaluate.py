"""evaluate_model and `omnivae evaluate`: every metric and report section on the shapes
model, and metrics that do not apply are skipped with a reason instead of crashing."""
import io
import json
import math

import numpy as np
import pytest
from PIL import Image
from test_tasks import shapes_run
from typer.testing import CliRunner

from omnivae.data.raw import RawData
from omnivae.models import build_model
from omnivae.report.html import read_report_images
from omnivae.tasks.evaluate import Extra, evaluate_model

SECTIONS = ("Metrics", "Latent probes", "Retrieval", "Retrieval examples", "Anomaly detection",
            "Highest anomaly scores", "Likelihood", "Fréchet distance", "Text to image", "Image to text",
            "Joint samples", "Reconstructions", "Latent space", "Latent space paths", "Training curves",
            "Overfitting", "Configuration", "Data", "Training time")
NEW_KEYS = ("latent_probes", "retrieval", "anomaly", "log_likelihood", "frechet_distance", "reconstruction",
            "skipped")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return shapes_run(tmp_path_factory)


def check_report(path, titles):
    html = path.read_text(encoding="utf-8")
    for title in titles:
        assert f"<h2>{title}</h2>" in html, title
    images = read_report_images(path)
    for alt, data in images:
        with Image.open(io.BytesIO(data)) as img:
            img.verify()  # every embedded PNG decodes
    return images


@pytest.mark.slow
def test_evaluate_model_reports_every_metric_and_section(trained, tmp_path):
    from omnivae.tasks.evaluate import EVALUATION_STEPS

    out, steps = tmp_path / "eval", []
    metrics = evaluate_model(trained.model, trained.splits.train, trained.splits.test, out,
                             run_dir=trained.run_dir, n_eval=300, progress=lambda s, total: steps.append((s, total)))
    assert steps == [(s, len(EVALUATION_STEPS)) for s in EVALUATION_STEPS]  # a progress bar can follow it
    assert json.loads((out / "metrics.json").read_text()) == metrics
    for key in NEW_KEYS:
        assert key in metrics, key
    assert metrics["skipped"] == {}
    probes = metrics["latent_probes"]
    assert set(probes) == {"joint", "image", "text"}
    assert probes["joint"]["shape"]["linear_probe"] > 0.9 and -1e-9 <= probes["image"]["color"]["kmeans_nmi"] <= 1 + 1e-9
    assert metrics["retrieval"]["text->image"]["R@1"] > 0.8 and metrics["retrieval"]["image->text"]["R@10"] > 0.9
    assert set(metrics["anomaly"]) == {"mismatched_text", "corrupted_image"}
    assert metrics["anomaly"]["mismatched_text"]["disagreement"]["auroc"] > 0.9
    assert metrics["anomaly"]["corrupted_image"]["nll_image"]["auroc"] > 0.9
    ll = metrics["log_likelihood"]
    assert ll["k"] == 10 and ll["joint"] < 0 and ll["joint"] < ll["text"]
    assert ll["joint"] == pytest.approx(ll["image"] + ll["image->text"], abs=2.0)  # chain rule, up to noise
    rec = metrics["reconstruction"]["image"]  # PSNR is 10 log10(1 / MSE) on [0, 1] pixels
    assert 0 < rec["mse"] < 0.1 and rec["psnr_db"] == pytest.approx(10 * math.log10(1 / rec["mse"]), rel=1e-4)
    fd = metrics["frechet_distance"]["image"]
    assert fd["text->image"] < fd["prior_samples"] or fd["text->image"] < 5.0
    images = check_report(out / "report.html", SECTIONS)
    assert len(images) >= 8


def test_metrics_that_do_not_apply_are_skipped(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 120)
    vectors = (rng.normal(size=(120, 4)) + 3 * labels[:, None]).astype(np.float32)
    raw = RawData({"vector": vectors}, {"vector": "vector"}, targets={"label": labels})
    train, test = raw.split((0.5, 0.5))
    model = build_model({"model": "vae", "latent_dim": 2,
                         "modalities": {"vector": {"kind": "vector", "dim": 4, "hidden": [8]}}}, train)
    metrics = evaluate_model(model, train, test, tmp_path / "eval", scorer_epochs=1)
    assert set(metrics["skipped"]) == {"retrieval", "anomaly", "frechet_distance"}
    assert "two modalities" in metrics["skipped"]["retrieval"]
    assert "image" in metrics["skipped"]["frechet_distance"]
    assert metrics["latent_probes"]["joint"]["label"]["linear_probe"] > 0.5
    assert np.isfinite(metrics["log_likelihood"]["joint"])
    html = (tmp_path / "eval" / "report.html").read_text(encoding="utf-8")
    assert "Skipped: retrieval needs at least two modalities" in html
    check_report(tmp_path / "eval" / "report.html", ("Metrics", "Latent probes", "Retrieval", "Likelihood"))

    def broken(self):
        raise RuntimeError("boom")

    monkeypatch.setattr(Extra, "likelihood", broken)  # an unexpected failure is reported, not raised
    with pytest.warns(UserWarning, match="boom"):
        metrics = evaluate_model(model, train, test, tmp_path / "eval2", scorer_epochs=1)
    assert metrics["skipped"]["log_likelihood"] == "failed: RuntimeError: boom"
    assert "log_likelihood" not in metrics and "latent_probes" in metrics


@pytest.mark.slow
def test_cli_evaluate_on_the_run_test_split(trained, tmp_path, monkeypatch):
    from omnivae.cli import app

    out = tmp_path / "cli_eval"
    result = CliRunner().invoke(app, ["evaluate", "--run", str(trained.run_dir), "--out", str(out),
                                      "--n-eval", "200", "--scorer-epochs", "1"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_test"] == len(trained.splits.test)
    for key in NEW_KEYS:
        assert key in metrics
    check_report(out / "report.html", SECTIONS)
    cached = sorted(p.name for p in (trained.run_dir / "scorers").iterdir())
    assert any(n.endswith(".safetensors") for n in cached), cached

    def boom(*args, **kwargs):
        raise AssertionError("the evaluation classifier was trained again")

    monkeypatch.setattr("omnivae.metrics.classifier.train_classifier", boom)  # a second evaluation reuses it
    again = CliRunner().invoke(app, ["evaluate", "--run", str(trained.run_dir), "--out", str(tmp_path / "again"),
                                     "--n-eval", "200", "--scorer-epochs", "1"])
    assert again.exit_code == 0, again.output
    assert json.loads((tmp_path / "again" / "metrics.json").read_text())["coherence"] == metrics["coherence"]
    monkeypatch.undo()
    result = CliRunner().invoke(app, ["evaluate", "--model", str(trained.run_dir / "model"), "--data", "shapes",
                                      "--set", "data.options.n=300", "--set", "data.options.image_size=16",
                                      "--out", str(tmp_path / "e2"), "--n-eval", "30", "--scorer-epochs", "1"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "e2" / "metrics.json").read_text())["n_test"] == 30


# -- shared work: each piece computed once, with the numbers of computing it per metric ----------
def two_vector_data(n=40, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    a = (rng.normal(size=(n, 4)) + 2 * labels[:, None]).astype(np.float32)
    b = (rng.normal(size=(n, 3)) - labels[:, None]).astype(np.float32)
    mask = {"a": np.ones(n, dtype=bool), "b": np.arange(n) % 3 != 0}  # b missing in a third
    return RawData({"a": a, "b": b}, {"a": "vector", "b": "vector"}, mask, targets={"label": labels})


def vector_model(family, raw):
    import torch

    torch.manual_seed(0)
    return build_model({"model": family, "latent_dim": 3, "modalities": {
        "a": {"kind": "vector", "dim": 4, "hidden": [8]}, "b": {"kind": "vector", "dim": 3, "hidden": [8]}}},
        raw).eval()


@pytest.mark.parametrize("family", ["mopoe", "mvae", "jmvae"])  # jmvae: its own encode_unimodal, per view
def test_view_codes_equal_embed_for_every_view(family):
    from omnivae.data.tensors import TensorData
    from omnivae.tasks.embed import embed
    from omnivae.tasks.evaluate import view_codes

    raw = two_vector_data()
    model = vector_model(family, raw)
    data = TensorData.from_raw(model, raw)
    views = {"joint": None, "a": ["a"], "b": ["b"]}
    codes = view_codes(model, data, views, batch_size=16)
    for view, given in views.items():
        assert np.allclose(codes[view], embed(model, data, given=given), atol=1e-6), view


def test_benchmark_scores_from_clean_scores_and_the_anomalous_rows():
    from omnivae.tasks.detect import AnomalyDetector, mismatched_pairs
    from omnivae.tasks.evaluate import with_rows

    raw = two_vector_data()
    model = vector_model("mopoe", raw)
    detector = AnomalyDetector(model, batch_size=8)
    bench, is_anomaly = mismatched_pairs(raw, "b", 0.25, seed=0)
    whole = detector.score(bench)
    parts = with_rows(detector.score(raw), is_anomaly, detector.score(bench.subset(np.nonzero(is_anomaly)[0])))
    assert set(parts) == set(whole)
    for name in whole:
        if name != "neg_elbo":  # a sampled score: the same law, other draws
            assert np.allclose(parts[name], whole[name], atol=1e-5, equal_nan=True), name
    assert not np.allclose(np.nan_to_num(parts["nll_b"]), np.nan_to_num(detector.score(raw)["nll_b"]))


def test_frechet_distance_reuses_the_draws_coherence_kept(tmp_path):
    import torch

    from omnivae.data.tensors import TensorData
    from omnivae.report import figures
    from omnivae.report.html import Section

    raw = two_vector_data()
    model = vector_model("mopoe", raw)
    data = TensorData.from_raw(model, raw)
    kept = {"prior->a": torch.randn(50, 4), "b->a": torch.randn(40, 4)}
    extra = Extra(model, raw, raw, data, {}, tmp_path, figures, Section, 1000, 0, kept)
    batch = data.batch(torch.arange(30))
    assert torch.equal(extra.drawn("a", None, batch), kept["prior->a"][:30])
    assert torch.equal(extra.drawn("a", "b", batch), kept["b->a"][:30])
    fresh = extra.drawn("b", "a", batch)  # nothing kept: generated here
    assert fresh.shape == (30, 3)
    short = Extra(model, raw, raw, data, {}, tmp_path, figures, Section, 1000, 0, {"prior->a": torch.randn(5, 4)})
    assert short.drawn("a", None, batch).shape == (30, 4)  # too few kept: drawn anew
