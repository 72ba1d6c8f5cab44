"""The run parts of report.html: configuration, data sizes, training time, the Fréchet reading,
loss curves on a log scale, the overfitting check and a readable latent map.

One tiny run (a second of training) is evaluated once; expected values are read from the run
folder (run.yaml, omnivae-run.json, logs/metrics.csv), never typed in."""
import csv
import html
import json
import re
import shutil

import numpy as np
import pytest
import yaml
from matplotlib.collections import PolyCollection

from omnivae.errors import InputError
from omnivae.report import (
    FRECHET_TEXT,
    Section,
    curve_sections,
    curves_figure,
    latent_figure,
    latent_section,
    overfitting,
    overfitting_figure,
    run_sections,
    write_report,
)

TINY_RUN = {
    "data": {"source": "shapes", "options": {"n": 240, "level": "medium", "image_size": 16, "seed": 0},
             "test_fraction": 0.25},
    "model": {"model": "mvae", "latent_dim": 3, "conditional_prior": None, "modalities": {
        "image": {"arch": "mlp", "hidden": [16]}, "text": {"hidden": 8, "embed_dim": 8, "max_len": 8}}},
    "train": {"max_epochs": 3, "batch_size": 32, "patience": None, "num_threads": 1, "progress": False,
              "tensorboard": False, "val_fraction": 0.2, "seed": 0},
}


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """(train_run result, report page) of the tiny run, evaluated once."""
    import torch

    from omnivae.run import train_run
    from omnivae.tasks.evaluate import evaluate_model

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train_run(TINY_RUN, tmp_path_factory.mktemp("tiny") / "run")
        out = result.run_dir / "eval"
        evaluate_model(result.model, result.splits.train, result.splits.test, out, run_dir=result.run_dir,
                       n_eval=40, scorer_epochs=1, scorer_examples=100)
    finally:
        torch.set_num_threads(before)
    return result, (out / "report.html").read_text(encoding="utf-8")


def section(page: str, title: str) -> str:
    """The HTML of the report section with this title."""
    found = re.search(r'<section id="[^"]+"><h2>' + re.escape(html.escape(title)) + r"</h2>(.*?)</section>",
                      page, re.S)
    assert found, f"no section {title!r}"
    return found.group(1)


def text_of(fragment: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", fragment))


def cell(value) -> str:
    """How the report writes a number in a table cell."""
    return f'<td class="num">{value:.4g}</td>' if isinstance(value, float) else f'<td class="num">{value}</td>'


def epoch_means(metrics_csv):
    """{column: {epoch: value}} of the epoch-level columns, read with the csv module."""
    out: dict = {}
    with open(metrics_csv, newline="") as fh:
        for row in csv.DictReader(fh):
            for key, value in row.items():
                if value and key not in ("epoch", "step"):
                    out.setdefault(key, {})[int(row["epoch"])] = float(value)
    return out


# -- training record -----------------------------------------------------------------------
def test_training_records_wall_time_epochs_steps_and_split_sizes(evaluated):
    result, _ = evaluated
    record = json.loads((result.run_dir / "omnivae-run.json").read_text())["training"]
    assert record["wall_seconds"] > 0
    assert record["epochs"] == result.config.train.max_epochs
    batches = -(-len(result.splits.train) // result.config.train.batch_size)
    assert record["steps"] == record["epochs"] * batches
    assert record["examples"] == {"train": len(result.splits.train), "val": len(result.splits.val),
                                  "test": len(result.splits.test)}


# -- configuration, data, training time --------------------------------------------------------
def test_report_shows_the_run_config(evaluated):
    result, page = evaluated
    config = yaml.safe_load((result.run_dir / "run.yaml").read_text())
    part = section(page, "Configuration")
    for key, value in (("data.source", config["data"]["source"]), ("data.options.n", config["data"]["options"]["n"]),
                       ("model.model", config["model"]["model"]), ("model.latent_dim", config["model"]["latent_dim"]),
                       ("train.max_epochs", config["train"]["max_epochs"]),
                       ("train.batch_size", config["train"]["batch_size"])):
        shown = cell(value) if isinstance(value, (int, float)) else f"<td>{value}</td>"
        assert f"<tr><td>{key}</td>{shown}</tr>" in part, key
    folded = re.search(r"<details>.*?<pre>(.*?)</pre></details>", part, re.S)
    assert folded and yaml.safe_load(html.unescape(folded.group(1))) == config


def test_report_shows_the_data_sizes_and_modalities(evaluated):
    result, page = evaluated
    part = text_of(section(page, "Data"))
    s = result.splits
    assert f"{len(s.train)} training, {len(s.val)} validation and {len(s.test)} test examples" in part
    assert f"evaluates {len(s.test)} examples" in part
    specs = yaml.safe_load((result.run_dir / "run.yaml").read_text())["model"]["modalities"]
    assert "shape " + "×".join(map(str, specs["image"]["shape"])) in part
    assert f"vocabulary of {specs['text']['vocab_size']} tokens" in part
    for target, values in s.test.targets.items():
        if len(np.unique(values)) > 1:
            assert f"{target} ({len(np.unique(values))} classes)" in part


def test_report_shows_the_training_time(evaluated):
    result, page = evaluated
    record = json.loads((result.run_dir / "omnivae-run.json").read_text())["training"]
    part = section(page, "Training time")
    assert f"<td>wall time (seconds)</td>{cell(float(record['wall_seconds']))}" in part
    assert f"<td>optimiser steps</td>{cell(record['steps'])}" in part
    assert f"<td>epochs</td><td>{record['epochs']} (max_epochs {result.config.train.max_epochs})</td>" in part


def test_training_time_falls_back_to_the_csv_log(evaluated, tmp_path):
    result, _ = evaluated
    old = tmp_path / "old_run"  # a run trained before the record existed
    shutil.copytree(result.run_dir / "logs", old / "logs")
    shutil.copy(result.run_dir / "run.yaml", old / "run.yaml")
    marker = json.loads((result.run_dir / "omnivae-run.json").read_text())
    (old / "omnivae-run.json").write_text(json.dumps({k: v for k, v in marker.items() if k != "training"}))
    metrics = epoch_means(old / "logs" / "metrics.csv")
    sections = run_sections(result.model.config.to_dict(), result.splits.train, result.splits.test, old,
                            old / "logs" / "metrics.csv")
    training = {s.title: s for s in sections}["Training time"]
    assert training.table["wall time"] == "not recorded"
    assert training.table["epochs"].startswith(f"{max(metrics['val/loss']) + 1} ")
    data = {s.title: s for s in sections}["Data"]
    assert "were not recorded" in data.text


# -- Fréchet distance ------------------------------------------------------------------------------
def test_frechet_distance_is_explained_next_to_its_table(evaluated):
    _, page = evaluated
    part = section(page, "Fréchet distance")
    paragraphs = [p.strip() for p in FRECHET_TEXT.split("\n\n")]
    for p in paragraphs:
        assert "<p>" + html.escape(p) + "</p>" in part
    assert part.index("<p>") < part.index("<table>")  # the reading comes with the numbers
    words = text_of(part)
    assert "lower is better" in words and "evaluation classifiers" in words and "not FID" in words


# -- overfitting -----------------------------------------------------------------------------------
def test_overfitting_section_numbers_match_the_metrics_csv(evaluated):
    result, page = evaluated
    metrics = epoch_means(result.run_dir / "logs" / "metrics.csv")
    train, val = metrics["train/loss_epoch"], metrics["val/loss"]
    last = max(val)
    best = min(val, key=val.get)
    part = section(page, "Overfitting")
    rows = re.findall(r"<tr><td>loss</td><td>([^<]+)</td>(.*?)</tr>", part)
    assert rows, "no gap table for the loss"
    shown = {at: re.findall(r'<td class="num">([^<]+)</td>', cells) for at, cells in rows}

    def expected(e):  # epoch (from 1), train, validation, gap, as the table writes them
        return [str(e + 1), f"{train[e]:.4g}", f"{val[e]:.4g}", f"{val[e] - train[e]:.4g}"]

    assert shown["last = best" if best == last else "last"] == expected(last)
    if best != last:
        assert shown["best"] == expected(best)
    assert "overfitting.png" in part


def write_csv(path, train, val):
    """A Lightning-style metrics.csv: one validation row and one training row per epoch."""
    lines = ["epoch,step,train/loss_epoch,val/loss,train/rec_epoch,val/rec"]
    for e, (t, v) in enumerate(zip(train, val)):
        lines += [f"{e},{e * 10 + 9},,{v},,{-v}", f"{e},{e * 10 + 9},{t},,{-t},"]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_overfitting_reads_a_rising_validation_loss(tmp_path):
    train = [10.0, 8.0, 6.0, 5.0, 4.0, 3.0]
    val = [10.5, 8.5, 7.0, 7.5, 8.5, 9.5]
    result = overfitting(write_csv(tmp_path / "m.csv", train, val))
    best = int(np.argmin(val))
    assert result.best_epoch == best + 1 and result.last_epoch == len(val)
    assert f"early stopping at epoch {best + 1} would help" in result.sentence
    assert f"{val[best]:g} → {val[-1]:g}" in result.sentence
    last_row = next(r for r in result.rows if r["loss"] == "loss" and r["at"] == "last")
    assert last_row["gap (validation − train)"] == pytest.approx(val[-1] - train[-1])
    best_row = next(r for r in result.rows if r["loss"] == "loss" and r["at"] == "best")
    assert best_row["gap (validation − train)"] == pytest.approx(val[best] - train[best])
    assert {r["loss"] for r in result.rows} == {"loss", "rec"}


def test_overfitting_reads_a_falling_or_flat_validation_loss(tmp_path):
    falling = overfitting(write_csv(tmp_path / "a.csv", [10.0, 8.0, 6.0], [9.0, 7.0, 5.5]))
    assert "still falling" in falling.sentence and falling.best_epoch == falling.last_epoch == 3
    assert [r["at"] for r in falling.rows if r["loss"] == "loss"] == ["last = best"]
    flat = overfitting(write_csv(tmp_path / "b.csv", [10.0, 8.0, 8.0, 8.0], [9.0, 7.0, 7.0, 7.001]))
    assert "flat since epoch 2" in flat.sentence and "little to gain" in flat.sentence
    train, val = [10.0, 8.0, 6.0, 5.0], [9.0, 7.0, 7.0, 7.001]  # flat validation, falling training loss
    widening = overfitting(write_csv(tmp_path / "c.csv", train, val))
    assert "flat since epoch 2" in widening.sentence and "starts to overfit" in widening.sentence
    assert f"from {val[1] - train[1]:.4g} to {val[-1] - train[-1]:.4g}" in widening.sentence


def test_overfitting_needs_a_validation_loss(tmp_path):
    no_val = tmp_path / "m.csv"
    no_val.write_text("epoch,step,train/loss_epoch\n0,9,3.0\n1,19,2.0\n")
    with pytest.raises(InputError, match="validation"):
        overfitting(no_val)
    titles = {s.title: s for s in curve_sections(no_val, tmp_path)}
    assert titles["Overfitting"].text.startswith("Not judged") and titles["Training curves"].images


# -- loss curves on a log scale -------------------------------------------------------------------
def test_loss_curves_use_a_log_scale_and_say_so(tmp_path):
    path = write_csv(tmp_path / "m.csv", [10.0, 8.0, 6.0], [9.0, 7.0, 5.5])
    fig = curves_figure(path, keys=["train/loss_epoch", "val/loss"])
    (ax,) = [a for a in fig.axes if a.get_visible() and a.has_data()]
    assert ax.get_yscale() == "log" and "log scale" in ax.get_ylabel()
    fig = curves_figure(path, keys=["train/rec_epoch", "val/rec"])  # all negative: symlog
    (ax,) = [a for a in fig.axes if a.has_data()]
    assert ax.get_yscale() == "symlog" and "symlog" in ax.get_ylabel()
    scales = {a.get_title(): a.get_yscale() for a in overfitting_figure(overfitting(path)).axes if a.has_data()}
    assert scales == {"loss: train vs validation": "log", "rec: train vs validation": "symlog"}


def test_loss_curves_cross_zero_on_a_symlog_scale(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("epoch,step,train/loss_step\n0,1,50\n0,2,3\n0,3,-2\n0,4,-20\n")
    (ax,) = [a for a in curves_figure(path).axes if a.has_data()]
    assert ax.get_yscale() == "symlog" and "linear within" in ax.get_ylabel()
    low, high = ax.get_ylim()
    assert low < -20 and high > 50


# -- latent map -------------------------------------------------------------------------------------
def test_latent_map_subsamples_and_colours_by_label(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 5000)
    z = rng.normal(size=(5000, 6)) + 3 * labels[:, None]
    names = ["zero", "one", "two", "three", "four"]
    fig = latent_figure(z, labels, label_names=names, max_points=3000, label_title="digit")
    ax = fig.axes[0]
    (dots,) = ax.collections
    assert len(dots.get_offsets()) == 3000
    assert dots.get_alpha() < 1 and float(np.max(dots.get_sizes())) <= 5  # small see-through dots
    legend = ax.get_legend()
    assert legend.get_title().get_text() == "digit"
    assert [t.get_text().split(" (")[0] for t in legend.get_texts()] == names
    assert sum(int(t.get_text().split("(")[1].rstrip(")")) for t in legend.get_texts()) == 3000
    assert ax.get_xlabel().startswith("PCA component 1") and ax.get_ylabel().startswith("PCA component 2")


def test_latent_map_without_labels_is_a_density(tmp_path):
    z = np.random.default_rng(1).normal(size=(800, 4))
    ax = latent_figure(z, None).axes[0]
    assert any(isinstance(c, PolyCollection) for c in ax.collections)  # hexbin
    assert ax.get_legend() is None and "PCA" in ax.get_xlabel()
    sec = latent_section(z, {"constant": np.zeros(800, int)}, {}, tmp_path / "latent.png")
    assert "no labels" in sec.text and sec.images[0].is_file()


def test_latent_map_shows_how_many_codes_share_a_place():
    rng = np.random.default_rng(2)
    places = rng.normal(size=(12, 5))
    which = rng.choice(12, 600, p=np.arange(1, 13) / 78)  # from a few to about 90 codes per place
    labels = which % 3
    ax = latent_figure(places[which], labels).axes[0]
    (markers,) = ax.collections
    groups = {(w, lab) for w, lab in zip(which, labels)}
    assert len(markers.get_offsets()) == len(groups)  # one marker per place and label
    sizes = markers.get_sizes()
    assert sizes.max() > 3 * sizes.min()  # area grows with the count; the biggest are drawn first
    assert np.all(np.diff(sizes) <= 0)
    assert f"at only {len(set(which))} distinct places" in ax.get_title()


def test_latent_section_in_the_report(evaluated):
    result, page = evaluated
    part = text_of(section(page, "Latent space"))
    first = next(t for t, v in result.splits.test.targets.items() if len(np.unique(v)) > 1)
    assert f"coloured by its {first}" in part and "PCA" in part


# -- html --------------------------------------------------------------------------------------------
def test_section_details_are_escaped_and_folded(tmp_path):
    out = write_report(tmp_path / "r.html", "t", [Section("Config", table={"a": 1}, columns=("setting", "value"),
                                                          details="model: <mvae>", details_title="whole config")])
    page = out.read_text()
    assert "<tr><th>setting</th><th>value</th></tr>" in page
    assert "<details><summary>whole config</summary><pre>model: &lt;mvae&gt;</pre></details>" in page
