"""Audio: WAV files read as mono waveforms, seen by the networks as log-mel spectrograms.

RawData form: float32 [N, 1, T] mono waveforms in [-1, 1] at one rate. A folder's WAV files
(a metadata column naming .wav files, `file_name` included) are read with the stdlib `wave`
module (8-, 16-, 24- and 32-bit integer PCM), averaged to mono, resampled to SAMPLE_RATE
(16 kHz) and zero-padded (silence, no mask: the model also learns where a clip ends) to the
longest clip, at most MAX_SECONDS (longer clips are cropped from the start, with a warning).

Resampling is band-limited FFT resampling (as scipy.signal.resample): the spectrum is
truncated (downsampling: an ideal low-pass, no aliasing) or zero-padded (upsampling), then
inverted at the new length. It treats a clip as periodic, so its two ends may ring slightly.

Model space: log-mel spectrograms [B, n_mels, frames], frames = 1 + samples // hop:
log(M |STFT(x)|^2 + 1e-10) with a Hann window of n_fft samples, zero padding of n_fft/2 at
both ends, and M triangular filters on the HTK mel scale (mel = 2595 log10(1 + f / 700),
as torchaudio's melscale_fbanks with norm=None). The signal modality's 1-D conv (or MLP)
networks and Gaussian/Laplace likelihood then work on standardised log-mels, one channel per
mel band; generated values are log-mel spectrograms (there is no way back to a waveform here).
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
from omnivae.modalities.base import float_array
from omnivae.modalities.signal import SignalModality, SignalSpec

SAMPLE_RATE = 16000  # Hz: what a folder's WAV files are resampled to
MAX_SECONDS = 30.0  # a folder's clips are padded to the longest, cropped beyond this
SUFFIXES = (".wav", ".wave")
LOG_FLOOR = 1e-10


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
    """[T] -> [samples]: cropped from the start, or zero-padded (silence) at the end."""
    return x[:samples] if len(x) >= samples else np.pad(x, (0, samples - len(x)))


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
    shape: tuple[PositiveInt, PositiveInt] | None = None  # (n_mels, frames): derived, never set by hand
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
        shape = (self.n_mels, 1 + self.samples // self.hop)
        if self.shape is not None and tuple(self.shape) != shape:
            raise ValueError(f"shape {list(self.shape)} does not match n_mels {self.n_mels} x frames "
                             f"{shape[1]} (1 + samples // hop); leave shape out")
        self.__dict__["shape"] = shape  # through __dict__: an assignment would validate again
        self.__pydantic_fields_set__.add("shape")
        return self


class AudioModality(SignalModality):
    kind = "audio"
    values_name = "audio waveforms"
    spec_class = AudioSpec

    # -- reading training data (class methods: no model exists yet) ----------------------
    # RawData form: float32 [N, 1, T] waveforms at one rate; a row with a NaN or inf is missing

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
    def read_column(cls, table, column, classes=None):
        """A metadata column of WAV file names (relative to the metadata file's folder) -> waveforms
        [N, 1, T] at SAMPLE_RATE, padded to the longest clip (at most MAX_SECONDS); a row naming no
        file is missing. A missing or bad file is an InputError naming its row."""
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
        out = np.zeros((len(clips), 1, samples), dtype=np.float32)
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

    def _values(self, raw) -> torch.Tensor:
        """Waveforms [B, samples] or [B, 1, samples] -> log-mels; log-mels [B, n_mels, frames] pass as they are."""
        x = raw if isinstance(raw, torch.Tensor) else torch.as_tensor(float_array(self, raw, self.values_name))
        if not (x.dim() == 3 and tuple(x.shape[1:]) == tuple(self.spec.shape)):
            x = x.unsqueeze(1) if x.dim() == 2 else x
            if x.dim() != 3 or tuple(x.shape[1:]) != (1, self.spec.samples):
                raise self._error(f"expected waveforms of shape [batch, 1, {self.spec.samples}] (or log-mel "
                                  f"spectrograms [batch, {self.spec.shape[0]}, {self.spec.shape[1]}]), got "
                                  f"{list(x.shape)}")
            if not torch.isfinite(x).all():
                raise self._error("waveforms hold NaN or infinite values")
            x = self.log_mel(x)
        self.check(x)
        return x

    def read_cli(self, values: list[str]) -> np.ndarray:
        """.wav files (resampled to the model's rate, cropped or padded to its length), else as a signal."""
        if not values or not all(v.lower().endswith(SUFFIXES) for v in values):
            return super().read_cli(values)
        clips = [fit_length(read_clip(v, self.spec.sample_rate), self.spec.samples) for v in values]
        return np.stack(clips)[:, None]

    def to_raw(self, x: torch.Tensor, like):
        raise self._error("generated audio are log-mel spectrograms; they cannot be turned back into waveforms")
