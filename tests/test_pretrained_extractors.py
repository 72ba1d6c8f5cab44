"""Pretrained encoders from a local folder through transformers (extra 'pretrained'): a BERT
text encoder, ResNet and ViT image encoders. The networks are tiny, randomly initialised and
written to temporary folders with save_pretrained, as a user's downloaded model would be."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from omnivae import build_model  # noqa: E402
from omnivae.data.raw import RawData  # noqa: E402
from omnivae.data.tensors import TensorData, batch_loader  # noqa: E402
from omnivae.errors import ConfigError, InputError, ModelFileError  # noqa: E402
from omnivae.io import CONFIG_FILE, load_model  # noqa: E402
from omnivae.modalities import ImageSpec, pretrained  # noqa: E402
from omnivae.modalities.image import ImageModality  # noqa: E402
from omnivae.modalities.text import TextModality, TextSpec  # noqa: E402
from omnivae.run import resolve_model_config  # noqa: E402

WORDS = ["a", "small", "big", "red", "blue", "green", "circle", "square", "triangle"]
CAPTIONS = ["a small red circle", "a big blue square", "a green triangle", "a big red square",
            "a small blue circle", "a green circle"]
MEAN, STD = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]


def processor(kind: str, size: dict, **extra) -> dict:
    """What an image processor's save_pretrained writes to preprocessor_config.json."""
    return {"image_processor_type": kind, "do_resize": True, "size": size, "do_rescale": True,
            "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": MEAN, "image_std": STD, **extra}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """{"bert", "resnet", "vit"}: tiny random models saved as a user would have them."""
    root = tmp_path_factory.mktemp("pretrained")
    torch.manual_seed(0)
    bert = root / "bert"
    bert.mkdir()
    (bert / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    transformers.BertTokenizerFast.from_pretrained(bert).save_pretrained(bert)
    transformers.BertModel(transformers.BertConfig(
        vocab_size=5 + len(WORDS), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=32)).save_pretrained(bert)
    transformers.ResNetModel(transformers.ResNetConfig(
        num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic",
    )).save_pretrained(root / "resnet")
    (root / "resnet" / "preprocessor_config.json").write_text(json.dumps(processor(
        "ConvNextImageProcessor", {"shortest_edge": 16}, crop_pct=0.875, resample=3)))
    transformers.ViTModel(transformers.ViTConfig(
        image_size=16, patch_size=8, num_channels=3, hidden_size=16, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=32)).save_pretrained(root / "vit")
    (root / "vit" / "preprocessor_config.json").write_text(json.dumps(processor(
        "ViTImageProcessor", {"height": 16, "width": 16}, resample=2)))
    return {name: root / name for name in ("bert", "resnet", "vit")}


@pytest.fixture
def fresh(monkeypatch):
    """No frozen network or cached feature left over from another test."""
    monkeypatch.setattr(pretrained, "_SHARED", {})


def make_raw(n: int = 24, seed: int = 0) -> RawData:
    """A grey and a colour image of a label-dependent band, and a caption naming the label."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    grey = (rng.random((n, 1, 12, 12)) < 0.1).astype(np.uint8) * 255
    colour = (rng.random((n, 3, 12, 12)) < 0.1).astype(np.uint8) * 255
    for i, y in enumerate(labels):
        grey[i, :, 4 * y:4 * y + 4] = 255
        colour[i, y] = 255
    captions = [CAPTIONS[2 * y + i % 2] for i, y in enumerate(labels)]
    return RawData({"grey": grey, "colour": colour, "text": captions},
                   {"grey": "image", "colour": "image", "text": "text"})


def make_model(folders, raw: RawData, fine_tune: bool = False, model: str = "mopoe"):
    config = resolve_model_config({"model": model, "latent_dim": 4, "modalities": {
        "grey": {"arch": "conv", "channels": [8, 16], "hidden": [16], "pretrained_path": str(folders["resnet"]),
                 "fine_tune": fine_tune},
        "colour": {"arch": "conv", "channels": [8, 16], "hidden": [16], "pretrained_path": str(folders["vit"]),
                   "fine_tune": fine_tune},
        "text": {"max_len": 8, "hidden": 16, "embed_dim": 16, "encoder": "pretrained",
                 "pretrained_path": str(folders["bert"]), "fine_tune": fine_tune}}}, raw)
    torch.manual_seed(0)
    return build_model(config, raw)


def train(model, batch, steps: int) -> list[float]:
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(steps):
        out = model.loss(batch)
        opt.zero_grad()
        out.total.backward()
        opt.step()
        losses.append(float(out.total.detach()))
    return losses


def snapshot(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# -- the features ------------------------------------------------------------------------------
def test_text_features_are_the_masked_mean_of_the_last_hidden_state(folders, fresh):
    text = TextModality.from_data("text", TextSpec(max_len=8, hidden=16, encoder="pretrained",
                                                   pretrained_path=str(folders["bert"])), 4, CAPTIONS)
    ids = text.prepare(CAPTIONS[:3])
    out = text.encoder(ids)
    tok = transformers.AutoTokenizer.from_pretrained(folders["bert"])
    bert = transformers.BertModel.from_pretrained(folders["bert"]).eval()
    with torch.no_grad():  # one caption at a time: no padding, so a plain mean over its tokens
        means = [bert(**tok(c, return_tensors="pt")).last_hidden_state[0].mean(0) for c in text.to_output(ids)]
    expected = text.encoder.head(torch.stack(means))
    assert out.shape == (3, 8)
    assert torch.allclose(out, expected, atol=1e-5)
    assert len(tok(CAPTIONS[0])["input_ids"]) != len(tok(CAPTIONS[2])["input_ids"])  # padding was needed
    assert all(k.startswith("encoder.head.") for k in text.state_dict() if k.startswith("encoder."))
    assert all(n.startswith("head.") for n, _ in text.encoder.named_parameters())


def test_image_preprocessing_follows_the_processor_config(folders):
    """Batched torch resizing agrees with transformers' own (PIL) image processor."""
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (2, 3, 12, 20)).astype(np.uint8)
    images[:, :, 3:6] = 255
    for name in ("vit", "resnet"):
        folder = folders[name]
        reference = transformers.AutoImageProcessor.from_pretrained(folder)(
            images=[im.transpose(1, 2, 0) for im in images], return_tensors="pt")["pixel_values"]
        config = json.loads((folder / "preprocessor_config.json").read_text())
        ours = pretrained.ImagePreprocess(config, 3, "test")(torch.from_numpy(images).float() / 255)
        assert ours.shape == reference.shape == (2, 3, 16, 16)
        assert (ours - reference).abs().mean() < 0.02, name  # a level of 8-bit rounding is 1/255/std
        assert (ours - reference).abs().max() < 0.3, name  # PIL's bicubic kernel differs a little


def test_image_features_are_the_pooled_output_or_the_class_token(folders, fresh):
    x = torch.rand(3, 1, 12, 12)
    for name, cls in (("resnet", transformers.ResNetModel), ("vit", transformers.ViTModel)):
        enc = ImageModality("im", ImageSpec(shape=(1, 12, 12), arch="conv", channels=[8], hidden=[16],
                                            pretrained_path=str(folders[name])), 4).encoder
        net = cls.from_pretrained(folders[name]).eval()
        with torch.no_grad():
            out = net(pixel_values=enc.preprocess(x))
        want = out.pooler_output.flatten(1) if name == "resnet" else out.last_hidden_state[:, 0]
        assert want.shape == (3, 16)
        assert torch.allclose(enc(x), enc.head(want), atol=1e-5), name


def test_image_preprocessing_by_hand():
    """Grey to three channels, the shortest side to 16 / 0.8 = 20, a centre crop of 16, the
    rescale factor and the normalisation: on a constant image only the last two matter, and a
    gradient along the width shows which columns the crop kept."""
    config = processor("ConvNextImageProcessor", {"shortest_edge": 16}, crop_pct=0.8, resample=0,
                       rescale_factor=0.5 / 255)
    pre = pretrained.ImagePreprocess(config, 3, "test")
    flat = pre(torch.full((1, 1, 10, 30), 0.6))
    assert flat.shape == (1, 3, 16, 16)
    want = (0.6 * 0.5 - torch.tensor(MEAN)) / torch.tensor(STD)
    assert torch.allclose(flat[0, :, 5, 5], want, atol=1e-6)
    ramp = torch.arange(30.0).div(29).expand(1, 1, 10, 30)  # 10 x 30 -> 20 x 60 (nearest), crop columns 22..37
    cols = pre(ramp)[0, 0, 0] * STD[0] + MEAN[0]
    assert torch.allclose(cols / 0.5, torch.arange(22, 38).div(2).floor().div(29), atol=1e-6)
    vit = pretrained.ImagePreprocess(processor("ViTImageProcessor", {"height": 4, "width": 6}, do_rescale=False,
                                               do_normalize=False), 3, "test")
    assert torch.allclose(vit(torch.full((2, 3, 8, 8), 0.2)), torch.full((2, 3, 4, 6), 0.2 * 255))


# -- training, caching, saving -----------------------------------------------------------------
def test_model_trains_its_heads_and_leaves_the_frozen_networks_alone(folders, fresh):
    raw = make_raw()
    model = make_model(folders, raw)
    nets = {n: model.modalities[n].encoder.net for n in ("grey", "colour", "text")}
    frozen = {n: snapshot(net) for n, net in nets.items()}
    heads = {n: snapshot(model.modalities[n].encoder.head) for n in nets}
    assert not any(".net." in k or "network" in k or "_frozen" in k for k in model.state_dict())
    losses = train(model, TensorData.from_raw(model, raw).batch(), 30)
    assert all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    for n, net in nets.items():
        assert all(torch.equal(v, frozen[n][k]) for k, v in net.state_dict().items()), n
        assert not all(torch.equal(v, heads[n][k]) for k, v in model.modalities[n].encoder.head.state_dict().items())
        assert not net.training and all(not p.requires_grad for p in net.parameters())


def test_features_are_computed_once_per_example_across_epochs(folders, fresh):
    raw = make_raw(n=20)
    model = make_model(folders, raw)
    sizes = {n: [] for n in ("grey", "colour", "text")}
    for name, seen in sizes.items():
        net = model.modalities[name].encoder.net
        forward = net.forward

        def counted(*args, _forward=forward, _seen=seen, **kwargs):
            out = _forward(*args, **kwargs)
            _seen.append(len(out.last_hidden_state))
            return out

        net.forward = counted
    data = TensorData.from_raw(model, raw)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    per_epoch = []
    for epoch in range(2):
        for batch in batch_loader(data, 6, shuffle=True, seed=epoch):
            out = model.loss(batch)
            opt.zero_grad()
            out.total.backward()
            opt.step()
        per_epoch.append({n: sum(s) for n, s in sizes.items()})
    distinct = {"grey": len({im.tobytes() for im in raw.modalities["grey"]}),
                "colour": len({im.tobytes() for im in raw.modalities["colour"]}),
                "text": len(set(raw.modalities["text"]))}
    assert distinct["text"] < len(raw)  # captions repeat: each is embedded once
    assert per_epoch[0] == distinct, "the first epoch computes each distinct example once"
    assert per_epoch[1] == per_epoch[0], "the second epoch reads every feature from the cache"
    assert {n: len(model.modalities[n].encoder.cache) for n in sizes} == distinct


def test_features_first_seen_in_inference_mode_can_be_trained_on(folders, fresh):
    """Validation runs in inference mode; its cached features must still serve training."""
    raw = make_raw(n=8)
    model = make_model(folders, raw)
    data = TensorData.from_raw(model, raw)
    seen, again = data.batch(), data.batch()  # made outside inference mode, as a data loader makes them
    with torch.inference_mode():
        model.loss(seen)
    out = model.loss(again)
    out.total.backward()
    assert torch.isfinite(out.total)


def test_save_and_load_give_identical_outputs_and_need_the_folder(folders, fresh, tmp_path):
    local = {n: shutil.copytree(folders[n], tmp_path / n) for n in folders}
    raw = make_raw(n=12)
    model = make_model(local, raw)
    train(model, TensorData.from_raw(model, raw).batch(), 3)
    model.save(tmp_path / "model")
    saved = json.loads((tmp_path / "model" / CONFIG_FILE).read_text())["config"]["modalities"]
    assert saved["colour"]["pretrained_path"] == str(local["vit"].resolve())
    pretrained._SHARED.clear()  # a new process would load the networks again
    again = load_model(tmp_path / "model")
    inputs = {"grey": raw.modalities["grey"], "colour": raw.modalities["colour"], "text": raw.modalities["text"]}
    model.eval()
    for given in (["grey"], ["colour"], ["text"], None):
        assert torch.equal(model.encode(inputs, given=given), again.encode(inputs, given=given)), given
    shutil.rmtree(local["bert"])
    with pytest.raises(ModelFileError, match="is not a folder"):
        load_model(tmp_path / "model")


def test_fine_tuning_trains_and_saves_the_networks(folders, fresh, tmp_path):
    raw = make_raw(n=12)
    model = make_model(folders, raw, fine_tune=True)
    names = ("grey", "colour", "text")
    nets = {n: model.modalities[n].encoder.network for n in names}
    before = {n: snapshot(net) for n, net in nets.items()}
    for n in names:
        assert any(k.startswith(f"modalities.{n}.encoder.network.") for k in model.state_dict())
        assert not hasattr(model.modalities[n].encoder, "cache")
    model.train()
    norms = [m for m in nets["grey"].modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and not any(m.training for m in norms) and nets["grey"].training  # running statistics only
    train(model, TensorData.from_raw(model, raw).batch(), 3)
    for n, net in nets.items():
        assert changed_keys(net, before[n]), n
    assert not any("running" in k for k in changed_keys(nets["grey"], before["grey"]))
    model.save(tmp_path / "model")
    again = load_model(tmp_path / "model")
    model.eval()
    inputs = {n: raw.modalities[n] for n in names}
    for n in names:
        assert torch.equal(model.encode(inputs, given=[n]), again.encode(inputs, given=[n])), n
    untouched = transformers.BertModel.from_pretrained(folders["bert"])  # the folder itself is not written
    assert torch.equal(untouched.embeddings.word_embeddings.weight, before["text"]["embeddings.word_embeddings.weight"])


def changed_keys(module, before: dict[str, torch.Tensor]) -> list[str]:
    return [k for k, v in module.state_dict().items() if not torch.equal(v, before[k])]


# -- errors --------------------------------------------------------------------------------------
def image_spec(path, **options) -> ImageSpec:
    return ImageSpec(shape=(3, 12, 12), arch="conv", channels=[8], pretrained_path=str(path), **options)


def test_missing_folder_config_weights_or_preprocessing_are_clear_errors(folders, fresh, tmp_path):
    with pytest.raises(InputError, match="is not a folder"):
        ImageModality("im", image_spec(tmp_path / "nowhere"), 4)
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(InputError, match="is not a folder"):
        ImageModality("im", image_spec(tmp_path / "a_file"), 4)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="has no config.json"):
        ImageModality("im", image_spec(empty), 4)
    pickled = shutil.copytree(folders["vit"], tmp_path / "pickled")
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    with pytest.raises(InputError, match=r"no model.safetensors weights \(only pytorch_model.bin"):
        ImageModality("im", image_spec(pickled), 4)
    (pickled / "pytorch_model.bin").unlink()
    with pytest.raises(InputError, match="has no model.safetensors weights; save_pretrained"):
        ImageModality("im", image_spec(pickled), 4)
    unprocessed = shutil.copytree(folders["vit"], tmp_path / "unprocessed")
    (unprocessed / "preprocessor_config.json").unlink()
    with pytest.raises(InputError, match="no image processor config"):
        ImageModality("im", image_spec(unprocessed), 4)
    with pytest.raises(InputError, match="images have 2 channels; the model .* reads 3"):
        ImageModality("im", ImageSpec(shape=(2, 12, 12), arch="conv", channels=[8],
                                      pretrained_path=str(folders["vit"])), 4)
    no_tokenizer = shutil.copytree(folders["bert"], tmp_path / "no_tokenizer")
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (no_tokenizer / name).unlink(missing_ok=True)
    with pytest.raises(InputError, match="has no tokenizer"):
        TextModality.from_data("text", TextSpec(encoder="pretrained", pretrained_path=str(no_tokenizer)), 4, CAPTIONS)
    other = shutil.copytree(folders["resnet"], tmp_path / "other")  # ResNet weights under a ViT config
    (other / "config.json").write_text((folders["vit"] / "config.json").read_text())
    with pytest.raises(InputError, match="lack 22 tensors of ViTModel"):
        ImageModality("im", image_spec(other), 4)


def test_without_the_extra_the_error_gives_the_pip_command(folders, fresh, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` now fails
    with pytest.raises(InputError, match=r"pip install 'omnivae\[pretrained\]'"):
        ImageModality("im", image_spec(folders["vit"]), 4)
    with pytest.raises(InputError, match=r"pip install 'omnivae\[pretrained\]'"):
        TextModality.from_data("text", TextSpec(encoder="pretrained", pretrained_path=str(folders["bert"])), 4,
                               CAPTIONS)


def test_spec_options_are_checked(tmp_path):
    with pytest.raises(ValueError, match="go together"):
        TextSpec(encoder="pretrained")
    with pytest.raises(ValueError, match="go together"):
        TextSpec(pretrained_path=str(tmp_path))
    with pytest.raises(ValueError, match="fine_tune applies"):
        TextSpec(fine_tune=True)
    with pytest.raises(ValueError, match="fine_tune applies"):
        ImageSpec(shape=(1, 8, 8), fine_tune=True)
    with pytest.raises(ValueError, match="pretrained_path is empty"):
        ImageSpec(shape=(1, 8, 8), pretrained_path=" ")
    assert TextSpec(encoder="pretrained", pretrained_path="rel/dir").pretrained_path == str(Path.cwd() / "rel/dir")
    raw = make_raw(n=4)
    with pytest.raises(ConfigError, match="fine_tune"):
        resolve_model_config({"model": "mopoe", "modalities": {"grey": {"fine_tune": True}}}, raw)
