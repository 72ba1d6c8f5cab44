"""Tasks over a model: embed, retrieve, detect, impute, and their command-line verbs.

Known answers come from hand-set models (identity encoders and decoders, where embeddings,
retrieval ranks, cross-likelihoods and imputations are exact) and from one small model
trained once on the built-in shapes data (shared with test_evaluate.py).
"""
import csv
import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from omnivae.data.raw import RawData
from omnivae.data.shapes import make_shapes, parse_caption
from omnivae.data.tensors import TensorData
from omnivae.errors import InputError
from omnivae.metrics.anomaly import auroc
from omnivae.models import build_model
from omnivae.tasks.detect import (
    AnomalyDetector,
    corrupted,
    mismatched_pairs,
    symmetric_kl,
)
from omnivae.tasks.embed import embed, load_embeddings, save_embeddings
from omnivae.tasks.impute import impute, load_npz, save
from omnivae.tasks.retrieve import RetrievalIndex, retrieval_metrics

DIM = 8
LOGVAR = -2.0  # every expert's log-variance in the identity model

SHAPES_RUN = {
    "data": {"source": "shapes", "options": {"n": 1200, "level": "easy", "image_size": 16, "seed": 0},
             "test_fraction": 0.2},
    "model": {"model": "mopoe", "latent_dim": 8, "modalities": {
        "image": {"arch": "mlp", "hidden": [128]},
        "text": {"hidden": 32, "embed_dim": 16, "max_len": 6}}},
    "train": {"max_epochs": 8, "batch_size": 32, "lr": 2e-3, "patience": None, "num_threads": 1,
              "progress": False, "tensorboard": False, "seed": 0},
}
_CACHE = {}


def shapes_run(tmp_path_factory):
    """The trained shapes run, trained once per test session (~10 s on one thread)."""
    if "run" not in _CACHE:
        from omnivae.run import train_run

        _CACHE["run"] = train_run(SHAPES_RUN, tmp_path_factory.mktemp("shapes") / "run")
    return _CACHE["run"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return shapes_run(tmp_path_factory)


def identity_model(names=("a", "b")):
    """MoPoE over vector modalities of size DIM = latent size, with identity encoder means,
    constant log-variance LOGVAR and identity decoders with unit Gaussian scale."""
    config = {"model": "mopoe", "latent_dim": DIM, "modalities": {
        n: {"kind": "vector", "dim": DIM, "hidden": [], "learn_scale": False} for n in names}}
    model = build_model(config).eval()
    with torch.no_grad():
        for mod in model.modalities.values():
            enc, dec = mod.encoder[0], mod.decoder[0]
            enc.weight.zero_(), enc.bias.zero_()
            enc.weight[:DIM].copy_(torch.eye(DIM))
            enc.bias[DIM:].fill_(LOGVAR)
            dec.weight.copy_(torch.eye(DIM)), dec.bias.zero_()
    return model


def gaussian_nll(x, mean):
    return 0.5 * ((x - mean) ** 2).sum(-1) + 0.5 * x.shape[-1] * math.log(2 * math.pi)


# -- embed ----------------------------------------------------------------------------------
def test_embed_identity_model_returns_the_inputs_in_any_batching():
    model = identity_model()
    a, b = torch.randn(23, DIM), torch.randn(23, DIM)
    data = TensorData({"a": a, "b": b}, {"a": torch.ones(23, dtype=torch.bool), "b": torch.ones(23, dtype=torch.bool)})
    assert np.allclose(embed(model, data, given=["a"], batch_size=5), a.numpy(), atol=1e-5)
    assert np.allclose(embed(model, {"b": b.numpy()}, given=["b"], batch_size=4), b.numpy(), atol=1e-5)
    # equal experts: the product's mean is the average
    assert np.allclose(embed(model, data, batch_size=7), ((a + b) / 2).numpy(), atol=1e-5)
    raw = RawData({"a": a.numpy(), "b": b.numpy()}, {"a": "vector", "b": "vector"},
                  {"b": np.arange(23) % 2 == 0})
    z = embed(model, raw)  # where b is missing only a is used
    expected = np.where((np.arange(23) % 2 == 0)[:, None], ((a + b) / 2).numpy(), a.numpy())
    assert z.shape == (23, DIM) and np.allclose(z, expected, atol=1e-5)


def test_save_embeddings_npy_and_parquet_round_trip(tmp_path):
    z = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    assert np.array_equal(load_embeddings(save_embeddings(z, tmp_path / "z.npy")), z)
    pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = save_embeddings(z, tmp_path / "z.parquet", index=[10, 11, 12, 13, 14])
    table = pq.read_table(path)
    assert table.num_rows == 5 and table.column_names == ["index", "z_0", "z_1", "z_2"]
    assert np.array_equal(load_embeddings(path), z)
    with pytest.raises(InputError, match="npy"):
        save_embeddings(z, tmp_path / "z.txt")  # .csv is a table format now (tests/test_embed_output.py)
    with pytest.raises(InputError, match=r"\[N, D\]"):
        save_embeddings(z[0], tmp_path / "z.npy")


# -- retrieve -------------------------------------------------------------------------------
def test_retrieval_index_finds_the_exact_match_and_skips_missing_gallery_items():
    model = identity_model()
    rng = np.random.default_rng(0)
    a = rng.normal(size=(10, DIM)).astype(np.float32)
    perm = rng.permutation(10)
    gallery_b = 2.5 * a[perm]  # gallery row j holds query perm[j], scaled: cosine is still 1
    mask = np.ones(10, dtype=bool)
    mask[perm == 7] = False  # query 7's match is missing from the gallery
    raw = RawData({"b": gallery_b}, {"b": "vector"}, {"b": mask})
    index = RetrievalIndex(model, raw, "b")
    assert len(index) == 9
    result = index.query({"a": a}, given=["a"], k=3)
    inverse = np.argsort(perm)
    for q in range(10):
        if q == 7:
            assert inverse[7] not in result.indices[q]
        else:
            assert result.indices[q, 0] == inverse[q]
            assert result.scores[q, 0] == pytest.approx(1.0, abs=1e-5)
    assert (np.diff(result.scores, axis=1) <= 1e-6).all()


def test_likelihood_scores_rerank_by_the_exact_gaussian_cross_likelihood():
    model = identity_model()
    a = np.zeros((1, DIM), dtype=np.float32)
    a[0, 0] = 1.0
    far = 3.0 * a  # same direction: cosine 1, but far away
    near = a.copy()
    near[0, 1] = 0.2  # cosine ~0.98, close
    gallery = RawData({"b": np.concatenate([far, near, -a])}, {"b": "vector"})
    index = RetrievalIndex(model, gallery, "b")
    latent = index.query({"a": a}, given=["a"], k=2)
    assert latent.indices[0].tolist() == [0, 1]
    lik = index.query({"a": a}, given=["a"], k=2, score="likelihood")
    assert lik.indices[0].tolist() == [1, 0]
    expected = -gaussian_nll(torch.tensor(np.concatenate([near, far])), torch.tensor(a))
    assert np.allclose(lik.scores[0], expected.numpy(), atol=1e-4)
    with pytest.raises(InputError, match="score"):
        index.query({"a": a}, given=["a"], score="nope")


def test_retrieval_metrics_known_ranks_in_both_directions():
    model = identity_model()
    eye = np.eye(DIM, dtype=np.float32)[:6]
    sigma = [0, 1, 2, 4, 3, 5]  # pairs 3 and 4 are swapped: their true partners are orthogonal
    raw = RawData({"a": eye, "b": eye[sigma]}, {"a": "vector", "b": "vector"}, targets={"id": np.arange(6)})
    report = retrieval_metrics(model, raw, "a", "b")
    expected = {"R@1": 4 / 6, "R@5": 4 / 6, "R@10": 1.0, "median_rank": 1.0}  # swapped ones rank 6th (ties)
    for direction in ("a->b", "b->a"):
        assert report[direction] == pytest.approx(expected), direction
    with pytest.raises(InputError, match="differ"):
        retrieval_metrics(model, raw, "a", "a")


# -- detect ---------------------------------------------------------------------------------
def test_symmetric_kl_matches_torch():
    g = torch.Generator().manual_seed(0)
    mu_a, mu_b, lv_a, lv_b = (torch.randn(5, 3, generator=g) for _ in range(4))
    pa = torch.distributions.Normal(mu_a, (0.5 * lv_a).exp())
    pb = torch.distributions.Normal(mu_b, (0.5 * lv_b).exp())
    expected = (torch.distributions.kl_divergence(pa, pb) + torch.distributions.kl_divergence(pb, pa)).sum(-1)
    assert torch.allclose(symmetric_kl(mu_a, lv_a, mu_b, lv_b), expected, atol=1e-5)


def test_detector_scores_have_their_exact_values_on_the_identity_model():
    model = identity_model()
    rng = np.random.default_rng(1)
    a = rng.normal(size=(6, DIM)).astype(np.float32)
    b = a.copy()
    b[3:] = rng.normal(size=(3, DIM))  # the last three pairs disagree
    mask_b = np.array([True] * 5 + [False])
    scores = AnomalyDetector(model).score(RawData({"a": a, "b": b}, {"a": "vector", "b": "vector"}, {"b": mask_b}))
    ta, tb = torch.tensor(a), torch.tensor(b)
    # cross: b decoded from a's posterior mean (= a) under a unit Gaussian
    assert np.allclose(scores["cross_nll_b"][:5], gaussian_nll(tb, ta)[:5].numpy(), atol=1e-4)
    assert np.isnan(scores["cross_nll_b"][5]) and np.isnan(scores["nll_b"][5]) and np.isnan(scores["cross_nll_a"][5])
    # disagreement: equal variances, so symmetric KL = |mu_a - mu_b|^2 / var
    expected = ((ta - tb) ** 2).sum(-1) / math.exp(LOGVAR)
    assert np.allclose(scores["disagreement"][:5], expected[:5].numpy(), rtol=1e-4, atol=1e-4)
    assert scores["disagreement"][5] == 0.0  # a single modality cannot disagree
    joint = ((ta + tb) / 2).numpy()
    assert np.allclose(scores["nll_a"][:5], gaussian_nll(ta, torch.tensor(joint))[:5].numpy(), atol=1e-4)
    assert (scores["disagreement"][3:5] > scores["disagreement"][:3].max()).all()


def test_negative_elbo_equals_the_exact_negative_log_likelihood_with_the_exact_posterior():
    from test_metrics_likelihood import (
        exact_log_marginal,
        linear_gaussian_model,
        sample_data,
    )

    model = linear_gaussian_model().float()
    x = sample_data(n=16)
    data = TensorData({k: v.float() for k, v in x.items()}, {k: torch.ones(16, dtype=torch.bool) for k in x})
    scores = AnomalyDetector(model, n_samples=4000).score(data)
    exact = -exact_log_marginal(x, ["x1", "x2"]).numpy()
    assert np.allclose(scores["neg_elbo"], exact, atol=0.15)


def test_fit_and_predict_thresholds():
    model = identity_model()
    rng = np.random.default_rng(2)
    a = rng.normal(size=(200, DIM)).astype(np.float32)
    b = a + 0.3 * rng.normal(size=a.shape).astype(np.float32)
    normal = RawData({"a": a, "b": b}, {"a": "vector", "b": "vector"})
    detector = AnomalyDetector(model, score_name="disagreement").fit(normal, contamination=0.1)
    flagged = detector.predict(normal)
    assert flagged.dtype == bool and abs(flagged.mean() - 0.1) <= 0.02
    odd = RawData({"a": a[:10], "b": -a[:10]}, {"a": "vector", "b": "vector"})
    assert detector.predict(odd).all()
    assert abs(detector.fit(normal, fpr=0.2).predict(normal).mean() - 0.2) <= 0.02
    with pytest.raises(InputError, match="not both"):
        detector.fit(normal, contamination=0.1, fpr=0.1)
    with pytest.raises(InputError, match="unknown score"):
        AnomalyDetector(model, score_name="nope").fit(normal)
    with pytest.raises(InputError, match="fit"):
        AnomalyDetector(model).predict(normal)


def test_mismatched_pairs_swap_only_the_chosen_modality():
    raw = make_shapes(300, image_size=16, seed=3)
    bad, is_anomaly = mismatched_pairs(raw, "text", fraction=0.2, seed=1)
    assert is_anomaly.sum() == 60
    assert np.array_equal(bad.modalities["image"], raw.modalities["image"])
    for i, caption in enumerate(bad.modalities["text"]):
        parsed = parse_caption(caption, "easy")
        matches = parsed["shape"] == raw.targets["shape"][i] and parsed["color"] == raw.targets["color"][i]
        assert matches != is_anomaly[i], i  # every swapped caption contradicts its image
    again, flags = mismatched_pairs(raw, "text", fraction=0.2, seed=1)
    assert again.modalities["text"] == bad.modalities["text"] and np.array_equal(flags, is_anomaly)
    with pytest.raises(InputError, match="modality"):
        mismatched_pairs(raw, "audio")


def test_corrupted_images_change_only_the_chosen_images():
    raw = make_shapes(100, image_size=16, seed=4)
    bad, is_anomaly = corrupted(raw, "image", fraction=0.3, seed=0)
    assert is_anomaly.sum() == 30 and bad.modalities["image"].dtype == np.uint8
    changed = (bad.modalities["image"] != raw.modalities["image"]).reshape(100, -1).any(1)
    assert np.array_equal(changed, is_anomaly)
    assert bad.modalities["text"] == raw.modalities["text"]
    assert corrupted(raw, "text", fraction=0.3) is None  # the text kind defines no corruption
    with pytest.raises(InputError, match="no modality 'sound'"):
        corrupted(raw, "sound")


# -- impute ---------------------------------------------------------------------------------
def test_impute_identity_model_copies_the_present_modality(tmp_path):
    model = identity_model()
    rng = np.random.default_rng(5)
    a = rng.normal(size=(12, DIM)).astype(np.float32)
    b = rng.normal(size=(12, DIM)).astype(np.float32)
    mask_a, mask_b = np.arange(12) % 3 != 0, np.arange(12) % 3 != 1
    raw = RawData({"a": a, "b": b}, {"a": "vector", "b": "vector"}, {"a": mask_a, "b": mask_b},
                  targets={"id": np.arange(12)})
    done = impute(model, raw, batch_size=5)
    assert all(m.all() for m in done.mask.values())
    assert np.array_equal(done.info["imputed"]["a"], ~mask_a) and np.array_equal(done.info["imputed"]["b"], ~mask_b)
    assert done.modalities["a"][mask_a].tobytes() == a[mask_a].tobytes()
    assert done.modalities["b"][mask_b].tobytes() == b[mask_b].tobytes()
    assert np.allclose(done.modalities["a"][~mask_a], b[~mask_a], atol=1e-5)  # decoded from b alone
    assert np.allclose(done.modalities["b"][~mask_b], a[~mask_b], atol=1e-5)
    back = load_npz(save(done, tmp_path / "done.npz"))
    assert np.array_equal(back.modalities["a"], done.modalities["a"])
    assert np.array_equal(back.info["imputed"]["b"], ~mask_b) and np.array_equal(back.targets["id"], np.arange(12))


@pytest.mark.slow
def test_impute_shapes_fills_only_missing_entries(trained, tmp_path):
    raw = trained.splits.test.subset(np.arange(60))
    mask_img, mask_txt = np.arange(60) % 3 != 0, np.arange(60) % 3 != 1
    texts = [t if m else None for t, m in zip(raw.modalities["text"], mask_txt)]
    partial = RawData({"image": raw.modalities["image"].copy(), "text": texts}, dict(raw.kinds),
                      {"image": mask_img, "text": mask_txt}, dict(raw.targets), dict(raw.info))
    done = impute(trained.model, partial)
    assert done.modalities["image"].dtype == np.uint8
    assert done.modalities["image"][mask_img].tobytes() == raw.modalities["image"][mask_img].tobytes()
    assert [t for t, m in zip(done.modalities["text"], mask_txt) if m] == [t for t, m in zip(texts, mask_txt) if m]
    filled = [parse_caption(done.modalities["text"][i], "easy") for i in np.nonzero(~mask_txt)[0]]
    right = [p["shape"] == raw.targets["shape"][i] and p["color"] == raw.targets["color"][i]
             for p, i in zip(filled, np.nonzero(~mask_txt)[0])]
    assert np.mean(right) > 0.8
    path = save(done, tmp_path / "done.npz")
    with np.load(path, allow_pickle=False) as npz:
        assert npz["text"].dtype.kind == "U" and npz["imputed__text"].sum() == 20
    assert load_npz(path).modalities["text"] == done.modalities["text"]


# -- trained model ----------------------------------------------------------------------------
@pytest.mark.slow
def test_trained_model_retrieves_and_detects_mismatched_pairs(trained):
    test = trained.splits.test
    report = retrieval_metrics(trained.model, test, "text", "image")
    assert report["text->image"]["R@1"] > 0.8 and report["image->text"]["median_rank"] == 1.0
    bad, is_anomaly = mismatched_pairs(test, "text", fraction=0.3, seed=0)
    scores = AnomalyDetector(trained.model).score(bad)
    for name in ("disagreement", "cross_nll_text", "neg_elbo"):
        assert auroc(scores[name], is_anomaly) > 0.9, name
    index = RetrievalIndex(trained.model, test, "image")
    result = index.query({"text": ["a red circle", "a blue square"]}, given=["text"], k=5, score="likelihood")
    for row, (shape, color) in zip(result.indices, [(0, 0), (1, 2)]):
        assert (test.targets["shape"][row] == shape).all() and (test.targets["color"][row] == color).all()


# -- command line ---------------------------------------------------------------------------
runner = CliRunner()


def invoke(*args):
    from omnivae.cli import app

    result = runner.invoke(app, [str(a) for a in args])
    return result


@pytest.mark.slow
def test_cli_embed_retrieve_detect_impute(trained, tmp_path):
    run = trained.run_dir
    result = invoke("embed", "--run", run, "--given", "text", "--out", tmp_path / "z.npy")
    assert result.exit_code == 0, result.output
    z = np.load(tmp_path / "z.npy")
    assert z.shape == (len(trained.splits.test), 8)
    assert np.allclose(z, embed(trained.model, trained.splits.test, given=["text"]), atol=1e-5)

    result = invoke("retrieve", "--run", run, "--query", "text", "a red circle", "--gallery", "image", "-k", "3",
                    "--out", tmp_path / "ret")
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "ret" / "results.json").read_text())["results"]
    assert len(rows) == 3 and all("shape=circle" in r["item"] and "color=red" in r["item"] for r in rows)
    assert (tmp_path / "ret" / "retrieval.png").stat().st_size > 1000

    result = invoke("detect", "--run", run, "--out", tmp_path / "scores.csv", "--contamination", "0.1")
    assert result.exit_code == 0, result.output
    with open(tmp_path / "scores.csv") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == len(trained.splits.test)
    assert {"neg_elbo", "disagreement", "cross_nll_text", "is_anomaly"} <= set(table[0])
    assert abs(np.mean([int(r["is_anomaly"]) for r in table]) - 0.1) < 0.02

    result = invoke("detect", "--run", run, "--out", tmp_path / "s2.csv", "--fpr", "0.05", "--score", "disagreement")
    assert result.exit_code == 0, result.output

    test = trained.splits.test.subset(np.arange(20))
    mask_txt = np.arange(20) % 2 == 0
    partial = RawData({"image": test.modalities["image"], "text": [t if m else None for t, m in
                                                                   zip(test.modalities["text"], mask_txt)]},
                      dict(test.kinds), {"text": mask_txt})
    save(partial, tmp_path / "partial.npz")
    result = invoke("impute", "--model", run / "model", "--data", tmp_path / "partial.npz",
                    "--out", tmp_path / "done.npz")
    assert result.exit_code == 0, result.output
    done = load_npz(tmp_path / "done.npz")
    assert all(done.mask["text"]) and done.modalities["text"][::2] == partial.modalities["text"][::2]
    assert all(isinstance(t, str) and t for t in done.modalities["text"])


def test_cli_help_and_errors(tmp_path):
    for verb in ("evaluate", "embed", "retrieve", "detect", "impute"):
        result = invoke(verb, "--help")
        assert result.exit_code == 0 and "--out" in result.output, verb
    result = invoke("embed", "--out", tmp_path / "z.npy")
    assert result.exit_code == 2 and "--model" in result.output
    result = invoke("embed", "--model", tmp_path / "missing", "--data", "shapes", "--out", tmp_path / "z.npy")
    assert result.exit_code == 2 and "does not exist" in " ".join(result.output.split())
    result = invoke("impute", "--model", tmp_path, "--data", tmp_path / "x.csv", "--out", tmp_path / "y.npz")
    assert result.exit_code == 2 and ".npz" in result.output


def test_command_line_numbers_that_are_not_numbers_name_the_modality(make_raw, tiny_config):
    from omnivae import InputError, build_model
    from omnivae.tasks.generate import parse_inputs

    raw = make_raw(16, names=("image", "label", "vector"))
    model = build_model(tiny_config("mvae", names=("image", "label", "vector")), raw)
    assert parse_inputs(model, "vector", ["1,2,3,4"]).shape == (1, 4)
    with pytest.raises(InputError, match="'vector'.*'x'"):
        parse_inputs(model, "vector", ["1,x,3,4"])
    with pytest.raises(InputError, match="'label'.*integer"):
        parse_inputs(model, "label", ["two"])
