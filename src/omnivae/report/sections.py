"""Report sections built from a run: configuration, data, training time, training curves,
overfitting and the latent map, plus the plain-words reading of the Fréchet distance."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from omnivae.errors import InputError
from omnivae.report.common import PathLike
from omnivae.report.curves import training_curves
from omnivae.report.html import Section
from omnivae.report.latent import latent_map
from omnivae.report.overfit import overfitting, overfitting_curves
from omnivae.report.summary import RunSummary, config_table, duration, modality_size, read_summary

FRECHET_TEXT = (
    "What it measures: how far the generated images are from the real test images, as whole sets. Every "
    "image is turned into a feature vector by this project's own evaluation classifiers (their layer before "
    "the output; the same classifiers that score the cross-modal accuracy, trained on this data's labels), "
    "each set of vectors is summarised by its mean and covariance, and the distance is |difference of the "
    "means|² plus a term for the difference of the covariances. It is the recipe of FID, with these "
    "classifiers in place of Inception, so the numbers are not FID values.\n\n"
    "How to read it: lower is better, and 0 means the same mean and spread of features. prior_samples are "
    "images decoded from random prior draws (the unconditional baseline); a row \"a->image\" holds images "
    "generated from the test examples' modality a. The value is a squared distance in the classifiers' "
    "feature space, so it depends on the data and on these classifiers: compare it only within this report, "
    "or between models evaluated on the same data with the same seed and --scorer-epochs, never across data "
    "sets.\n\n"
    "Rough scale: even two sets of real test images score above 0 with a few hundred images (noisy estimates; "
    "on the built-in shapes data about a quarter of what a well-trained model's text->image scores), and "
    "images that all look like the average image score about the total variance of the real features (on "
    "shapes about ten times a trained model's value). A conditional row clearly below prior_samples is "
    "good; one close to prior_samples means the condition barely shapes the images."
)
CURVES_TEXT = (
    "Loss logged during training, per optimiser step (thin lines, every train.log_every_n_steps steps) and "
    "per epoch (train: the epoch mean; val: the validation split). The y axis is logarithmic so that both "
    "the early drop and the late slope show; a panel with a value ≤ 0 (VAE losses can be negative) uses a "
    "symmetric log scale, linear close to zero, as its axis title says."
)
OVERFIT_TEXT = (
    "Epoch means of each loss term on the training and on the validation split, and their gap "
    "(validation − train) at the last epoch and at the epoch with the lowest validation {monitor}. A gap "
    "that grows while the training loss keeps falling is overfitting. The training mean is taken while the "
    "weights change during the epoch (and with the current KL warm-up), so a small negative gap early on is "
    "normal. Epochs are counted from 1 (metrics.csv counts from 0)."
)


def run_sections(model_config: dict[str, Any], train, test, run_dir: PathLike | None = None,
                 metrics_csv: PathLike | None = None) -> list[Section]:
    """Configuration, Data and Training time sections; train and test are the RawData evaluated."""
    summary = read_summary(model_config, run_dir, metrics_csv)
    return [config_section(summary), data_section(summary, train, test), training_section(summary)]


def config_section(summary: RunSummary) -> Section:
    return Section("Configuration", f"The main settings of the run, from {summary.config_source}; the whole "
                   "config is below the table.", table=config_table(summary.config), columns=("setting", "value"),
                   details=yaml.safe_dump(summary.config, sort_keys=False), details_title="whole config")


def data_section(summary: RunSummary, train, test) -> Section:
    examples = summary.training.get("examples") or {}
    if examples:
        split = (f"The run split its data into {examples.get('train', '?')} training, {examples.get('val', '?')} "
                 f"validation and {examples.get('test', '?')} test examples.")
    elif summary.run_dir is None:
        split = "No run folder was given, so the sizes of the training splits are not known."
    else:
        split = "The run's split sizes were not recorded (runs record them when training ends; this one is older)."
    varied = [f"{t} ({len(np.unique(v))} classes)" for t, v in test.targets.items() if len(np.unique(v)) > 1]
    fixed = [t for t, v in test.targets.items() if len(np.unique(v)) <= 1]
    text = (f"{split} This report evaluates {len(test)} examples; its evaluation classifiers learned from "
            f"{len(train)} examples.\n\nLabels used for scoring: {', '.join(varied) if varied else 'none'}"
            + (f" ({', '.join(fixed)}: one value only)." if fixed else "."))
    specs = (summary.config.get("model") or {}).get("modalities") or {}
    rows = []
    for name, spec in specs.items():
        mask = test.mask.get(name) if name in test.modalities else None
        present = f"{int(np.sum(mask))} of {len(test)}" if mask is not None else "not in the data"
        rows.append({"modality": name, "kind": spec.get("kind", "?"), "size": modality_size(spec),
                     "present in the evaluated examples": present})
    return Section("Data", text, table=rows or None)


def training_section(summary: RunSummary) -> Section:
    t, max_epochs = summary.training, (summary.config.get("train") or {}).get("max_epochs")
    table: dict[str, Any] = {}
    seconds = t.get("wall_seconds")
    if isinstance(seconds, (int, float)):
        table["wall time"] = duration(float(seconds))
        table["wall time (seconds)"] = float(seconds)
    else:
        table["wall time"] = "not recorded"
    if "epochs" in t:
        table["epochs"] = t["epochs"] if max_epochs is None else f"{t['epochs']} (max_epochs {max_epochs})"
    if "steps" in t:
        table["optimiser steps"] = t["steps"]
    if isinstance(seconds, (int, float)) and seconds > 0:
        if t.get("epochs"):
            table["seconds per epoch"] = float(seconds) / t["epochs"]
        if t.get("steps"):
            table["steps per second"] = t["steps"] / float(seconds)
    if t.get("finished"):
        table["finished"] = t["finished"]
    table["recorded in"] = summary.training_source or "nowhere (no run folder)"
    text = ("Wall-clock time from the start of the training loop to the saved model (fitting a prior "
            "included), summed over the attempts of a resumed run that ran to the end; loading the data and "
            "this evaluation are not counted.")
    if summary.run_dir is None:
        text = "No run folder was given: `omnivae evaluate --run RUN_DIR` shows how long training took."
    elif "wall time (seconds)" not in table:
        text += (" This run has no recorded wall time (it was trained before runs recorded it, or its last "
                 "attempt was interrupted); epochs and steps come from its CSV log.")
    return Section("Training time", text, table=table, columns=("training", "value"))


def curve_sections(metrics_csv: PathLike, fig_dir: PathLike) -> list[Section]:
    """Training curves (log scale) and the overfitting check, from a run's CSV metrics."""
    fig_dir = Path(fig_dir)
    out = []
    try:
        path = training_curves(metrics_csv, fig_dir / "curves.png")
        out.append(Section("Training curves", CURVES_TEXT, images=[path]))
    except Exception as exc:  # a run too short to log any loss still gets a report
        out.append(Section("Training curves", f"no curves: {exc}"))
    try:
        result = overfitting(metrics_csv)
        path = overfitting_curves(result, fig_dir / "overfitting.png")
        text = result.sentence + "\n\n" + OVERFIT_TEXT.format(monitor=result.monitor)
        out.append(Section("Overfitting", text, images=[path], table=result.rows))
    except Exception as exc:
        out.append(Section("Overfitting", f"Not judged: {exc}"))
    return out


def latent_section(z, targets: Mapping[str, Any], classes: Mapping[str, Any], path: PathLike) -> Section:
    """The latent map of codes z [N, D], coloured by the first target that varies (a density without one)."""
    varied = [t for t, v in targets.items() if len(np.unique(np.asarray(v)[: len(z)])) > 1]
    label = varied[0] if varied else None
    labels = np.asarray(targets[label])[: len(z)] if label else None
    try:
        image = latent_map(z, labels, path, label_names=classes.get(label) if label else None,
                           label_title=label or "label")
    except InputError as exc:  # e.g. a single example, or codes that are not finite
        return Section("Latent space", f"No latent map: {exc}")
    colour = (f"Each dot is one example, coloured by its {label}: colours that form separate regions mean "
              f"the latent space encodes the {label}. Identical inputs get identical codes: when most dots would "
              "hide behind others, each place gets one marker per label, its area proportional to the number "
              "of examples there." if label else
              "The data has no labels, so the figure shows where codes are dense (hexagons, coloured by count).")
    text = (f"Joint posterior means of {len(z)} test examples (every modality given), projected to 2-D with PCA "
            "(the two directions of largest variance; axis titles give their share of it) when the latent has "
            f"more than two dimensions; at most 3000 random points are drawn. {colour}")
    return Section("Latent space", text, images=[image])
