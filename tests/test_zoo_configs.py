"""Every model trains from `omnivae train --config` on the built-in image+caption data and
on MNIST with its label (tiny budgets: this checks the plumbing, not the quality)."""
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from omnivae.cli import app
from omnivae.io import load_model
from omnivae.models import MODELS

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT.parent / "shared" / "data" / "mnist"
SINGLE = {"ae", "dae", "sparse_ae", "stacked_ae", "vae", "iwae"}
runner = CliRunner()

SHAPES_SETS = ["data.options.n=160", "data.options.image_size=16", "model.latent_dim=4",
               "model.modalities.image={arch: mlp, hidden: [32]}",
               "model.modalities.text={hidden: 16, embed_dim: 8, max_len: 6}"]
MNIST_SETS = [f"data.options.root={MNIST}", "data.options.limit=300", "data.options.split=test",
              "model.latent_dim=4", "model.modalities.image={arch: mlp, hidden: [32]}",
              "model.modalities.label={hidden: [16]}"]
TRAIN_SETS = ["train.max_epochs=1", "train.batch_size=64", "train.progress=false", "train.tensorboard=false"]


def model_sets(name: str, modalities: list[str]) -> list[str]:
    sets = [f"model.model={name}"]
    if name in SINGLE:  # one modality: keep the image
        sets.append(f"model.modalities={{image: {{arch: mlp, hidden: [32]}}}}")
    if name == "stacked_ae":
        sets += ["model.layers=[32, 4]", "model.pretrain_epochs=0"]
    if name == "cvae":
        sets.append(f"model.target=image")
    return sets


@pytest.mark.slow
@pytest.mark.parametrize("data", ["shapes", "mnist_label"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_trains_from_a_config(tmp_path, name, data):
    if data == "mnist_label" and not MNIST.is_dir():
        pytest.skip(f"MNIST files not found at {MNIST}")
    config = ROOT / "configs" / f"{data}.yaml"
    sets = (SHAPES_SETS if data == "shapes" else MNIST_SETS) + TRAIN_SETS
    sets += model_sets(name, ["image", "text"] if data == "shapes" else ["image", "label"])
    args = ["train", "--config", str(config), "--out", str(tmp_path / "run")]
    for s in sets:
        args += ["--set", s]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    model = load_model(tmp_path / "run" / "model")
    assert model.config.model == name
    saved = yaml.safe_load((tmp_path / "run" / "run.yaml").read_text())
    assert saved["model"]["model"] == name
