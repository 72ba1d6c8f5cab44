"""Evaluate a trained model on held-out data: coherence metrics, figures, metrics.json,
report.html. Used by `omnivae demo` and `omnivae evaluate`."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch

from omnivae.data.raw import RawData
from omnivae.data.tensors import TensorData
from omnivae.metrics.coherence import build_scorers, conditional_coherence, joint_coherence
from omnivae.train.checkpoint import atomic_write_bytes


def combined_metrics_csv(run_dir: Path, out: Path) -> Path | None:
    """All CSV metric files of a (possibly resumed) run as one file."""
    from omnivae.train.trainer import metrics_files

    files = metrics_files(run_dir)
    if not files:
        return None
    rows, keys = [], []
    for f in files:
        with open(f, newline="") as fh:
            reader = csv.DictReader(fh)
            keys += [k for k in reader.fieldnames or [] if k not in keys]
            rows += list(reader)
    with open(out, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    return out


def evaluate_model(model, train: RawData, test: RawData, out_dir: Path, run_dir: Path | None = None,
                   n_eval: int = 1000, scorer_epochs: int = 3, seed: int = 0) -> dict:
    """Coherence metrics and figures for `model` on `test`; writes metrics.json and report.html."""
    from omnivae.report import figures
    from omnivae.report.html import Section, write_report

    torch.manual_seed(seed)
    out_dir = Path(out_dir)
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    model.eval()
    test_data = TensorData.from_raw(model, test)
    scorers = build_scorers(model, train, epochs=scorer_epochs, seed=seed)
    metrics = {
        "model": model.config.model,
        "n_test": len(test),
        "coherence": conditional_coherence(model, test_data, scorers, n_max=n_eval),
        "joint_coherence": joint_coherence(model, scorers, n=n_eval),
    }
    sections = [Section("Metrics", "Cross-modal accuracy: a generated modality is scored by a classifier "
                        "(images) or a caption parser (text) and compared with the true attributes.",
                        table=metrics)]
    sections += figure_sections(model, test, test_data, fig_dir, figures, Section)
    if run_dir is not None:
        csv_path = combined_metrics_csv(Path(run_dir), fig_dir / "metrics_all.csv")
        if csv_path is not None:
            try:
                sections.append(Section("Training curves", images=[figures.training_curves(csv_path, fig_dir / "curves.png")]))
            except Exception as exc:  # a run too short to log any loss still gets a report
                sections.append(Section("Training curves", text=f"no curves: {exc}"))
    atomic_write_bytes(out_dir / "metrics.json", json.dumps(metrics, indent=2).encode())
    write_report(out_dir / "report.html", f"omnivae {model.config.model} report", sections)
    return metrics


def figure_sections(model, test: RawData, data: TensorData, fig_dir: Path, figures, Section) -> list:
    sections = []
    kinds = {n: model.modalities[n].kind for n in model.names}
    images = [n for n, k in kinds.items() if k == "image"]
    texts = [n for n, k in kinds.items() if k == "text"]
    k = min(16, len(test))
    batch = data.batch(torch.arange(k))
    if images and texts:
        img, txt = images[0], texts[0]
        prompts = distinct_prompts(test, txt, 8)
        gen = model.generate({txt: prompts}, given=[txt], targets=[img], n=6)[img]  # [n,P,C,H,W]
        path = figures.text_to_image_grid(prompts, gen.transpose(0, 1), fig_dir / "text_to_image.png")
        sections.append(Section("Text to image", f"Six samples for each caption ({txt} -> {img}).", images=[path]))
        caps = model.generate(batch, given=[img], targets=[txt], mean=True)[txt]
        true = list(test.modalities[txt][:k])
        path = figures.captioned_images(model.modalities[img].to_output(batch.data[img]), caps,
                                        fig_dir / "image_to_caption.png", true_captions=true)
        sections.append(Section("Image to caption", f"Generated caption (black) and the true one (grey).", images=[path]))
    joint = model.sample(16)
    if images:
        img = images[0]
        caps = joint[texts[0]] if texts else [""] * 16
        path = figures.captioned_images(joint[img], caps, fig_dir / "joint_samples.png")
        sections.append(Section("Joint samples", "All modalities decoded from the same prior draws.", images=[path]))
        rec = model.reconstruct(batch)[img]
        pair = torch.stack([model.modalities[img].to_output(batch.data[img]), rec])
        path = figures.image_grid(pair, fig_dir / "reconstructions.png", row_labels=["input", "reconstruction"])
        sections.append(Section("Reconstructions", images=[path]))
    targets = [t for t, v in test.targets.items() if len(np.unique(v)) > 1]
    if targets:
        n = min(2000, len(test))
        z = model.encode(data.batch(torch.arange(n)))
        label = targets[0]
        names = test.info.get("classes", {}).get(label)
        path = figures.latent_map(z.numpy(), test.targets[label][:n], fig_dir / "latent_map.png", label_names=names)
        sections.append(Section("Latent space", f"Joint posterior means (PCA), coloured by {label}.", images=[path]))
    return sections


def distinct_prompts(raw: RawData, name: str, k: int) -> list[str]:
    seen: list[str] = []
    for text, present in zip(raw.modalities[name], raw.mask[name]):
        if present and text not in seen:
            seen.append(text)
        if len(seen) == k:
            break
    return seen
