"""Safe loading: planted pickles are refused without running, tensors must fit the config,
config names cannot reach outside the model folder, and checkpoints holding arbitrary
pickled objects are refused by read_checkpoint without running them."""
from __future__ import annotations

import hashlib
import io
import json
import pickle
import shutil
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from omnivae.data.raw import RawData
from omnivae.errors import ModelFileError
from omnivae.io import load_model, save_model
from omnivae.models import MODELS, build_model
from omnivae.train.checkpoint import MAGIC, read_checkpoint, verify_checkpoint, write_checkpoint

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


class Payload:
    """Unpickling this runs code: it writes `marker`."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('payload ran')",))


def malicious_pickle(marker) -> bytes:
    return pickle.dumps({"state_dict": Payload(marker)})


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """A small image + text + label model saved to a folder."""
    rng = np.random.default_rng(0)
    n = 40
    raw = RawData({"image": (rng.random((n, 1, 8, 8)) * 255).astype(np.uint8),
                   "text": [f"a {c} thing number {i % 5}" for i, c in zip(range(n), ["red", "blue"] * n)],
                   "label": rng.integers(0, 3, n)},
                  {"image": "image", "text": "text", "label": "categorical"})
    torch.manual_seed(0)
    model = build_model({"model": "mvae", "latent_dim": 4, "modalities": {
        "image": {"kind": "image", "shape": [1, 8, 8], "arch": "mlp", "hidden": [16]},
        "text": {"kind": "text", "hidden": 8, "embed_dim": 8, "max_len": 6},
        "label": {"kind": "categorical", "num_classes": 3, "hidden": [8]}}}, raw)
    folder = tmp_path_factory.mktemp("saved") / "model"
    save_model(model, folder)
    return folder


@pytest.fixture
def folder(saved_model, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(saved_model, copy)
    return copy


def test_the_payload_is_live(tmp_path):
    """So the tests below can fail: unpickling the payload really runs it."""
    marker = tmp_path / "ran"
    pickle.loads(malicious_pickle(marker))
    assert marker.read_text() == "payload ran"


def test_a_clean_folder_loads(folder):
    model = load_model(folder)
    assert model.names == ["image", "text", "label"]


@pytest.mark.parametrize("name", ["weights.pkl", "model.pt", "pytorch_model.bin", "model.safetensors",
                                  "extra/evil.pkl", "deep/er/state.pth", "tokenizer.pickle", "opt.ckpt",
                                  "MODEL.PT"])
def test_planted_pickles_are_refused_and_never_run(folder, tmp_path, name):
    marker = tmp_path / "payload-ran"
    target = folder / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(malicious_pickle(marker))
    with pytest.raises(ModelFileError):
        load_model(folder)
    assert not marker.exists(), "the pickle payload ran"


def test_pickle_as_torch_zip_renamed_safetensors_is_refused(folder, tmp_path):
    marker = tmp_path / "payload-ran"
    buffer = io.BytesIO()
    torch.save({"w": Payload(marker)}, buffer)  # a torch zip archive with a pickle inside
    (folder / "model.safetensors").write_bytes(buffer.getvalue())
    with pytest.raises(ModelFileError, match="cannot be read"):
        load_model(folder)
    assert not marker.exists()


def test_tensor_shapes_must_match_the_config(folder):
    weights = load_file(str(folder / "model.safetensors"))
    key = next(k for k in weights if k.endswith("weight") and weights[k].dim() == 2)
    weights[key] = torch.zeros(weights[key].shape[0] + 1, weights[key].shape[1])
    save_file(weights, str(folder / "model.safetensors"))
    with pytest.raises(ModelFileError, match="wrong shapes"):
        load_model(folder)


def test_missing_or_extra_tensors_are_refused(folder):
    weights = load_file(str(folder / "model.safetensors"))
    weights.pop(next(iter(weights)))
    weights["intruder"] = torch.zeros(3)
    save_file(weights, str(folder / "model.safetensors"))
    with pytest.raises(ModelFileError, match="missing.*unexpected.*intruder"):
        load_model(folder)


def test_config_changed_under_the_weights_is_refused(folder):
    header = json.loads((folder / "config.json").read_text())
    header["config"]["latent_dim"] = 5
    (folder / "config.json").write_text(json.dumps(header))
    with pytest.raises(ModelFileError, match="does not match"):
        load_model(folder)


@pytest.mark.parametrize("name", ["../../x", "../outside", "/etc/passwd", "a/b", "..", ".hidden", "x\\..\\y",
                                  "name with space", "", "t\x00x", "ok:alt"])
def test_modality_names_cannot_escape_the_folder(folder, tmp_path, name):
    # plant a tokenizer where an escaping name would point, to prove it is never read
    header = json.loads((folder / "config.json").read_text())
    specs = header["config"]["modalities"]
    specs[name] = specs.pop("text")
    (folder / "config.json").write_text(json.dumps(header))
    outside = tmp_path / "x.json"
    outside.write_text((folder / "tokenizer_text.json").read_text())
    with pytest.raises(ModelFileError, match="modality name"):
        load_model(folder)


def test_tokenizer_file_names_come_from_the_checked_names(folder):
    model = load_model(folder)
    names = {n: m._tokenizer_file() for n, m in model.modalities.items() if m.kind == "text"}
    assert names == {"text": "tokenizer_text.json"}
    for file_name in names.values():
        assert (folder / file_name).resolve().parent == folder.resolve()


def test_tampered_tokenizer_is_refused(folder):
    (folder / "tokenizer_text.json").write_text('{"not": "a tokenizer"}')
    with pytest.raises(ModelFileError, match="tokenizer"):
        load_model(folder)


# -- checkpoints -------------------------------------------------------------------------------
def with_trailer(payload: bytes) -> bytes:
    """Give any bytes a valid integrity trailer: the checksum guards against damage, not intent."""
    return payload + hashlib.sha256(payload).digest() + MAGIC


def test_checkpoint_with_a_pickled_object_is_refused_without_running(tmp_path):
    marker = tmp_path / "payload-ran"
    buffer = io.BytesIO()
    torch.save({"state_dict": {"w": torch.zeros(2)}, "extra": Payload(marker)}, buffer)
    path = tmp_path / "evil.ckpt"
    path.write_bytes(with_trailer(buffer.getvalue()))
    verify_checkpoint(path)  # the file is intact ...
    with pytest.raises(ModelFileError, match="cannot be loaded safely"):
        read_checkpoint(path)  # ... and still refused
    assert not marker.exists()


def test_plain_pickle_checkpoint_is_refused_without_running(tmp_path):
    marker = tmp_path / "payload-ran"
    path = tmp_path / "evil.ckpt"
    path.write_bytes(with_trailer(malicious_pickle(marker)))
    with pytest.raises(ModelFileError):
        read_checkpoint(path)
    assert not marker.exists()
    path.write_bytes(malicious_pickle(marker))  # no trailer at all
    with pytest.raises(ModelFileError, match="no integrity trailer"):
        read_checkpoint(path)
    assert not marker.exists()


def test_resume_refuses_a_checkpoint_holding_pickled_objects(tmp_path, make_raw, tiny_config):
    """Through the trainer: Lightning loads via AtomicCheckpointIO -> ModelFileError, nothing runs."""
    from omnivae.data.tensors import TensorData
    from omnivae.train.config import TrainConfig
    from omnivae.train.trainer import fit

    marker = tmp_path / "payload-ran"
    raw = make_raw(n=24)
    model = build_model(tiny_config(), raw)
    data = TensorData.from_raw(model, raw)
    config = TrainConfig(max_epochs=1, batch_size=8, progress=False, tensorboard=False, num_threads=1)
    fit(model, data, None, config, tmp_path / "run")
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    state = read_checkpoint(last)
    state["omnivae"] = {"note": Payload(marker)}
    write_checkpoint(state, last)  # a well-formed, checksummed file with a pickled object inside
    with pytest.raises(ModelFileError, match="cannot be loaded safely"):
        fit(build_model(tiny_config(), raw), data, None, config.model_copy(update={"max_epochs": 2}),
            tmp_path / "run", resume=True)
    assert not marker.exists()


def test_an_oversized_config_is_refused_before_anything_is_allocated(folder, monkeypatch):
    # 10**7 hidden units would be ~5 GB of float32 weights; the check runs on the meta device
    header = json.loads((folder / "config.json").read_text())
    header["config"]["modalities"]["image"]["hidden"] = [10 ** 7]
    (folder / "config.json").write_text(json.dumps(header))
    import omnivae.models

    original, devices = omnivae.models.build_model, []

    def guarded_build(config, *args):
        devices.append(torch.empty(0).device.type)
        if devices[-1] != "meta":
            raise AssertionError("the oversized model was built for real")
        return original(config, *args)
    monkeypatch.setattr(omnivae.models, "build_model", guarded_build)
    start = time.perf_counter()
    with pytest.raises(ModelFileError, match=r"wrong shapes.*10000000"):
        load_model(folder)
    assert devices == ["meta"] and time.perf_counter() - start < 5


MODALITIES = {
    "image": {"kind": "image", "shape": [3, 16, 16], "channels": [8, 16]},
    "pixels": {"kind": "image", "shape": [1, 8, 8], "arch": "mlp", "hidden": [16], "likelihood": "gaussian",
               "learn_scale": True},
    "label": {"kind": "categorical", "num_classes": 3, "hidden": [16]},
    "vector": {"kind": "vector", "dim": 4, "hidden": [16]},
    "signal": {"kind": "signal", "shape": [2, 32], "channels": [4, 8]},
    "text": {"kind": "text", "vocab_size": 30, "max_len": 8, "hidden": 16, "embed_dim": 8},
    "tokens": {"kind": "text", "vocab_size": 30, "max_len": 8, "hidden": 16, "embed_dim": 8,
               "encoder": "transformer", "decoder": "transformer", "heads": 2},
}


@pytest.mark.parametrize("family", sorted(MODELS))
def test_every_model_family_builds_on_meta_with_the_real_shapes(family):
    """Else load_model would skip its allocation-free check for that family."""
    single = {"ae", "dae", "sparse_ae", "stacked_ae", "vae", "iwae", "ladder_vae"}
    special = {"stacked_ae": {"layers": [16, 4], "pretrain_epochs": 0}, "cvae": {"target": "image"},
               "ladder_vae": {"layers": [8, 4]}}
    chosen = {"m2": ("image", "label")}  # an input and its label
    modalities = {"image": MODALITIES["image"]} if family in single else \
        {n: MODALITIES[n] for n in chosen[family]} if family in chosen else MODALITIES
    config = {"model": family, "latent_dim": 4, **special.get(family, {}), "modalities": modalities}
    with torch.device("meta"):
        meta = build_model(config)
    real = build_model(config)
    assert {t.device.type for t in [*meta.parameters(), *meta.buffers()]} == {"meta"}
    assert {k: v.shape for k, v in meta.state_dict().items()} == {k: v.shape for k, v in real.state_dict().items()}
