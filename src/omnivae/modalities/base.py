"""The Modality contract: one object owns a data kind's encoder, decoder, likelihood,
preprocessing and input checks.

Shapes: `encode(x[B,...]) -> Gaussian[B,D]`; `log_likelihood(z[S,B,D], x[B,...]) -> [S,B]`
(the decoder runs once on all S*B codes); `generate(z[N,D]) -> x[N,...]` in model space;
`prepare(raw) -> tensor` turns user data into model space and `to_output` turns it back.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar

import numpy as np
import torch
from pydantic import Field
from torch import nn

from omnivae.config import NonNegativeFloat, StrictModel
from omnivae.distributions import Gaussian, clamp_logvar
from omnivae.errors import InputError


# a dropout rate of a modality's networks: 0 (the default) builds no dropout layers at all
DropoutRate = Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)]


class ModalitySpec(StrictModel):
    """Options shared by every modality kind."""

    kind: str
    # multiplies this modality's log-likelihood in every objective; None (the default) lets the
    # model choose it from the data dimensions (ModelConfig.rescale) and record the number it chose
    weight: NonNegativeFloat | None = None


class Modality(nn.Module):
    kind: ClassVar[str]
    spec_class: ClassVar[type[ModalitySpec]]

    def __init__(self, name: str, spec: ModalitySpec, latent_dim: int):
        super().__init__()
        self.name, self.spec, self.latent_dim = name, spec, latent_dim

    @classmethod
    def from_data(cls, name: str, spec: ModalitySpec, latent_dim: int, raw: Any) -> "Modality":
        """Build and fit on training data (text overrides this to train its tokenizer first)."""
        modality = cls(name, spec, latent_dim)
        modality.fit(raw)
        return modality

    # -- reading training data (class methods: no model exists yet) ----------------------
    # Data sources (omnivae.data) ask the class of a column's kind how to read it; none of them
    # branches on kind names. Values are in RawData form (see omnivae.data.raw).
    column_names_files: ClassVar[bool] = False  # a metadata column names files the folder reader scans (image)

    @classmethod
    def infer_spec(cls, values: Any, mask: np.ndarray, class_names: list[str] | None = None) -> dict[str, Any]:
        """Spec fields guessed from training data (shape, dimension, classes). Default: none."""
        return {}

    @classmethod
    def label_targets(cls, values: Any) -> np.ndarray | None:
        """Read values that double as evaluation labels (class indices [N], -1 where missing),
        or None when the kind's values are not class labels (the default)."""
        return None

    @classmethod
    def claims_array(cls, arr: np.ndarray) -> bool:
        """Whether an array of this dtype and shape is obviously of this kind (the first registered
        kind that claims an unlabelled array gets it). Default: never."""
        return False

    @classmethod
    def claims_files(cls, names: list[str]) -> bool:
        """Whether a metadata column of file names holds this kind's files (audio: every name ends
        in .wav); the folder reader then reads that column with `read_column`. Default: never."""
        return False

    @classmethod
    def claims_values(cls, values: list) -> bool:
        """Whether a metadata column's present values (Python numbers, strings, lists; never
        empty) are plainly of this kind; the folder reader gives an unlabelled column to the first
        registered kind that claims it, after any kind that claims its values as file names.
        Default: never."""
        return False

    @classmethod
    def claims_arrow(cls, arrow_type: Any) -> bool:
        """Whether a Parquet column of this Arrow type (a pyarrow.DataType) holds this kind's
        values; the first registered kind that claims it reads it with `read_arrow`. Default: never."""
        return False

    @classmethod
    def read_arrow(cls, name: str, column: Any) -> tuple[Any, list[str] | None, np.ndarray | None]:
        """A Parquet column this kind claims (a pyarrow.Array) -> (an array `read_array` reads, class
        names or None, rows known to hold data or None)."""
        raise InputError(f"column {name!r}: data of kind {cls.kind!r} cannot be read from Parquet")

    @classmethod
    def read_array(cls, name: str, arr: Any, classes: list | None = None, present: np.ndarray | None = None
                   ) -> tuple[Any, np.ndarray, list[str] | None]:
        """One array of an .npz / .npy folder / Parquet column -> (values, presence mask, class names
        or None). `present`: rows known to hold data (decoded images), if the reader knows them."""
        raise InputError(f"array {name!r}: data of kind {cls.kind!r} cannot be read from an array")

    @classmethod
    def read_column(cls, table: Any, column: str, classes: list | None = None
                    ) -> tuple[Any, np.ndarray, list[str] | None]:
        """One column of a folder's metadata table (omnivae.data.folder.Table) -> (values, presence
        mask, class names or None)."""
        raise InputError(f"column {column!r} of {table.file.name}: data of kind {cls.kind!r} cannot be read "
                         "from a metadata column")

    @classmethod
    def stack_values(cls, column: list) -> Any:
        """Per-example values (a streamed batch) -> this kind's RawData values. Default: one array."""
        return np.stack(column)

    @classmethod
    def raw_array(cls, values: Any) -> np.ndarray:
        """RawData values -> one plain array for an .npz (read back by `read_array`)."""
        return np.asarray(values)

    @classmethod
    def summarize(cls, values: Any, present: np.ndarray, class_names: list[str] | None = None) -> dict[str, Any]:
        """JSON-ready statistics for `omnivae data inspect`. Default: shape and dtype of one example."""
        arr = values if isinstance(values, np.ndarray) else np.asarray(values)
        return {"shape": list(arr.shape[1:]), "dtype": str(arr.dtype)}

    @classmethod
    def summary_line(cls, entry: dict[str, Any]) -> str:
        """`summarize`'s statistics as one line of the inspect table."""
        return f"{' x '.join(map(str, entry['shape'])) or 'scalar'} {entry['dtype']}"

    @classmethod
    def numeric_rows(cls, name: str, arr: Any, ndim: int, expected: str) -> np.ndarray:
        """A numeric array of examples with `ndim` axes (one axis short gains axis 1), else InputError."""
        if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "fiub":
            raise InputError(f"{cls.kind} array {name!r} must be numeric, got "
                             f"{arr.dtype if isinstance(arr, np.ndarray) else type(arr).__name__}")
        if arr.ndim == ndim - 1:
            arr = arr[:, None]
        if arr.ndim != ndim:
            raise InputError(f"{cls.kind} array {name!r} has shape {list(arr.shape)}; expected {expected}")
        return arr

    @staticmethod
    def finite_rows(arr: np.ndarray, chunk_bytes: int = 64 << 20) -> np.ndarray:
        """bool [N]: rows with no NaN/inf, read in chunks so memory-mapped arrays stay on disk."""
        if arr.dtype.kind != "f":
            return np.ones(len(arr), dtype=bool)
        step = max(1, chunk_bytes // max(1, arr[:1].nbytes))
        return np.concatenate([np.isfinite(arr[i:i + step]).reshape(min(step, len(arr) - i), -1).all(1)
                               for i in range(0, len(arr), step)]) if len(arr) else np.zeros(0, dtype=bool)

    def to_raw(self, x: torch.Tensor, like: Any) -> Any:
        """(An instance method: the way back.) Generated model-space values -> this kind's RawData
        form, like `like` (the data's values: an array's dtype and example shape, or a list)."""
        out = self.to_output(x)
        if isinstance(out, list):
            return out if not isinstance(like, np.ndarray) else np.asarray(out)
        values = out.detach().cpu().numpy()
        if isinstance(like, np.ndarray):
            return values.reshape(len(values), *like.shape[1:]).astype(like.dtype)
        return values

    # -- preprocessing and checks ---------------------------------------------------
    def fit(self, raw: Any) -> None:
        """Learn preprocessing state from training data (tokenizer, scaling). Default: none."""

    def prepare(self, raw: Any) -> torch.Tensor:
        """User data -> model tensor, validated."""
        x = torch.as_tensor(raw)
        self.check(x)
        return x

    def accept(self, value: Any) -> torch.Tensor:
        """What the user API calls on user data: prepare it (already-prepared tensors too)."""
        return self.prepare(value)

    def check(self, x: torch.Tensor) -> None:
        """Raise InputError naming the modality, what was expected and what was received."""

    def to_output(self, x: torch.Tensor) -> Any:
        """Model tensor -> what a user wants back (images in [0,1], captions as strings)."""
        return x

    def placeholder(self, n: int) -> torch.Tensor:
        """A batch of n dummy inputs for examples where this modality is missing."""
        raise NotImplementedError

    def data_dim(self) -> int:
        """How many values one example's log-likelihood scores (pixels x channels, token positions,
        1 for a class label): the size that likelihood rescaling divides by."""
        return max(1, math.prod(self.placeholder(1).shape[1:]))

    # -- networks ---------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> Gaussian:
        # under bf16 autocast the networks run in bf16, posteriors and scores in fp32
        mu, logvar = full_precision(self.encoder(self.features(x))).chunk(2, dim=-1)
        return Gaussian(mu, clamp_logvar(logvar))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Model tensor -> encoder input (e.g. uint8 pixels -> floats)."""
        return x

    def log_likelihood(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def generate(self, z: torch.Tensor, **options) -> torch.Tensor:
        raise NotImplementedError

    # -- user inputs and outputs: command line, request bodies, files, figures, scoring ----
    # what models and training may ask of this kind (capabilities, not kind names):
    # features(x) are floats that noise can corrupt (denoising autoencoders)
    continuous_features: ClassVar[bool] = True
    # features flatten to one float vector that a stack of dense layers can encode (stacked AE)
    stackable: ClassVar[bool] = False
    # decoded means are pictures a discriminator can judge (adversarial sharpening; see decoded_mean)
    adversarial: ClassVar[bool] = False
    # decoded values are discrete picks (a caption, a class) that several draws of the code can
    # agree on: generation from the conditional prior decodes `agreed` values (see decode_draws)
    votes: ClassVar[bool] = False

    def draws_wanted(self, consensus: int) -> int:
        """How many draws of the code generation should make per value (see decode_draws)."""
        return consensus if self.votes else 1

    def decode_draws(self, z: torch.Tensor, **options) -> torch.Tensor:
        """Codes [K,N,D], K draws per value -> values [N,...]: the value the draws agree on for kinds
        that vote (agreed), else the first draw's."""
        return self.agreed(z, **options) if self.votes and len(z) > 1 else self.generate(z[0], **options)

    def agreed(self, z: torch.Tensor, rows: int = 4096, **options) -> torch.Tensor:
        """Codes [K,N,D], K draws per value -> values [N,...]: of the K draws' decodes, the one with
        the highest mean log-likelihood over all K draws, the value no draw finds unlikely. Where
        draws disagree on an attribute (a caption that may name a stroke's thickness, for a digit
        whose thickness is borderline), a value that leaves it unsaid wins over one that names it.
        rows caps the codes scored at once (memory); sample=True decodes a draw of the first code."""
        if options.get("sample"):
            return self.generate(z[0], **options)
        k, n = z.shape[:2]
        cands = self.generate(z.reshape(k * n, -1), **options)
        cands = cands.reshape(k, n, *cands.shape[1:])  # [K,N,...]: draw j's decode of each value
        best, step = [], max(1, rows // k)  # per value, which draw's decode wins
        for i in range(0, n, step):
            zs, cs = z[:, i:i + step], cands[:, i:i + step]
            score = torch.stack([self.log_likelihood(zs, c).mean(0) for c in cs])  # [candidate, value]
            best.append(score.argmax(0))
        return cands[torch.cat(best), torch.arange(n, device=z.device)]

    def decoded_mean(self, z: torch.Tensor) -> torch.Tensor:
        """Differentiable decoded means [N, ...] of codes z [N,D] (for kinds with `adversarial`)."""
        raise self._error("has no differentiable decoded mean for a discriminator")

    # -- how figures, listings and the served page show values ------------------------------
    # Everything that depends on what the values are (pictures, text, labels, numbers) is asked of
    # the kind through the methods below; code outside modalities/ never tests a kind or a flag.
    def figure_items(self, outputs: Any) -> Any:
        """User outputs (what `to_output` returns) of N values -> what a figure draws: pictures
        [N,C,H,W] in [0,1], or one short text per value; None when this kind cannot be drawn
        (the default: long vectors and signals are listed as numbers instead)."""
        return None

    def drawn(self, x: torch.Tensor) -> Any:
        """Model-space values [N,...] -> what a figure draws (see `figure_items`), or None."""
        if type(self).figure_items is Modality.figure_items:
            return None
        return self.figure_items(self.to_output(x))

    @classmethod
    def preview(cls, value: Any) -> dict[str, Any]:
        """What the served page shows of one raw data value, as JSON fields ("thumbnail": a
        picture as JSON, "caption": a text); empty when the kind has nothing to show."""
        return {}

    def augment(self, x: torch.Tensor, config: Any, generator: torch.Generator | None = None) -> torch.Tensor:
        """Training-batch augmentation of model-space values [B,...] (omnivae.train.config.
        AugmentConfig: shift, flip, noise); the same tensor when the kind has none (the default)."""
        return x

    @classmethod
    def corrupt(cls, values: Any, rows: np.ndarray, rng: np.random.Generator) -> Any:
        """Raw data values with the entries at `rows` corrupted, for the anomaly benchmark
        (omnivae.tasks.detect.corrupted); None when the kind defines no corruption (the default)."""
        return None

    @classmethod
    def corruption_text(cls) -> str:
        """How `corrupt` corrupts a value, for reports ("" when it does not)."""
        return ""

    def output_diversity(self, outputs: Any) -> dict[str, float]:
        """Collapse checks on user outputs decoded from N different codes: {metric: value}, e.g.
        the share of distinct captions (near 1/N: the decoder ignores its code); empty when the
        kind's outputs cannot collapse to a few (continuous values; the default)."""
        return {}

    @property
    def checks_diversity(self) -> bool:
        """Whether this kind defines `output_diversity` (so decoding for it is worth the time)."""
        return type(self).output_diversity is not Modality.output_diversity

    def squared_errors(self, generated: torch.Tensor, truth: torch.Tensor) -> dict[str, float] | None:
        """Sums of squared reconstruction errors of generated values (raw, like the data) against
        model-space truth, by metric name ("mse": in the data's units; kinds may add more);
        None when reconstruction error does not apply (labels, captions). Default: None."""
        return None

    def scored_count(self, truth: torch.Tensor) -> int:
        """How many values `squared_errors` sums for model-space truth [B,...] (the mean divides
        by it; audio scores only the frames inside each clip). Default: every value."""
        return truth.numel()

    @property
    def measures_reconstruction(self) -> bool:
        """Whether this kind defines `squared_errors` (so reconstruction metrics apply)."""
        return type(self).squared_errors is not Modality.squared_errors

    def error_summary(self, mean_errors: dict[str, float]) -> dict[str, float]:
        """Mean squared errors by metric (from `squared_errors`) -> the figures reported; kinds
        may add derived ones (pictures: PSNR). Default: the errors as they are."""
        return dict(mean_errors)

    def read_cli(self, values: list[str]) -> Any:
        """Command-line strings -> what `prepare` accepts. Default (numeric kinds): each value is a
        .npy file or comma-separated numbers."""
        rows = []
        for v in values:
            if v.endswith(".npy"):
                rows.append(load_npy(v))
                continue
            parts = v.split(",")
            bad = next((x for x in parts if not _is_number(x)), None)
            if bad is not None:
                raise self._error(f"expected a .npy file or comma-separated numbers; {bad.strip()!r} in {v!r} "
                                  "is not a number")
            rows.append(np.array([float(x) for x in parts], dtype=np.float32))
        try:
            return np.stack(rows)
        except ValueError:
            raise self._error(f"inputs differ in shape: {[list(r.shape) for r in rows]}") from None

    def read_json(self, values: list, where: list[str], limits) -> Any:
        """JSON values of a request body -> what `prepare` accepts. Default: lists of finite numbers."""
        rows = [json_numbers(v, w) for v, w in zip(values, where)]
        try:
            return np.stack(rows)
        except ValueError:
            raise InputError(f"{where[0].rsplit('[', 1)[0]}: values differ in shape") from None

    @classmethod
    def json_item(cls, item: Any) -> Any:
        """One output value (model output or raw data row) -> JSON (numbers as lists, NaN as null)."""
        if isinstance(item, str) or item is None:
            return item
        arr = np.asarray(item.detach().cpu().numpy() if isinstance(item, torch.Tensor) else item)
        if arr.dtype.kind in "iub":
            return arr.tolist()
        return _finite_lists(arr.astype(np.float64))

    @classmethod
    def describe(cls, value: Any) -> str | None:
        """A short text for listings (retrieval results, tables); None when a value has none."""
        return None

    def write_items(self, items: Any, folder: Path, stem: str) -> dict[str, Any]:
        """The n outputs generated for one input -> what outputs.json lists for it. Default: one
        .npy file holding all n as [n, ...], plus the values themselves when they are short."""
        arr = np.asarray(items.detach().cpu().numpy() if isinstance(items, torch.Tensor) else items)
        path = Path(folder) / f"{stem}.npy"
        np.save(path, arr, allow_pickle=False)
        entry: dict[str, Any] = {"file": path.name}
        if arr[0].size <= 64:
            entry["values"] = [self.json_item(a) for a in arr]
        return entry

    def unknown_words(self, values: Any) -> list[str]:
        """Words of text inputs that the model never saw in training (text overrides this)."""
        return []

    def scorer(self, raw: Any, x: torch.Tensor, epochs: int, seed: int, cache_dir: Path | None = None):
        """What coherence scores this modality's generations with: a function of model-space values
        -> {attribute: predicted labels}, fitted on training data (`raw`, `x` its model tensors of
        the rows where this modality is present); None when this kind cannot be scored. Trained
        networks may be kept in `cache_dir` (omnivae.metrics.classifier.cached_classifier), keyed
        by what they were trained on, so a second evaluation of the same run reuses them."""
        return None

    # -- files saved next to the weights (tokenizers); JSON text only ------------------
    def extra_files(self) -> dict[str, str]:
        return {}

    def load_extra_files(self, folder: Path) -> None:
        """Read what extra_files wrote (called before the weights are loaded)."""

    def _error(self, message: str) -> InputError:
        return InputError(f"modality {self.name!r} ({self.kind}): {message}")


def full_precision(t: torch.Tensor) -> torch.Tensor:
    """fp16/bf16 network outputs (autocast) -> fp32, so posteriors and scores keep full precision."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def load_npy(path: str) -> np.ndarray:
    """A .npy file from the user (pickles refused), or an InputError naming it."""
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise InputError(f"file {path} does not exist") from None
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"{path} cannot be read as a .npy array: {exc}") from None


def json_numbers(value: Any, where: str) -> np.ndarray:
    """A (nested) list of finite numbers from a request -> float32 array."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (ValueError, TypeError):
        raise InputError(f"{where}: expected a list of numbers") from None
    if arr.ndim == 0 or arr.size == 0:
        raise InputError(f"{where}: expected a non-empty list of numbers")
    if not np.isfinite(arr).all():
        raise InputError(f"{where}: holds NaN or infinite values")
    return arr.astype(np.float32)


def _finite_lists(arr: np.ndarray) -> Any:
    """Float array -> nested lists with NaN/inf as None (JSON has no NaN)."""
    if arr.ndim == 0:
        v = float(arr)
        return v if math.isfinite(v) else None
    return [_finite_lists(a) for a in arr]


def numeric_array(modality: Modality, raw: Any, what: str) -> np.ndarray:
    """Array-like user data -> a numeric numpy array (bool/int/float), else an InputError saying what came in,
    so strings, None, ragged lists or complex values never reach numpy's or torch's own errors."""
    if raw is None or isinstance(raw, (str, bytes, bytearray, Mapping, set)):
        shown = f" {raw[:20]!r}" if isinstance(raw, (str, bytes, bytearray)) else ""
        raise modality._error(f"expected {what}, got {type(raw).__name__}{shown}")
    try:
        arr = np.asarray(raw)
    except (ValueError, TypeError) as exc:  # ragged nesting
        raise modality._error(f"expected {what}, got a ragged sequence ({str(exc)[:80]})") from None
    if arr.dtype.kind not in "biuf":
        got = {"U": "strings", "S": "bytes", "c": "complex numbers", "O": "mixed Python objects (None, "
               "strings, nested lists or ints beyond int64)"}.get(arr.dtype.kind, f"dtype {arr.dtype}")
        raise modality._error(f"expected {what}, got {got}")
    return arr if arr.flags.c_contiguous else arr.copy()  # torch refuses negative strides (np.flip)


def float_array(modality: Modality, raw: Any, what: str) -> np.ndarray:
    """numeric_array as floats: 8-byte types become float64 (huge values stay finite), the rest float32."""
    arr = numeric_array(modality, raw, what)
    return arr.astype(np.float64 if arr.dtype.itemsize == 8 else np.float32, copy=False)


def check_finite(modality: Modality, x: torch.Tensor) -> None:
    if x.is_floating_point() and not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).sum())
        raise modality._error(f"input holds {bad} NaN or infinite values")


MAX_STANDARD_UNITS = 1e6  # beyond this, codes and the KL term (mu^2) head for float32 overflow


def check_standardized(modality: Modality, x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> None:
    """Refuse values absurdly far (> MAX_STANDARD_UNITS standard deviations) from the training data:
    the network would turn them into overflowing codes and losses instead of an answer."""
    if not x.numel():
        return
    z = ((x - mean.to(x.device)) / std.to(x.device)).abs()  # an overflow gives inf: refused, rightly
    worst = float(z.max())
    if not worst <= MAX_STANDARD_UNITS:
        row = int((z > MAX_STANDARD_UNITS).reshape(len(x), -1).any(1).nonzero()[0])
        raise modality._error(
            f"values lie up to {worst:.3g} standard deviations from the training mean (the limit is "
            f"{MAX_STANDARD_UNITS:.0e}; first such row: {row}); check the units of the input, or train on "
            "data that covers this range")


class StandardizedModality(Modality):
    """Real-valued data standardised with a mean and std learned from training data (vector,
    signal): the shared input path. Subclasses set `values_name`, their `mean`/`std` buffers,
    `check` and, where a missing channel axis may be added, `with_channels`."""

    values_name = "numeric values"

    def prepare(self, raw) -> torch.Tensor:
        """Checked like any input, and refused if absurdly far from the training data (it would overflow)."""
        x = self._values(raw)
        check_standardized(self, x, self.mean, self.std)
        return x.float()

    def _values(self, raw) -> torch.Tensor:
        x = raw if isinstance(raw, torch.Tensor) else torch.as_tensor(float_array(self, raw, self.values_name))
        x = self.with_channels(x)
        self.check(x)
        return x

    def with_channels(self, x: torch.Tensor) -> torch.Tensor:
        """Add an axis the user may leave out (a single feature or channel); default: none."""
        return x

    def squared_errors(self, generated: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
        """In the data's units ("mse") and in the standardised units the encoder reads
        ("mse_standardized": 1.0 = as good as predicting the training mean)."""
        truth = truth.to(generated.device)
        return {"mse": float(((generated.double() - truth.double()) ** 2).sum()),
                "mse_standardized": float(((self.features(generated).double()
                                            - self.features(truth).double()) ** 2).sum())}


def mlp(sizes: list[int], act: type[nn.Module] = nn.ReLU, dropout: float = 0.0) -> nn.Sequential:
    """Linear layers of the given sizes with activations between them (none at the end); with
    dropout > 0, an nn.Dropout after each hidden activation (none at 0: the same modules as before)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(act())
            if dropout:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def dropped(layers: list[nn.Module], p: float, module: type[nn.Module]) -> list[nn.Module]:
    """`layers` followed by a dropout module (nn.Dropout, nn.Dropout1d, nn.Dropout2d) of rate p;
    `layers` unchanged at p = 0, so a network without dropout has exactly its former modules."""
    return [*layers, module(p)] if p else layers


def flatten_codes(z: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
    """[S,B,D] (or any leading shape) -> ([S*B, D], leading shape)."""
    return z.reshape(-1, z.shape[-1]), tuple(z.shape[:-1])
