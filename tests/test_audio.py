"""Audio (kind "audio"): WAV reading with the stdlib wave module, FFT resampling, the log-mel front
end checked by hand, clear errors for bad files, and speech-like clips + captions trained via the CLI."""
from __future__ import annotations

import json
import wave

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

import omnivae
from omnivae.cli import app
from omnivae.data.folder import load_folder
from omnivae.data.inspect import guess_source
from omnivae.data.raw import RawData
from omnivae.data.tensors import TensorData
from omnivae.errors import ConfigError, InputError
from omnivae.modalities import build_modality, infer_spec, parse_spec
from omnivae.modalities.audio import SAMPLE_RATE, AudioSpec, hz_to_mel, mel_filterbank, mel_to_hz, read_wav, resample

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
    assert mod.spec.shape == (64, 26)  # 1 + 4000 // 160 frames
    waves = np.stack([tone(f, 0.25, SAMPLE_RATE) for f in PITCHES.values()])[:, None]
    x = mod.prepare(waves)
    assert x.shape == (2, 64, 26) and x.dtype == torch.float32
    bands = x[:, :, 5:-5].mean(2).argmax(1)
    edges = mel_to_hz(np.linspace(0, hz_to_mel(8000), 66))  # centre of band k: edges[k + 1]
    for band, freq in zip(bands.tolist(), PITCHES.values()):
        assert edges[band] < freq < edges[band + 2], (band, freq)
    assert bands[1] > bands[0] + 10
    # the front end, by hand for one frame: |rfft(hann * frame)|^2 through the filters, then log
    frame = torch.from_numpy(waves[0, 0, 800 - 200:800 + 200]) * torch.hann_window(400)
    power = torch.fft.rfft(frame).abs() ** 2
    assert torch.allclose(x[0, :, 5], torch.log(mod.filters @ power + 1e-10), atol=1e-3)
    assert torch.equal(mod.prepare(x), x)  # log-mels pass as they are
    with pytest.raises(InputError, match=r"expected waveforms of shape \[batch, 1, 4000\]"):
        mod.prepare(np.zeros((2, 1, 3999), np.float32))


def test_spec_derives_its_shape_and_refuses_bad_values():
    spec = parse_spec("a", {"kind": "audio", "samples": 1600, "n_mels": 8, "hop": 100})
    assert spec.shape == (8, 17)
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
    assert x.shape[2] == max(lengths)  # resampled to 16 kHz, padded to the longest clip
    shortest = int(np.argmin(lengths))
    assert np.all(x[shortest, 0, lengths[shortest]:] == 0) and np.abs(x[shortest, 0, :100]).max() > 0.1
    assert peak_hz(x[1, 0, :lengths[1]], SAMPLE_RATE) == pytest.approx(PITCHES["low"], abs=5)


def test_a_tiny_model_learns_the_log_mels():
    torch.manual_seed(0)
    waves = np.stack([tone(PITCHES["low" if i % 2 else "high"], 0.1, SAMPLE_RATE, phase=i) for i in range(32)])
    raw = RawData({"speech": waves[:, None]}, {"speech": "audio"})
    config = {"model": "vae", "latent_dim": 2, "modalities": {"speech": {
        "kind": "audio", "samples": waves.shape[1], "n_mels": 16, "channels": [8, 16]}}}
    model = omnivae.build_model(config, raw)
    data = TensorData.from_raw(model, raw)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    losses = []
    for _ in range(60):
        loss = model.loss(data.batch()).total
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-5:]) < 0.5 * losses[0], (losses[0], losses[-5:])


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
    assert spec["kind"] == "audio" and spec["shape"] == [16, 1 + spec["samples"] // 160]
    model = omnivae.load(out / "model")
    z = model.encode({"audio": model.modalities["audio"].read_cli([str(tmp_path / "d" / "clip0.wav")])})
    assert z.shape == (1, 4) and torch.isfinite(z).all()
