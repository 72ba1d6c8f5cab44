"""Audio: WAV files read as mono waveforms, seen by the networks as log-mel spectrograms with a
frame mask that says where each clip ends.

RawData form: float32 [N, 1, T] mono waveforms in [-1, 1] at one rate; NaN after a clip's end
is padding (a row with no finite sample is missing). A folder's WAV files (a metadata column
naming .wav files, `file_name` included) are read with the stdlib `wave` module (8-, 16-, 24-
and 32-bit integer PCM), averaged to mono, resampled to SAMPLE_RATE (16 kHz) and padded with
NaN to the longest clip, at most MAX_SECONDS (longer clips are cropped from the start, with a
warning).

Resampling is band-limited FFT resampling (as scipy.signal.resample): the spectrum is
truncated (downsampling: an ideal low-pass, no aliasing) or zero-padded (upsampling), then
inverted at the new length. It treats a clip as periodic, so its two ends may ring slightly.

Model space: [B, n_mels + 1, frames], frames = 1 + samples // hop. Channels 0..n_mels-1 are the
log-mel spectrogram log(M |STFT(x)|^2 + 1e-10), with a Hann window of n_fft samples, zero
padding of n_fft/2 at both ends (and zeros in place of the NaN padding), and M triangular
filters on the HTK mel scale (mel = 2595 log10(1 + f / 700), as torchaudio's melscale_fbanks
with norm=None). The last channel is the frame mask: 1 where the frame's centre sample
(frame t is centred on sample t * hop) lies inside the clip, 0 past its end; the log-mels of
padded frames are set to log(1e-10), the log floor. So a clip's valid frames do not depend on
how much padding follows it.

The signal modality's 1-D conv (or MLP) networks see standardised log-mels (mean and std
learned on valid frames only) with padded frames set to 0, plus the mask as one more channel,
so padding is never mistaken for silence. The likelihood scores the log-mels of valid frames
only (Gaussian/Laplace, one channel per mel band) and the mask on every frame (Bernoulli: the
decoder's last channel holds its logits), so the model learns where clips end without spending
capacity on padding. Generated values are in the same form: the clip ends at the first frame
the decoder calls padding, and the log-mels from there on are the log floor (there is no way
back to a waveform here).
"""
from __future__ import annotations

import warnings
import wave
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import model_validator

from omnivae.config import NonNegativeFloat, PositiveInt
from omnivae.errors import InputError
from omnivae.modalities import likelihoods
from omnivae.modalities.base import flatten_codes, float_array, full_precision
from omnivae.modalities.signal import SignalModality, SignalSpec

SAMPLE_RATE = 16000  # Hz: what a folder's WAV files are resampled to
MAX_SECONDS = 30.0  # a folder's clips are padded to the longest, cropped beyond this
SUFFIXES = (".wav", ".wave")
LOG_FLOOR = 1e-10
PAD = float(np.log(LOG_FLOOR))  # the log-mel value of padded frames (and of digital silence)


# -- reading ---------------------------------------------------------------------------------
def pcm_to_float(data: bytes, width: int, channels: int) -> np.ndarray:
    """Little-endian integer PCM -> float32 [frames, channels] in [-1, 1)."""
    if width == 1:  # 8-bit WAV is unsigned
        x = np.frombuffer(data, dtype=np.uint8).astype(np.float32) - 128.0
    elif width == 3:  # 24-bit: three bytes, sign-extended through the top byte of an int32
        b = np.frombuffer(data, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        x = ((b[:, 0] << 8 | b[:, 1] << 16 | b[:, 2] << 24) >> 8).astype(np.float32)
    else:
        x = np.frombuffer(data, dtype={2: "<i2", 4: "<i4"}[width]).astype(np.float32)
    return x.reshape(-1, channels) / float(2 ** (8 * width - 1))


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """A PCM WAV file -> (float32 mono [T] in [-1, 1], sample rate); InputError if it cannot be used."""
    path = Path(path)
    try:
        with wave.open(str(path), "rb") as f:
            channels, width, rate, frames = f.getnchannels(), f.getsampwidth(), f.getframerate(), f.getnframes()
            data = f.readframes(frames)
    except FileNotFoundError:
        raise InputError(f"audio file {path} does not exist") from None
    except wave.Error as exc:
        raise InputError(f"audio file {path} is not a PCM WAV file the wave module reads ({exc}); only "
                         "uncompressed integer PCM is supported (convert float or compressed audio, e.g. "
                         "with `ffmpeg -i in -acodec pcm_s16le out.wav`)") from None
    except (EOFError, OSError) as exc:
        raise InputError(f"audio file {path} is truncated or unreadable ({type(exc).__name__}: {exc})") from None
    if width not in (1, 2, 3, 4):
        raise InputError(f"audio file {path}: {8 * width}-bit samples are not supported (8, 16, 24 or 32-bit PCM)")
    if rate < 1 or channels < 1:
        raise InputError(f"audio file {path}: the header gives {channels} channels at {rate} Hz")
    if frames == 0:
        raise InputError(f"audio file {path} holds no samples (0 frames)")
    got = len(data) // (width * channels)
    if got < frames:
        raise InputError(f"audio file {path} is truncated: its header promises {frames} frames, it holds {got}")
    return pcm_to_float(data[: frames * width * channels], width, channels).mean(axis=1), rate


def resample(x: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Band-limited FFT resampling of [..., T] from `rate` to `target` Hz (see the module docstring)."""
    if rate == target:
        return x.astype(np.float32, copy=False)
    n = x.shape[-1]
    m = max(1, round(n * target / rate))
    spectrum = np.fft.rfft(x.astype(np.float64), axis=-1)
    keep = min(spectrum.shape[-1], m // 2 + 1)
    out = np.zeros((*x.shape[:-1], m // 2 + 1), dtype=complex)
    out[..., :keep] = spectrum[..., :keep]
    if m < n and m % 2 == 0:  # the new Nyquist bin stands for both +f and -f: keep its real half
        out[..., m // 2] = out[..., m // 2].real
    return (np.fft.irfft(out, n=m, axis=-1) * (m / n)).astype(np.float32)


def fit_length(x: np.ndarray, samples: int) -> np.ndarray:
    """[T] -> [samples]: cropped from the start, or padded with NaN (no sound) at the end."""
    return x[:samples] if len(x) >= samples else np.pad(x, (0, samples - len(x)), constant_values=np.nan)


def read_clip(path, rate: int = SAMPLE_RATE) -> np.ndarray:
    """A WAV file as float32 mono [T] at `rate` Hz."""
    x, file_rate = read_wav(path)
    return resample(x, file_rate, rate)


# -- log-mel front end -------------------------------------------------------------------------
def hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float) -> torch.Tensor:
    """[n_mels, n_fft // 2 + 1]: triangles with peaks at n_mels points evenly spaced in mel between
    f_min and f_max (their feet at the neighbouring points), evaluated at each FFT bin's frequency."""
    bins = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising, falling = (bins - lower) / (centre - lower), (upper - bins) / (upper - centre)
    return torch.from_numpy(np.clip(np.minimum(rising, falling), 0.0, None)).float()


class AudioSpec(SignalSpec):
    kind: Literal["audio"] = "audio"
    shape: tuple[PositiveInt, PositiveInt] | None = None  # (n_mels + 1, frames): derived, never set by hand
    samples: PositiveInt  # waveform length the model reads (inferred from the data)
    sample_rate: PositiveInt = SAMPLE_RATE  # Hz of those waveforms (a folder's are resampled to SAMPLE_RATE)
    n_fft: PositiveInt = 400  # STFT window: 25 ms at 16 kHz
    hop: PositiveInt = 160  # 10 ms at 16 kHz
    n_mels: PositiveInt = 64
    f_min: NonNegativeFloat = 0.0
    f_max: NonNegativeFloat | None = None  # None: sample_rate / 2

    @model_validator(mode="after")
    def _derive_shape(self) -> "AudioSpec":
        top = self.f_max if self.f_max is not None else self.sample_rate / 2
        if top > self.sample_rate / 2 or self.f_min >= top:
            raise ValueError(f"need 0 <= f_min < f_max <= sample_rate / 2 = {self.sample_rate / 2}, "
                             f"got f_min {self.f_min}, f_max {top}")
        if self.n_fft < 2 or self.n_mels < 2:
            raise ValueError(f"n_fft and n_mels must be at least 2, got {self.n_fft}, {self.n_mels}")
        shape = (self.n_mels + 1, 1 + self.samples // self.hop)  # the log-mel bands and the frame mask
        if self.shape is not None and tuple(self.shape) != shape:
            raise ValueError(f"shape {list(self.shape)} does not match n_mels + 1 = {shape[0]} (the log-mel bands "
                             f"and the frame mask) x frames {shape[1]} (1 + samples // hop); leave shape out")
        self.__dict__["shape"] = shape  # through __dict__: an assignment would validate again
        self.__pydantic_fields_set__.add("shape")
        return self


class AudioModality(SignalModality):
    kind = "audio"
    values_name = "audio waveforms"
    spec_class = AudioSpec

    # -- reading training data (class methods: no model exists yet) ----------------------
    # RawData form: float32 [N, 1, T] waveforms at one rate, NaN after a clip's end; a row with
    # no finite sample is missing

    @classmethod
    def claims_files(cls, names: list[str]) -> bool:
        """Whether a column of file names holds this kind's files (every name ends in .wav)."""
        return all(str(n).lower().endswith(SUFFIXES) for n in names)

    @classmethod
    def claims_array(cls, arr: np.ndarray) -> bool:
        return False  # a 3-D float array is a signal unless a schema says audio

    @classmethod
    def infer_spec(cls, values, mask, class_names=None) -> dict:
        return {"samples": int(np.asarray(values).shape[-1])}

    @classmethod
    def read_array(cls, name, arr, classes=None, present=None):
        """As a signal's, but NaN after a clip's end is padding: a row is missing only when it holds
        no finite sample (read in chunks, so memory-mapped arrays stay on disk)."""
        arr = cls.numeric_rows(name, arr, 3, "[N,T] or [N,1,T]")
        arr = arr if arr.dtype == np.float32 else arr.astype(np.float32, copy=False)
        step = max(1, (64 << 20) // max(1, arr[:1].nbytes))
        rows = [np.isfinite(arr[i:i + step]).reshape(len(arr[i:i + step]), -1).any(1) for i in range(0, len(arr), step)]
        return arr, np.concatenate(rows) if rows else np.zeros(0, dtype=bool), None

    @classmethod
    def read_column(cls, table, column, classes=None):
        """A metadata column of WAV file names (relative to the metadata file's folder) -> waveforms
        [N, 1, T] at SAMPLE_RATE, padded with NaN to the longest clip (at most MAX_SECONDS); a row
        naming no file is missing (all NaN). A missing or bad file is an InputError naming its row."""
        from omnivae.data.folder import DataWarning, is_missing

        clips, present = [], np.zeros(len(table.rows), dtype=bool)
        for i, row in enumerate(table.rows):
            name = row.get(column)
            if is_missing(name):
                clips.append(None)
                continue
            try:
                clips.append(read_clip(table.file.parent / str(name).strip()))
            except InputError as exc:
                raise InputError(f"{table.where(i)}, column {column!r}: {exc}") from None
            present[i] = True
        if not present.any():
            raise InputError(f"column {column!r} of {table.file.name} names no audio file in any row")
        limit = int(MAX_SECONDS * SAMPLE_RATE)
        longest = max(len(c) for c in clips if c is not None)
        if longest > limit:
            cropped = sum(c is not None and len(c) > limit for c in clips)
            warnings.warn(f"column {column!r}: {cropped} clip(s) are longer than {MAX_SECONDS:g} s and are cropped "
                          "to it", DataWarning, stacklevel=2)
        samples = min(longest, limit)
        out = np.full((len(clips), 1, samples), np.nan, dtype=np.float32)
        for i, c in enumerate(clips):
            if c is not None:
                out[i, 0] = fit_length(c, samples)
        return out, present, None

    def __init__(self, name: str, spec: AudioSpec, latent_dim: int):
        super().__init__(name, spec, latent_dim)
        top = spec.f_max if spec.f_max is not None else spec.sample_rate / 2
        self.register_buffer("filters", mel_filterbank(spec.sample_rate, spec.n_fft, spec.n_mels, spec.f_min, top),
                             persistent=False)
        self.register_buffer("window", torch.hann_window(spec.n_fft), persistent=False)

    def log_mel(self, wave: torch.Tensor) -> torch.Tensor:
        """Waveforms [B, 1, samples] -> log-mel spectrograms [B, n_mels, frames] (module docstring)."""
        s = self.spec
        stft = torch.stft(wave[:, 0].float(), s.n_fft, s.hop, window=self.window.to(wave.device), center=True,
                          pad_mode="constant", return_complex=True)
        power = stft.real ** 2 + stft.imag ** 2  # [B, n_fft // 2 + 1, frames]
        return torch.log(torch.matmul(self.filters.to(wave.device), power) + LOG_FLOOR)

    def frame_mask(self, lengths: torch.Tensor) -> torch.Tensor:
        """Clip lengths in samples [B] -> float [B, frames]: 1 where the frame's centre sample
        (t * hop) lies inside the clip, 0 past its end."""
        centres = torch.arange(self.spec.shape[1], device=lengths.device) * self.spec.hop
        return (centres < lengths[:, None]).float()

    def spectrogram(self, wave: torch.Tensor) -> torch.Tensor:
        """Waveforms [B, 1, samples], NaN after each clip's end -> model space [B, n_mels + 1, frames]."""
        finite = torch.isfinite(wave[:, 0])
        lengths = finite.sum(1)
        inside = torch.arange(wave.shape[-1], device=wave.device) < lengths[:, None]
        if not torch.equal(finite, inside) or torch.isinf(wave).any():
            raise self._error("waveforms hold NaN or infinite values inside a clip (NaN marks padding, and only "
                              "after a clip's end)")
        if not lengths.all():
            raise self._error(f"waveform {int((lengths == 0).nonzero()[0])} holds no samples (all NaN)")
        mask = self.frame_mask(lengths)
        mels = self.log_mel(torch.nan_to_num(wave, nan=0.0)).masked_fill(mask[:, None] == 0, PAD)
        return torch.cat([mels, mask[:, None]], 1)

    def _values(self, raw) -> torch.Tensor:
        """Waveforms [B, samples] or [B, 1, samples] -> model space; model-space values [B, n_mels + 1,
        frames] pass as they are, and log-mels [B, n_mels, frames] gain a mask of valid frames."""
        x = raw if isinstance(raw, torch.Tensor) else torch.as_tensor(float_array(self, raw, self.values_name))
        n_mels, frames = self.spec.n_mels, self.spec.shape[1]
        if x.dim() == 3 and tuple(x.shape[1:]) == (n_mels, frames):
            x = torch.cat([x, torch.ones_like(x[:, :1])], 1)
        if not (x.dim() == 3 and tuple(x.shape[1:]) == tuple(self.spec.shape)):
            x = x.unsqueeze(1) if x.dim() == 2 else x
            if x.dim() != 3 or tuple(x.shape[1:]) != (1, self.spec.samples):
                raise self._error(f"expected waveforms of shape [batch, 1, {self.spec.samples}] (or log-mel "
                                  f"spectrograms [batch, {n_mels}, {frames}], or [batch, {n_mels + 1}, {frames}] "
                                  f"with the frame mask last), got {list(x.shape)}")
            x = self.spectrogram(x)
        self.check(x)
        if not ((x[:, -1] == 0) | (x[:, -1] == 1)).all():
            raise self._error("the frame mask (the last channel) must hold only 0 and 1")
        return x

    def fit(self, raw) -> None:
        """Per-band mean and std over the valid frames of every clip (when standardize is on); the
        mask channel keeps mean 0 and std 1."""
        if not self.spec.standardize:
            return
        x = self._values(raw).double()
        mels, valid = x[:, :-1].transpose(0, 1), x[:, -1].bool()  # [n_mels, B, frames], [B, frames]
        values = mels[:, valid]  # [n_mels, valid frames]
        std = values.std(1) if values.shape[1] > 1 else torch.ones(len(values), dtype=values.dtype)
        self.mean[:-1, 0] = values.mean(1)
        self.std[:-1, 0] = torch.where(std > 1e-6, std, 1.0)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Standardised log-mels with padded frames at 0, and the frame mask as the last channel."""
        mask = x[:, -1:].float()
        return torch.cat([super().features(x)[:, :-1] * mask, mask], 1)

    def log_likelihood(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Log-mels scored on valid frames only, plus the frame mask as Bernoulli logits on every frame."""
        flat, lead = flatten_codes(z)
        out = full_precision(self.decode(flat)).reshape(*lead, *self.spec.shape)  # fp32 under bf16 autocast
        target, mask = self.features(x)[:, :-1], x[:, -1].float()
        log_scale = self.log_scale[:-1].expand_as(target)
        point = likelihoods.CONTINUOUS[self.spec.likelihood](  # each value alone: a sum over one
            out[..., :-1, :].unsqueeze(-1), target.unsqueeze(-1), log_scale.unsqueeze(-1))
        return (point * mask.unsqueeze(-2)).sum((-2, -1)) + likelihoods.bernoulli(out[..., -1, :], mask)

    def generate(self, z: torch.Tensor, sample: bool = False, **_) -> torch.Tensor:
        """Mean log-mels (or a noisy draw with sample=True) and the frame mask: the clip ends at the
        first frame the decoder calls padding (a draw when sampling), the log floor from there on."""
        out = self.decode(z)
        logits = out[:, -1]
        inside = torch.bernoulli(torch.sigmoid(logits)).bool() if sample else logits > 0
        inside[:, 0] = True  # every clip has a first sample, so a first frame
        mask = inside.long().cummin(1).values.float()
        mels = ((self.noisy(out) if sample else out) * self.std + self.mean)[:, :-1]
        return torch.cat([mels.masked_fill(mask[:, None] == 0, PAD), mask[:, None]], 1)

    def squared_errors(self, generated: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
        """As a signal's, over the log-mels of the true clip's valid frames only (a generated clip that
        ends too early is off by the log floor there); see `scored_count`."""
        truth = truth.to(generated.device)
        mask = truth[:, -1:].double()
        diff = (generated[:, :-1].double() - truth[:, :-1].double()) * mask
        return {"mse": float((diff ** 2).sum()), "mse_standardized": float(((diff / self.std[:-1]) ** 2).sum())}

    def scored_count(self, truth: torch.Tensor) -> int:
        """The values `squared_errors` sums: every log-mel band of every valid frame."""
        return int(truth[:, -1].sum()) * self.spec.n_mels

    def read_cli(self, values: list[str]) -> np.ndarray:
        """.wav files (resampled to the model's rate, cropped or padded with NaN to its length), else
        as a signal."""
        if not values or not all(v.lower().endswith(SUFFIXES) for v in values):
            return super().read_cli(values)
        clips = [fit_length(read_clip(v, self.spec.sample_rate), self.spec.samples) for v in values]
        return np.stack(clips)[:, None]

    def to_raw(self, x: torch.Tensor, like):
        raise self._error("generated audio are log-mel spectrograms; they cannot be turned back into waveforms")
