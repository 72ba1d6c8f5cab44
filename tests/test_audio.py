"""Audio (kind "audio"): WAV reading with the stdlib wave module, FFT resampling, the log-mel front
end checked by hand, the frame mask of clips of different lengths (padding is neither scored nor
encoded, generated spectrograms mark their end), clear errors for bad files, and speech-like clips +
captions trained via the CLI."""
from __future__ import annotations

import json
import wave

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

import omnivae
from omnivae import Batch
from omnivae.cli import app
from omnivae.data.folder import load_folder
from omnivae.data.inspect import guess_source
from omnivae.data.raw import RawData
from omnivae.data.tensors import TensorData
from omnivae.errors import ConfigError, InputError
from omnivae.metrics.reconstruction import reconstruction_metrics
from omnivae.modalities import build_modality, infer_spec, parse_spec
from omnivae.models import MODELS
from omnivae.modalities.audio import PAD, SAMPLE_RATE, AudioModality, AudioSpec, hz_to_mel, mel_filterbank, \
    mel_to_hz, read_wav, resample

pytestmark = pytest.mark.usefixtures("one_thread")
PITCHES = {"low": 300.0, "high": 2000.0}


def tone(freq: float, seconds: float, rate: int, phase: float = 0.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t + phase)).astype(np.float32)


def write_wav(path, x: np.ndarray, rate: int, width: int = 2) -> None:
    """float [T] or [T, channels] in [-1, 1] -> integer PCM WAV of `width` bytes per sample."""
    x = x[:, None] if x.ndim == 1 else x
    scale = 2 ** (8 * width - 1)
    q = np.clip(np.round(x * scale), -scale, scale - 1).astype(np.int64)
    if width == 1:
        data = (q + 128).astype(np.uint8).tobytes()
    elif width == 3:
        data = (q.reshape(-1, 1) & 0xFFFFFF).astype("<u4").view(np.uint8).reshape(-1, 4)[:, :3].tobytes()
    else:
        data = q.astype({2: "<i2", 4: "<i4"}[width]).tobytes()
    with wave.open(str(path), "wb") as f:
        f.setnchannels(x.shape[1])
        f.setsampwidth(width)
        f.setframerate(rate)
        f.writeframes(data)


@pytest.mark.parametrize("width", [1, 2, 3, 4])
def test_reads_integer_pcm_of_every_width_and_mixes_to_mono(tmp_path, width):
    left = np.array([0.0, 0.5, -0.5, 0.25, -1.0, 0.75], dtype=np.float32)
    right = np.array([0.5, 0.5, 0.0, -0.25, -1.0, 0.25], dtype=np.float32)
    write_wav(tmp_path / "a.wav", np.stack([left, right], 1), 8000, width)
    x, rate = read_wav(tmp_path / "a.wav")
    assert rate == 8000 and x.dtype == np.float32 and x.shape == (6,)
    step = 2.0 ** (1 - 8 * width)  # one quantisation step
    assert np.allclose(x, (left + right) / 2, atol=step), x


def peak_hz(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[np.argmax(spectrum)])


def test_resampling_keeps_the_frequency_and_removes_what_the_new_rate_cannot_hold():
    x = tone(1000, 0.5, 8000)
    up = resample(x, 8000, 16000)
    assert up.shape == (8000,) and peak_hz(up, 16000) == pytest.approx(1000, abs=2)
    assert np.allclose(up[::2], x, atol=1e-4)  # band-limited interpolation keeps the original samples
    assert np.sqrt(np.mean(up ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=1e-3)  # same amplitude
    # 1 kHz + 6 kHz at 16 kHz down to 8 kHz: the 6 kHz tone is above the new Nyquist (4 kHz) and must
    # vanish, not fold over to 2 kHz as it would by keeping every other sample
    mixed = tone(1000, 0.5, 16000) + tone(6000, 0.5, 16000)
    down = resample(mixed, 16000, 8000)
    spectrum = np.abs(np.fft.rfft(down))
    freqs = np.fft.rfftfreq(len(down), 1 / 8000)
    assert peak_hz(down, 8000) == pytest.approx(1000, abs=2)
    assert spectrum[np.abs(freqs - 2000) < 20].max() < 1e-3 * spectrum.max()
    naive = np.abs(np.fft.rfft(mixed[::2]))
    assert naive[np.abs(freqs - 2000) < 20].max() > 0.5 * naive.max()  # what aliasing would have left


def test_mel_scale_and_filterbank_by_hand():
    assert hz_to_mel(1000.0) == pytest.approx(1000.0, abs=0.1)  # the HTK scale is anchored at 1 kHz
    assert mel_to_hz(hz_to_mel(3456.0)) == pytest.approx(3456.0)
    # 16 kHz, n_fft 16: bins every 1 kHz. 2 filters over 0..8 kHz: mel(8000) = 2595 log10(1 + 8000/700)
    # = 2840.02, edges at 0, 946.67, 1893.35, 2840.02 mel = 0, 921.46, 3055.88, 8000 Hz. Filter 0 falls
    # from 921.46 to 3055.88 Hz: at 1 kHz (3055.88 - 1000) / (3055.88 - 921.46) = 0.9632, at 2 kHz
    # 0.4947, at 3 kHz 0.0262; filter 1 rises from 921.46 Hz: at 1 kHz 78.54 / 2134.43 = 0.0368,
    # and falls from 3055.88 to 8000 Hz: at 4 kHz 4000 / 4944.12 = 0.8090
    fb = mel_filterbank(16000, 16, 2, 0.0, 8000.0)
    assert fb.shape == (2, 9)
    assert fb[0, :4].tolist() == pytest.approx([0.0, 0.9632, 0.4947, 0.0262], abs=1e-4)
    assert fb[1, [0, 1, 4, 8]].tolist() == pytest.approx([0.0, 0.0368, 0.8090, 0.0], abs=1e-4)


def audio(samples: int = 4000, **options):
    return build_modality("speech", AudioSpec(samples=samples, **options), 4)


def test_log_mel_shape_and_two_pitches_in_different_mel_bands():
    mod = audio(samples=4000)
    assert mod.spec.shape == (65, 26)  # 64 bands + the frame mask, 1 + 4000 // 160 frames
    waves = np.stack([tone(f, 0.25, SAMPLE_RATE) for f in PITCHES.values()])[:, None]
    x = mod.prepare(waves)
    assert x.shape == (2, 65, 26) and x.dtype == torch.float32
    # frame 25 is centred on sample 4000, past the end of a 4000-sample clip: padding
    assert x[:, -1].tolist() == [[1.0] * 25 + [0.0]] * 2 and (x[:, :-1, 25] == PAD).all()
    bands = x[:, :-1, 5:-5].mean(2).argmax(1)
    edges = mel_to_hz(np.linspace(0, hz_to_mel(8000), 66))  # centre of band k: edges[k + 1]
    for band, freq in zip(bands.tolist(), PITCHES.values()):
        assert edges[band] < freq < edges[band + 2], (band, freq)
    assert bands[1] > bands[0] + 10
    # the front end, by hand for one frame: |rfft(hann * frame)|^2 through the filters, then log
    frame = torch.from_numpy(waves[0, 0, 800 - 200:800 + 200]) * torch.hann_window(400)
    power = torch.fft.rfft(frame).abs() ** 2
    assert torch.allclose(x[0, :-1, 5], torch.log(mod.filters @ power + 1e-10), atol=1e-3)
    assert torch.equal(mod.prepare(x), x)  # model-space values pass as they are
    plain = mod.prepare(x[:, :-1])  # log-mels without a mask: every frame is inside the clip
    assert torch.equal(plain[:, :-1], x[:, :-1]) and (plain[:, -1] == 1).all()
    with pytest.raises(InputError, match=r"expected waveforms of shape \[batch, 1, 4000\]"):
        mod.prepare(np.zeros((2, 1, 3999), np.float32))


def test_spec_derives_its_shape_and_refuses_bad_values():
    spec = parse_spec("a", {"kind": "audio", "samples": 1600, "n_mels": 8, "hop": 100})
    assert spec.shape == (9, 17)
    assert parse_spec("a", spec.to_dict()) == spec  # a saved config reads back
    assert infer_spec("a", "audio", np.zeros((3, 1, 800), np.float32), np.ones(3, bool)).samples == 800
    for bad, message in [({"shape": [8, 16]}, "does not match"), ({"f_max": 9000.0}, "f_max"),
                         ({"n_mels": 1}, "at least 2"), ({"samples": 0}, "samples")]:
        with pytest.raises(ConfigError, match=message):
            parse_spec("a", {"kind": "audio", "samples": 1600, "n_mels": 8, "hop": 100, **bad})


def test_bad_wav_files_give_clear_errors(tmp_path):
    write_wav(tmp_path / "ok.wav", tone(440, 0.1, 8000), 8000)
    data = (tmp_path / "ok.wav").read_bytes()
    (tmp_path / "short.wav").write_bytes(data[:-200])  # the header promises 800 frames
    with pytest.raises(InputError, match="short.wav is truncated: its header promises 800 frames, it holds 700"):
        read_wav(tmp_path / "short.wav")
    (tmp_path / "head.wav").write_bytes(data[:30])
    with pytest.raises(InputError, match="head.wav (is truncated or unreadable|is not a PCM WAV)"):
        read_wav(tmp_path / "head.wav")
    write_wav(tmp_path / "empty.wav", np.zeros(0, np.float32), 8000)
    with pytest.raises(InputError, match=r"empty.wav holds no samples \(0 frames\)"):
        read_wav(tmp_path / "empty.wav")
    floats = bytearray(data)
    floats[20:22] = (3).to_bytes(2, "little")  # format tag 3: IEEE float
    (tmp_path / "float.wav").write_bytes(bytes(floats))
    with pytest.raises(InputError, match="float.wav is not a PCM WAV file.*pcm_s16le"):
        read_wav(tmp_path / "float.wav")
    with pytest.raises(InputError, match="gone.wav does not exist"):
        read_wav(tmp_path / "gone.wav")
    (tmp_path / "metadata.jsonl").write_text(json.dumps({"file_name": "ok.wav"}) + "\n"
                                             + json.dumps({"file_name": "short.wav"}) + "\n")
    with pytest.raises(InputError, match="metadata.jsonl line 2, column 'file_name': .*short.wav is truncated"):
        load_folder(tmp_path)


def make_speech(root, n: int = 24, rate: int = 22050):
    """n clips of 0.2-0.3 s at `rate` Hz (low or high tone, random phase, a little noise), each with a
    caption naming its pitch, in the folder layout (metadata.jsonl)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        pitch = "low" if i % 2 else "high"
        x = tone(PITCHES[pitch], 0.2 + 0.1 * rng.random(), rate, rng.uniform(0, 2 * np.pi))
        write_wav(root / f"clip{i}.wav", x + 0.01 * rng.standard_normal(len(x)).astype(np.float32), rate)
        rows.append({"file_name": f"clip{i}.wav", "caption": f"a {pitch} tone"})
    (root / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return root


def test_a_folder_of_wavs_and_captions_reads_as_audio_and_text(tmp_path):
    make_speech(tmp_path / "d", n=6)
    assert guess_source(tmp_path / "d") == "folder"
    raw = load_folder(tmp_path / "d")
    assert raw.kinds == {"audio": "audio", "caption": "text"}
    x = raw.modalities["audio"]
    assert x.dtype == np.float32 and x.shape[:2] == (6, 1)
    lengths = [round(len(read_wav(tmp_path / "d" / f"clip{i}.wav")[0]) * SAMPLE_RATE / 22050) for i in range(6)]
    assert x.shape[2] == max(lengths)  # resampled to 16 kHz, padded with NaN to the longest clip
    shortest = int(np.argmin(lengths))
    assert np.isnan(x[shortest, 0, lengths[shortest]:]).all() and np.isfinite(x[shortest, 0, :lengths[shortest]]).all()
    assert np.abs(x[shortest, 0, :100]).max() > 0.1 and raw.mask["audio"].all()
    assert peak_hz(x[1, 0, :lengths[1]], SAMPLE_RATE) == pytest.approx(PITCHES["low"], abs=5)


def test_a_tiny_model_learns_the_log_mels_and_where_each_clip_ends():
    torch.manual_seed(0)
    # high tones last 0.06 s (960 samples, 6 of 11 frames inside), low ones 0.1 s (10 of 11)
    waves = np.full((32, 1600), np.nan, np.float32)
    for i in range(32):
        pitch = "low" if i % 2 else "high"
        clip = tone(PITCHES[pitch], 0.1 if pitch == "low" else 0.06, SAMPLE_RATE, phase=i)
        waves[i, :len(clip)] = clip
    raw = RawData({"speech": waves[:, None]}, {"speech": "audio"})
    config = {"model": "vae", "latent_dim": 2, "modalities": {"speech": {
        "kind": "audio", "samples": waves.shape[1], "n_mels": 16, "channels": [8, 16]}}}
    model = omnivae.build_model(config, raw)
    data = TensorData.from_raw(model, raw)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    losses = []
    for _ in range(100):
        loss = model.loss(data.batch()).total
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-5:]) < 0.5 * losses[0], (losses[0], losses[-5:])
    model.eval()
    truth = data.batch().data["speech"]
    assert truth[:, -1].sum(1).tolist() == [6.0 if i % 2 == 0 else 10.0 for i in range(32)]
    generated = model.generate(data.batch(), mean=True, raw=True)["speech"]
    assert torch.equal(generated[:, -1], truth[:, -1])  # each reconstruction ends where its clip does
    # reconstruction error: over the log-mels of valid frames only (scored_count divides the sums)
    valid = truth[:, -1:].bool().expand(-1, 16, -1)
    expected = float(((generated[:, :-1] - truth[:, :-1]) ** 2)[valid].double().mean())
    assert reconstruction_metrics(model, data)["speech"]["mse"] == pytest.approx(expected, rel=1e-5)


def two_clips(root, lengths: tuple[int, ...]) -> RawData:
    """16 kHz tones of the given lengths in samples, written as WAV files in the folder layout and read back."""
    root.mkdir(parents=True, exist_ok=True)
    for i, n in enumerate(lengths):
        write_wav(root / f"c{i}.wav", tone(PITCHES["low"], n / SAMPLE_RATE, SAMPLE_RATE, phase=i), SAMPLE_RATE)
    (root / "metadata.jsonl").write_text("".join(json.dumps({"file_name": f"c{i}.wav"}) + "\n"
                                                 for i in range(len(lengths))))
    return load_folder(root)


@pytest.mark.parametrize("short, last_valid", [(1600, 9), (1601, 10)])
def test_the_frame_mask_ends_where_the_clip_ends(tmp_path, short, last_valid):
    x = two_clips(tmp_path, (short, 3200)).modalities["audio"]
    assert x.shape == (2, 1, 3200) and np.isnan(x[0, 0, short:]).all() and np.isfinite(x[0, 0, :short]).all()
    prepared = audio(samples=3200, n_mels=16).prepare(x)
    # frame t is centred on sample 160 t: inside a clip of 1600 samples up to t = 9, of 1601 up to t = 10
    assert prepared[0, -1].tolist() == [1.0] * (last_valid + 1) + [0.0] * (20 - last_valid)
    assert prepared[1, -1].tolist() == [1.0] * 20 + [0.0]  # frame 20 is centred on sample 3200: past the end
    assert (prepared[0, :-1, last_valid + 1:] == PAD).all() and (prepared[0, :-1, :last_valid + 1] > PAD).all()
    # the valid frames are those of the clip on its own: the padding after it changes none of them
    alone = audio(samples=short, n_mels=16).prepare(x[:1, :, :short])
    assert alone[0, -1].sum() == last_valid + 1
    assert torch.allclose(prepared[0, :-1, :last_valid + 1], alone[0, :-1, :last_valid + 1], atol=1e-4)


def test_padding_is_neither_scored_nor_encoded(tmp_path, monkeypatch):
    waves = two_clips(tmp_path, (1601, 3200)).modalities["audio"]
    torch.manual_seed(0)
    mod = AudioModality.from_data("speech", AudioSpec(samples=3200, n_mels=16, channels=[8, 16]), 4, waves)
    x = mod.prepare(waves)
    valid = x[:, -1].bool()
    assert valid.sum(1).tolist() == [11, 20]
    # standardised on the valid frames only (the padding's log floor would drag every mean down)
    assert torch.allclose(mod.mean[:-1, 0], x[:, :-1].transpose(0, 1)[:, valid].mean(1), atol=1e-4)
    z = torch.randn(3, 2, 4)
    changed = x.clone()
    changed[0, :-1, 11:] = 5 * torch.randn(16, 10)  # other values in the short clip's padded frames
    assert torch.equal(mod.log_likelihood(z, changed), mod.log_likelihood(z, x))
    assert torch.equal(mod.encode(changed).mu, mod.encode(x).mu)
    # what lies inside the clip counts: a valid frame's values, and where the clip ends
    inside, earlier = x.clone(), x.clone()
    inside[0, :-1, 10] += 1.0
    earlier[0, :-1, 10], earlier[0, -1, 10] = PAD, 0.0  # as silence, but the clip now ends one frame sooner
    for other in (inside, earlier):
        assert (mod.log_likelihood(z, other)[:, 0] != mod.log_likelihood(z, x)[:, 0]).all()
        assert not torch.equal(mod.encode(other).mu[0], mod.encode(x).mu[0])
        assert torch.equal(mod.log_likelihood(z, other)[:, 1], mod.log_likelihood(z, x)[:, 1])
    # nor does the decoder's output there: other means for frames 11 on change the long clip's score only
    before, decode = mod.log_likelihood(z, x), mod.decode

    def other_means(codes):
        out = decode(codes).clone()
        out[:, :-1, 11:] += 3.0
        return out

    monkeypatch.setattr(mod, "decode", other_means)
    after = mod.log_likelihood(z, x)
    assert torch.equal(after[:, 0], before[:, 0]) and (after[:, 1] < before[:, 1]).all()
    monkeypatch.undo()
    # reconstruction error counts the log-mels of valid frames only
    assert mod.scored_count(x) == 31 * 16
    assert mod.squared_errors(changed, x) == {"mse": 0.0, "mse_standardized": 0.0}
    errors = mod.squared_errors(inside, x)
    assert errors["mse"] == pytest.approx(16.0) and errors["mse_standardized"] == \
        pytest.approx(float((1 / mod.std[:-1] ** 2).sum()), rel=1e-5)


def test_generated_spectrograms_mark_where_they_end(monkeypatch):
    mod = audio(samples=1600, n_mels=4, arch="mlp", hidden=[8])
    assert mod.spec.shape == (5, 11)
    logits = torch.tensor([[9.0, 9.0, 9.0, -9.0, 9.0] + [-9.0] * 6, [9.0] * 11, [-9.0] * 11])

    def decode(z):
        out = torch.full((len(z), 5, 11), 0.5)
        out[:, -1] = logits
        return out

    monkeypatch.setattr(mod, "decode", decode)
    for sample in (False, True):
        with torch.no_grad():
            x = mod.generate(torch.zeros(3, 4), sample=sample)
        assert x.shape == (3, 5, 11)
        # a clip ends at the first frame the decoder calls padding; every clip keeps its first frame
        assert x[:, -1].tolist() == [[1.0] * 3 + [0.0] * 8, [1.0] * 11, [1.0] + [0.0] * 10]
        assert (x[0, :-1, 3:] == PAD).all() and (x[2, :-1, 1:] == PAD).all() and (x[0, :-1, :3] > PAD).all()
        assert torch.equal(mod.prepare(x), x)  # generated values are model-space values


def test_nan_marks_padding_only_after_a_clip(tmp_path):
    mod = audio(samples=800, n_mels=8, arch="mlp", hidden=[8])
    wave = tone(440, 0.05, SAMPLE_RATE)
    gap, inf = wave.copy(), wave.copy()
    gap[100], inf[-1] = np.nan, np.inf
    for bad in (gap, inf):
        with pytest.raises(InputError, match="NaN or infinite values inside a clip"):
            mod.prepare(bad[None])
    with pytest.raises(InputError, match="waveform 1 holds no samples"):
        mod.prepare(np.stack([wave, np.full(800, np.nan, np.float32)]))
    # an array of padded waveforms: a row is missing only when it holds no finite sample
    padded = np.where(np.arange(800) < 300, wave, np.nan)
    values, present, _ = AudioModality.read_array("a", np.stack([wave, padded, np.full(800, np.nan)]))
    assert values.shape == (3, 1, 800) and values.dtype == np.float32 and present.tolist() == [True, True, False]
    write_wav(tmp_path / "short.wav", wave[:300], SAMPLE_RATE)
    read = mod.read_cli([str(tmp_path / "short.wav")])  # padded with NaN to the model's length
    assert read.shape == (1, 1, 800) and np.isnan(read[0, 0, 300:]).all() and np.isfinite(read[0, 0, :300]).all()


SINGLE = {"vae", "iwae", "ae", "dae", "sparse_ae", "ladder_vae"}  # models of exactly one modality
OPTIONS = {"cvae": {"target": "audio"}, "ladder_vae": {"layers": [8, 4]}, "dae": {"noise": "gaussian"}}


@pytest.mark.parametrize("name", sorted(set(MODELS) - {"stacked_ae"}))  # stacked_ae: images and vectors only
def test_every_model_trains_on_clips_of_different_lengths(name):
    waves = np.full((8, 1, 800), np.nan, np.float32)
    for i in range(7):  # the last row has no audio at all: missing
        n = 300 + 60 * i
        waves[i, 0, :n] = tone(PITCHES["low" if i % 2 else "high"], n / SAMPLE_RATE, SAMPLE_RATE)
    values, present, _ = AudioModality.read_array("audio", waves)
    modalities = {"audio": {"kind": "audio", "samples": 800, "n_mels": 8, "arch": "mlp", "hidden": [16]}}
    data, kinds = {"audio": values}, {"audio": "audio"}
    if name not in SINGLE:
        modalities["label"] = {"kind": "categorical", "num_classes": 2, "hidden": [8]}
        data["label"], kinds["label"] = np.arange(8) % 2, "categorical"
    raw = RawData(data, kinds, mask={"audio": present})
    torch.manual_seed(0)
    config = {"model": name, "latent_dim": 4, "modalities": modalities, **OPTIONS.get(name, {})}
    model = omnivae.build_model(config, raw)
    batch = TensorData.from_raw(model, raw).batch()
    other = batch.data["audio"].clone()
    other[:, :-1][other[:, -1:].expand(-1, 8, -1) == 0] = 3.0  # other values in every padded frame
    losses = []
    for x in (batch.data["audio"], other):
        torch.manual_seed(1)
        losses.append(model.loss(Batch({**batch.data, "audio": x}, batch.mask)).total)
    assert torch.isfinite(losses[0]) and torch.equal(losses[0], losses[1])
    losses[0].backward()
    model.eval()
    given = ["label"] if name == "cvae" else None
    out = model.generate(batch, given=given, targets=["audio"], mean=True, raw=True)["audio"]
    assert out.shape == (8, 9, 6) and torch.isfinite(out).all()
    assert ((out[:, -1] == 0) | (out[:, -1] == 1)).all() and (out[:, -1].diff(dim=1) <= 0).all()


def test_speech_and_captions_train_for_an_epoch_through_the_cli(tmp_path):
    make_speech(tmp_path / "d")
    out = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "train", "--data", str(tmp_path / "d"), "--out", str(out), "--set", "train.max_epochs=1",
        "--set", "train.progress=false", "--set", "train.tensorboard=false", "--set", "train.batch_size=8",
        "--set", "model.model=mopoe", "--set", "model.latent_dim=4", "--set", "model.conditional_prior=null",
        "--set", "model.modalities.audio.n_mels=16", "--set", "model.modalities.caption.hidden=16"])
    assert result.exit_code == 0, result.output
    spec = yaml.safe_load((out / "run.yaml").read_text())["model"]["modalities"]["audio"]
    assert spec["kind"] == "audio" and spec["shape"] == [17, 1 + spec["samples"] // 160]
    model = omnivae.load(out / "model")
    z = model.encode({"audio": model.modalities["audio"].read_cli([str(tmp_path / "d" / "clip0.wav")])})
    assert z.shape == (1, 4) and torch.isfinite(z).all()
    result = CliRunner().invoke(app, ["generate", "--model", str(out / "model"), "--from", "caption", "a low tone",
                                      "--to", "audio", "--n", "2", "--out", str(tmp_path / "gen")])
    assert result.exit_code == 0, result.output
    entry = json.loads((tmp_path / "gen" / "outputs.json").read_text())["outputs"]["audio"][0]
    spectrograms = np.load(tmp_path / "gen" / entry["file"])  # log-mels and the mask of where each clip ends
    assert spectrograms.shape == (2, 17, spec["shape"][1]) and set(np.unique(spectrograms[:, -1])) <= {0.0, 1.0}
    assert (spectrograms[:, :-1][np.broadcast_to(spectrograms[:, -1:] == 0, (2, 16, spec["shape"][1]))]
            == PAD).all()
