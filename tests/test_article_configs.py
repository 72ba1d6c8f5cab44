"""Every run config in configs/ trains at test size through the CLI's own path (read the file,
apply --set overrides, run.train_run), saves a trained model and reloads it; the article
configs (docs/articles.md) also build the networks their articles describe. A new config file
is picked up from the directory listing; its data source needs an entry in SOURCE_SETS."""
from __future__ import annotations

import csv
import math
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from omnivae.cli.run import apply_overrides
from omnivae.config import read_config_file
from omnivae.data import mnist as mn
from omnivae.data.sources import DataConfig, load_source
from omnivae.io import UntrainedModelWarning, load_model
from omnivae.models import build_model
from omnivae.models.stacked import StackedAEConfig, default_layers
from omnivae.run import resolve_model_config, train_run

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "configs"
CONFIGS = sorted(p for p in CONFIG_DIR.iterdir() if p.suffix in (".yaml", ".yml", ".json"))
MNIST = ROOT.parent / "shared" / "data" / "mnist"
HAVE_MNIST = all((MNIST / name).is_file() for name in mn.FILES)

# test size: a few examples per source, one epoch of a few steps of a small batch, no warm-ups
SOURCE_SETS = {
    "mnist": [f"data.options.root={MNIST}", "data.options.limit=64"],
    "shapes": ["data.options.n=64"],
}
TRAIN_SETS = ["train.max_epochs=1", "train.batch_size=16", "train.patience=null",
              "train.progress=false", "train.tensorboard=false", "train.log_every_n_steps=1",
              "train.num_threads=1", "train.adversarial_warmup_epochs=0"]


def at_test_size(path: Path) -> dict:
    config = read_config_file(path)
    source = config.get("data", {}).get("source", "shapes")
    if source not in SOURCE_SETS:
        pytest.fail(f"{path.name}: no test-size options for data source {source!r}; add them to SOURCE_SETS")
    if source == "mnist" and not HAVE_MNIST:
        pytest.skip(f"MNIST files not found in {MNIST}")
    overrides = SOURCE_SETS[source] + TRAIN_SETS
    if config.get("data", {}).get("labelled"):  # test-size data holds fewer labels than a config keeps
        overrides = overrides + ["data.labelled=20"]
    return apply_overrides(config, overrides)


def logged(run_dir: Path, key: str) -> list[float]:
    with open(run_dir / "logs" / "metrics.csv") as f:
        return [float(r[key]) for r in csv.DictReader(f) if r.get(key)]


def linear_widths(module: nn.Module) -> list[int]:
    """[in of the first Linear, out of each Linear] in registration order."""
    layers = [m for m in module.modules() if isinstance(m, nn.Linear)]
    return [layers[0].in_features, *(m.out_features for m in layers)]


# -- what each article's system is made of -------------------------------------------------------
def check_mnist_vae_512_32(model, written):
    assert model.config.model == "vae" and model.config.latent_dim == 32
    assert linear_widths(model.modalities["image"].encoder) == [784, 512, 64]  # mean and log-variance
    assert linear_widths(model.modalities["image"].decoder) == [32, 512, 784]
    assert (written["train"]["lr"], written["train"]["batch_size"]) == (1e-3, 64)


def check_mnist_beta_vae(model, written):
    assert model.config.model == "vae" and model.config.beta > 1
    assert linear_widths(model.modalities["image"].encoder) == [784, 400, 200, 40]


def check_ae_128_64_32_16(model, written):
    assert linear_widths(model.modalities["image"].encoder) == [784, 128, 64, 32, 32]  # code = first 16
    assert linear_widths(model.modalities["image"].decoder) == [16, 32, 64, 128, 784]
    assert model.encode({"image": torch.zeros(2, 1, 28, 28, dtype=torch.uint8)}).shape == (2, 16)


def check_mnist_ae(model, written):
    assert model.config.model == "ae" and model.config.sparsity == "none"
    check_ae_128_64_32_16(model, written)


def check_mnist_sparse_ae(model, written):
    assert model.config.model == "sparse_ae" and model.config.sparsity != "none"
    assert model.config.sparsity_weight > 0
    check_ae_128_64_32_16(model, written)


def check_mnist_stacked_ae(model, written):
    assert model.config.model == "stacked_ae" and model.config.layers == [128, 64, 32, 16]
    assert model.config.latent_dim == 16
    assert linear_widths(model.modalities["image"].encoder) == [784, 128, 64, 32, 16]


def conv_layers(module: nn.Module, kind) -> list:
    return [m for m in module.modules() if isinstance(m, kind)]


def check_conv_32_64_128(image):
    convs = conv_layers(image.encoder, nn.Conv2d)
    assert [c.out_channels for c in convs] == [32, 64, 128]
    assert all(c.kernel_size == (4, 4) and c.stride == (2, 2) for c in convs)
    assert isinstance(image.encoder.head, nn.Linear)  # + FC to the posterior
    deconvs = conv_layers(image.decoder, nn.ConvTranspose2d)
    assert [c.in_channels for c in deconvs] == [128, 64, 32]


def check_mnist_conv_ae_adversarial(model, written):
    assert model.config.model == "ae"
    check_conv_32_64_128(model.modalities["image"])
    assert conv_layers(model.modalities["image"].encoder, nn.Conv2d)[0].in_channels == 1
    assert written["train"]["adversarial_weight"] > 0


def check_shapes_image_caption_64(model, written):
    image, text = model.modalities["image"], model.modalities["text"]
    assert tuple(image.spec.shape) == (3, 64, 64) and image.spec.arch == "conv"
    check_conv_32_64_128(image)
    assert conv_layers(image.encoder, nn.Conv2d)[0].in_channels == 3
    gru = text.encoder.gru
    assert gru.bidirectional and gru.hidden_size == 512 and text.encoder.embed.embedding_dim == 300
    dec = text.decoder
    assert dec.gru.hidden_size == 512 and dec.embed.embedding_dim == 300
    assert dec.gru.input_size == 300 + model.config.latent_dim  # z enters at every step
    assert dec.init.in_features == model.config.latent_dim  # and sets the initial state


ARTICLE_CHECKS = {
    "mnist_vae_512_32.yaml": check_mnist_vae_512_32,
    "mnist_beta_vae.yaml": check_mnist_beta_vae,
    "mnist_ae.yaml": check_mnist_ae,
    "mnist_sparse_ae.yaml": check_mnist_sparse_ae,
    "mnist_stacked_ae.yaml": check_mnist_stacked_ae,
    "mnist_conv_ae_adversarial.yaml": check_mnist_conv_ae_adversarial,
    "shapes_image_caption_64.yaml": check_shapes_image_caption_64,
}


# -- every config ---------------------------------------------------------------------------------
@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_config_trains_saves_and_reloads(path, tmp_path, one_thread):
    run_dir = tmp_path / "run"
    result = train_run(at_test_size(path), run_dir)
    assert result.steps_trained >= 2
    losses = logged(run_dir, "train/loss_step")
    assert len(losses) == result.steps_trained and all(math.isfinite(v) for v in losses), losses
    assert all(math.isfinite(v) for v in logged(run_dir, "val/loss"))  # the epoch's validation ran
    if result.config.train.adversarial_weight > 0:  # the PatchGAN stage ran
        assert all(math.isfinite(v) for v in logged(run_dir, "train/d_loss_step"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UntrainedModelWarning)  # the saved weights are the trained ones
        loaded = load_model(run_dir / "model")
    assert loaded.state_dict().keys() == result.model.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), result.model.state_dict().values()))
    train = result.splits.train
    complete = np.flatnonzero(np.all([train.mask[n] for n in result.model.names], axis=0))[:4]  # labels kept
    batch = {n: train.subset(complete).modalities[n] for n in result.model.names}
    assert torch.equal(loaded.encode(batch), result.model.encode(batch))
    check = ARTICLE_CHECKS.get(path.name)
    if check is not None:
        check(result.model, read_config_file(path))  # the file as written, before the test sizes


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_config_starts_with_what_it_is_and_its_command(path):
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("# "), f"{path.name} must start with a comment saying what it trains"
    head = " ".join(line for line in lines[:3] if line.startswith("#"))
    assert f"omnivae train --config configs/{path.name}" in head, f"{path.name}: its command is not in its header"


def test_docs_page_lists_every_config():
    page = (ROOT / "docs" / "articles.md").read_text(encoding="utf-8")
    missing = [p.name for p in CONFIGS if f"configs/{p.name}" not in page]
    assert not missing, f"docs/articles.md does not mention {missing}"
    assert set(ARTICLE_CHECKS) <= {p.name for p in CONFIGS}
    for name in ARTICLE_CHECKS:
        assert f"omnivae train --config configs/{name}" in page, name


# -- the hint in mnist_vae.yaml, and stacked_ae's code size ----------------------------------------
@pytest.mark.skipif(not HAVE_MNIST, reason=f"MNIST files not found in {MNIST}")
def test_mnist_vae_hint_names_models_that_build():
    """mnist_vae.yaml's header names models to try with --set model.model=NAME; each builds."""
    path = CONFIG_DIR / "mnist_vae.yaml"
    header = " ".join(line for line in path.read_text(encoding="utf-8").splitlines() if line.startswith("#"))
    names = re.search(r"one of: ([\w, ]+)", header).group(1).replace(" ", "").split(",")
    assert {"ae", "stacked_ae"} <= set(names)
    config = read_config_file(path)
    raw = load_source(DataConfig.from_dict({**config["data"], "options": {**config["data"]["options"],
                                                                          "root": str(MNIST), "limit": 8}}))
    images = torch.from_numpy(raw.modalities["image"][:4])
    for name in names:
        model = build_model(resolve_model_config({**config["model"], "model": name}, raw), raw)
        assert model.config.latent_dim == 20
        assert model.encode({"image": images}).shape == (4, 20), name
        if name == "stacked_ae":
            assert model.config.layers == [128, 64, 32, 20]


def test_stacked_code_size_follows_latent_dim_without_layers():
    spec = {"image": {"kind": "image", "shape": [1, 8, 8], "arch": "mlp", "hidden": [32]}}
    made = lambda **kw: StackedAEConfig.model_validate({"model": "stacked_ae", "modalities": spec, **kw})  # noqa: E731
    assert made().layers == [128, 64, 32, 16] and made().latent_dim == 16
    assert made(latent_dim=16).layers == [128, 64, 32, 16] == default_layers(16)
    assert made(latent_dim=20).layers == [128, 64, 32, 20]
    assert made(latent_dim=48).layers == [128, 64, 48]
    assert made(latent_dim=500).layers == [500]
    assert made(layers=[32, 8]).latent_dim == 8
    with pytest.raises(ValueError, match="must equal latent_dim"):
        made(latent_dim=20, layers=[64, 16])  # both given: they must agree


def test_image_caption_config_trains_on_a_folder(tmp_path, one_thread):
    """The documented own-data route: --data FOLDER (images + metadata.jsonl with a `text` column)
    with --set data.options.image_size=64, through `omnivae train`."""
    import json

    import numpy as np
    from PIL import Image
    from typer.testing import CliRunner

    from omnivae.cli import app

    folder, rng = tmp_path / "pairs", np.random.default_rng(0)
    folder.mkdir()
    colours = ["red", "green", "blue"]
    rows = []
    for i in range(24):
        pixels = np.zeros((48, 48, 3), dtype=np.uint8)
        pixels[8:40, 8:40, i % 3] = 255
        pixels += rng.integers(0, 30, pixels.shape, dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")  # 48x48: resized to 64x64 by the option
        rows.append({"file_name": f"{i}.png", "text": f"a {colours[i % 3]} square number {i % 5}"})
    (folder / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    args = ["train", "--config", str(CONFIG_DIR / "shapes_image_caption_64.yaml"), "--data", str(folder),
            "--out", str(tmp_path / "run"), "--set", "data.options.image_size=64"]
    for s in TRAIN_SETS:
        args += ["--set", s]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    model = load_model(tmp_path / "run" / "model")
    assert tuple(model.modalities["image"].spec.shape) == (3, 64, 64)
    check_shapes_image_caption_64(model, read_config_file(CONFIG_DIR / "shapes_image_caption_64.yaml"))
