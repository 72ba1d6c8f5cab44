"""Captions [B, max_len] (int64 token ids, <eos>, then <pad>): GRU, Transformer or pretrained
(frozen MiniLM, or a BERT-family model from a local folder: omnivae.modalities.pretrained)
encoder, autoregressive decoder conditioned on z, trained by teacher forcing."""
from __future__ import annotations

import re
from numbers import Integral, Real
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import field_validator, model_validator
from tokenizers import Tokenizer

from omnivae.config import PositiveInt
from omnivae.errors import InputError, ModelFileError
from omnivae.modalities.base import Modality, ModalitySpec, flatten_codes
from omnivae.modalities.pretrained import TransformersTextEncoder, resolve_folder
from omnivae.modalities.text import decoding
from omnivae.modalities.text.networks import GRUDecoder, GRUEncoder, TransformerDecoder, TransformerEncoder
from omnivae.modalities.text.tokenizer import EOS, PAD, SPECIALS, as_caption, specials_problem, token_ids, \
    train_tokenizer

STRATEGIES = ("greedy", "sample", "beam")
SPACE_BEFORE_PUNCTUATION = re.compile(r" +([,.;:!?])")  # word-level decoding puts one there


def _is_int(value) -> bool:
    """An integer option (True/False and 2.0 are not)."""
    return isinstance(value, Integral) and not isinstance(value, bool)


class TextSpec(ModalitySpec):
    kind: Literal["text"] = "text"
    tokenizer: Literal["word", "bpe"] = "word"
    vocab_size: int = 0  # 0 = not known yet; set by TextModality.from_data
    max_vocab: PositiveInt = 5000
    max_len: int = 16  # tokens including <eos>
    lowercase: bool = True
    embed_dim: int = 64  # token embedding width (the Transformer's model width)
    hidden: int = 128  # GRU state width (the Transformer's feed-forward width)
    encoder: Literal["gru", "transformer", "minilm", "pretrained"] = "gru"  # minilm: needs omnivae[pretrained-text]
    # encoder "pretrained": a local folder with a BERT-family transformers model and its tokenizer
    # (needs omnivae[pretrained]); stored as an absolute path, and needed again to load the model
    pretrained_path: str | None = None
    fine_tune: bool = False  # train the pretrained model too (else frozen, its features cached)
    decoder: Literal["gru", "transformer"] = "gru"
    layers: int = 1
    heads: int = 4
    dropout: float = 0.0
    word_dropout: float = 0.0  # rate of decoder inputs replaced by <unk> in training
    truncate: bool = True  # False: captions longer than max_len are an error

    @field_validator("pretrained_path")
    @classmethod
    def _absolute(cls, v: str | None) -> str | None:
        return resolve_folder(v)

    @model_validator(mode="after")
    def _pretrained_options(self) -> "TextSpec":
        if (self.encoder == "pretrained") != (self.pretrained_path is not None):
            raise ValueError("encoder 'pretrained' and pretrained_path go together: set both or neither")
        if self.fine_tune and self.encoder != "pretrained":
            raise ValueError("fine_tune applies to encoder 'pretrained' only")
        return self


class TextModality(Modality):
    kind = "text"
    continuous_features = False
    votes = True  # generation from the conditional prior decodes the caption its draws agree on
    spec_class = TextSpec

    # -- reading training data (class methods: no model exists yet) ----------------------
    # RawData form: a list of captions, None where missing (blank strings count as missing)
    _word = re.compile(r"[\w']+")  # summaries count runs of letters, digits, _ and ' as words

    @classmethod
    def claims_array(cls, arr: np.ndarray) -> bool:
        return arr.dtype.kind == "U"

    @classmethod
    def claims_values(cls, values: list) -> bool:
        """Strings (asked after the kinds that read strings as file names or labels)."""
        return all(isinstance(v, str) for v in values)

    @classmethod
    def claims_arrow(cls, arrow_type) -> bool:
        import pyarrow as pa

        return pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type)

    @classmethod
    def read_arrow(cls, name, column):
        return column.to_pylist(), None, None

    @classmethod
    def read_array(cls, name, arr, classes=None, present=None):
        """A unicode array (or a list: a Parquet column) of captions."""
        if isinstance(arr, np.ndarray) and arr.dtype.kind != "U":
            raise InputError(f"text array {name!r} has dtype {arr.dtype}; expected unicode strings ('<U')")
        values = [None if v is None or not str(v).strip() else str(v) for v in list(arr)]
        return values, np.array([v is not None for v in values], dtype=bool), None

    @classmethod
    def read_column(cls, table, column, classes=None):
        from omnivae.data.folder import text_column

        values = text_column(table, column)
        return values, np.array([v is not None for v in values], dtype=bool), None

    @classmethod
    def stack_values(cls, column: list) -> list:
        return list(column)

    @classmethod
    def raw_array(cls, values) -> np.ndarray:
        """A unicode array, "" where a caption is missing."""
        return np.array(["" if v is None else str(v) for v in values], dtype=str)

    @classmethod
    def summarize(cls, values, present, class_names=None) -> dict:
        """Vocabulary (distinct lower-cased words), distinct captions, caption lengths in words."""
        captions = [values[i] for i in np.flatnonzero(present)]
        words = [cls._word.findall(c.lower()) for c in captions]
        lengths = np.array([len(w) for w in words]) if words else np.zeros(0)
        stats = {"vocab_size": len({w for ws in words for w in ws}), "distinct_captions": len(set(captions))}
        if len(lengths):
            stats.update({"words_min": int(lengths.min()), "words_mean": float(lengths.mean()),
                          "words_max": int(lengths.max())})
        return stats

    @classmethod
    def summary_line(cls, entry: dict) -> str:
        if "words_mean" not in entry:
            return "no captions"
        return (f"vocabulary {entry['vocab_size']} words; captions of {entry['words_min']}-"
                f"{entry['words_max']} words (mean {entry['words_mean']:.1f}); "
                f"{entry['distinct_captions']} distinct")

    def __init__(self, name: str, spec: TextSpec, latent_dim: int, tokenizer: Tokenizer | None = None):
        super().__init__(name, spec, latent_dim)
        if spec.vocab_size == 0 and tokenizer is None:
            raise self._error("vocab_size is 0 and no tokenizer was given: build it with "
                              "TextModality.from_data(name, spec, latent_dim, captions)")
        self.tokenizer = None
        if tokenizer is not None:
            self._set_tokenizer(tokenizer, "the given tokenizer")  # fills vocab_size if it was 0
        self._check_spec(self.spec)
        v, out = self.spec.vocab_size, 2 * latent_dim
        common = (spec.embed_dim, spec.hidden, spec.layers)
        if spec.encoder == "gru":
            self.encoder = GRUEncoder(v, *common, spec.dropout, out)
        elif spec.encoder == "minilm":  # frozen sentence embedding of the decoded caption + trained head
            from omnivae.modalities.text.pretrained import PretrainedTokenEncoder

            self.encoder = PretrainedTokenEncoder(self.to_output, spec.hidden, out)
        elif spec.encoder == "pretrained":  # a transformers model from spec.pretrained_path + trained head
            self.encoder = TransformersTextEncoder(self.to_output, spec.pretrained_path, spec.fine_tune, spec.hidden,
                                                   out, f"modality {name!r} (text)")
        else:
            self.encoder = TransformerEncoder(v, spec.max_len, *common, spec.heads, spec.dropout, out)
        if spec.decoder == "gru":
            self.decoder = GRUDecoder(v, *common, spec.dropout, latent_dim)
        else:
            self.decoder = TransformerDecoder(v, spec.max_len, *common, spec.heads, spec.dropout, latent_dim)

    def _check_spec(self, spec: TextSpec) -> None:
        if spec.vocab_size <= len(SPECIALS):
            raise self._error(f"vocab_size must exceed {len(SPECIALS)} (the special tokens), got {spec.vocab_size}")
        if spec.max_len < 2:
            raise self._error(f"max_len must be at least 2 (one token and <eos>), got {spec.max_len}")
        if min(spec.embed_dim, spec.hidden, spec.layers, spec.heads) < 1:
            raise self._error("embed_dim, hidden, layers and heads must be positive")
        if "transformer" in (spec.encoder, spec.decoder) and spec.embed_dim % spec.heads:
            raise self._error(f"embed_dim ({spec.embed_dim}) must be divisible by heads ({spec.heads})")
        if not (0 <= spec.dropout < 1 and 0 <= spec.word_dropout < 1):
            raise self._error(f"dropout and word_dropout must lie in [0, 1), got {spec.dropout}, {spec.word_dropout}")

    def _set_tokenizer(self, tok: Tokenizer, where: str, error=None) -> None:
        error = error or self._error
        problem = specials_problem(tok)
        if problem:
            raise error(f"{where}: {problem}")
        size = tok.get_vocab_size()
        if self.spec.vocab_size == 0:
            self.spec = self.spec.model_copy(update={"vocab_size": size})
        elif size != self.spec.vocab_size:
            raise error(f"{where} has vocab {size} but the model expects {self.spec.vocab_size}: "
                        "is it from another model?")
        self.tokenizer = tok

    @classmethod
    def from_data(cls, name: str, spec: TextSpec, latent_dim: int, captions: list[str | None]) -> "TextModality":
        """Train the tokenizer on the present (non-None, non-blank) captions, then build the modality."""
        if isinstance(captions, (str, bytes)):
            raise InputError(f"modality {name!r} (text): from_data expects a list of captions, got one caption")
        missing = [c is None or (isinstance(c, str) and not c.strip()) for c in captions]
        present = [as_caption(c, f"modality {name!r} (text): caption {i}")
                   for i, (c, skip) in enumerate(zip(captions, missing)) if not skip]
        if not present:
            raise InputError(f"modality {name!r} (text): no captions to train the tokenizer on")
        tok = train_tokenizer(present, spec.tokenizer, spec.max_vocab, spec.lowercase)
        return cls(name, spec.model_copy(update={"vocab_size": tok.get_vocab_size()}), latent_dim, tokenizer=tok)

    # -- preprocessing and checks ---------------------------------------------------
    def _need_tokenizer(self) -> Tokenizer:
        if self.tokenizer is None:
            raise self._error("no tokenizer loaded: use TextModality.from_data or load_extra_files")
        return self.tokenizer

    def prepare(self, raw: Any) -> torch.Tensor:
        """Caption(s) -> ids [B, max_len]: tokens, <eos>, <pad>...; blank captions are an error."""
        tok = self._need_tokenizer()
        if isinstance(raw, (str, bytes, bytearray)):
            raw = [raw]
        if not isinstance(raw, (list, tuple, np.ndarray)):
            raise self._error(f"expected a caption or a list of captions, got {type(raw).__name__}")
        captions = [as_caption(c, f"modality {self.name!r} (text): caption {i}") for i, c in enumerate(raw)]
        keep = self.spec.max_len - 1
        x = torch.full((len(captions), self.spec.max_len), PAD, dtype=torch.long)
        for i, ids in enumerate(token_ids(tok, captions)):
            if not ids:
                raise self._error(f"caption {i} ({captions[i][:40]!r}) tokenizes to nothing")
            if len(ids) > keep and not self.spec.truncate:
                raise self._error(f"caption {i} has {len(ids)} tokens, more than max_len - 1 = {keep} "
                                  "(raise max_len or set truncate: true)")
            ids = ids[:keep] + [EOS]
            x[i, :len(ids)] = torch.tensor(ids)
        return x

    def accept(self, value: Any) -> torch.Tensor:
        """Captions are tokenized; an id tensor (from a Batch or generate(raw=True)) is checked."""
        if isinstance(value, torch.Tensor):
            self.check(value)
            return value
        return self.prepare(value)

    def check(self, x: torch.Tensor) -> None:
        L, v = self.spec.max_len, self.spec.vocab_size
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[1] != L:
            shape = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise self._error(f"expected token ids of shape [batch, {L}], got {shape}")
        if x.dtype != torch.long:
            raise self._error(f"expected token ids of dtype torch.int64, got {x.dtype}")
        if x.numel() and (x.min() < 0 or x.max() >= v):
            raise self._error(f"token ids must lie in 0..{v - 1}, got range {int(x.min())}..{int(x.max())}")
        no_eos = ~(x == EOS).any(1)
        if no_eos.any():
            raise self._error(f"{int(no_eos.sum())} rows have no <eos> (id {EOS}); first is row "
                              f"{int(no_eos.nonzero()[0])}")
        first_eos = (x == EOS).long().argmax(1, keepdim=True)
        pad_inside = ((x == PAD) & (torch.arange(L, device=x.device) <= first_eos)).any(1)
        if pad_inside.any():
            raise self._error(f"{int(pad_inside.sum())} rows have <pad> before their <eos>; first is row "
                              f"{int(pad_inside.nonzero()[0])}")

    def placeholder(self, n: int) -> torch.Tensor:
        x = torch.full((n, self.spec.max_len), PAD, dtype=torch.long)
        x[:, 0] = EOS
        return x

    def to_output(self, x: torch.Tensor) -> list[str]:
        """Ids -> captions: tokens before the first <eos>, special tokens dropped."""
        tok = self._need_tokenizer()
        rows = [row[:row.index(EOS)] if EOS in row else row for row in x.tolist()]
        texts = tok.decode_batch(rows, skip_special_tokens=True)
        if self.spec.tokenizer == "word":  # "triangle , big" -> "triangle, big"
            texts = [SPACE_BEFORE_PUNCTUATION.sub(r"\1", t) for t in texts]
        return texts

    # -- user inputs and outputs ---------------------------------------------------------
    def figure_items(self, outputs) -> list[str]:
        return [self.describe(v) for v in outputs]

    @classmethod
    def preview(cls, value) -> dict:
        return {"caption": cls.describe(value)} if isinstance(value, str) else {}

    def output_diversity(self, outputs) -> dict[str, float]:
        """The share of distinct captions (case and spacing ignored): near 1/N, the decoder writes
        the same caption whatever the code (posterior collapse)."""
        from omnivae.metrics.collapse import distinct_ratio

        return {"distinct_captions": distinct_ratio(list(outputs))}

    def read_cli(self, values: list[str]) -> list[str]:
        return list(values)

    def read_json(self, values: list, where: list[str], limits) -> list[str]:
        for w, v in zip(where, values):
            if not isinstance(v, str):
                raise InputError(f"{w}: modality {self.name!r} is text: expected a string, got {type(v).__name__}")
            if len(v) > limits.max_text_chars:
                raise InputError(f"{w}: {len(v)} characters; at most {limits.max_text_chars}")
        return list(values)

    @classmethod
    def describe(cls, value) -> str:
        return str(value)

    def write_items(self, items, folder, stem: str) -> dict:
        return {"values": list(items)}

    def unknown_words(self, values) -> list[str]:
        """The words of `values` that the tokenizer maps to <unk>, in order, once each."""
        from omnivae.modalities.text.tokenizer import UNK

        if self.tokenizer is None:
            return []
        found: list[str] = []
        for caption in values:
            if not isinstance(caption, str) or not caption.strip():
                continue
            enc = self.tokenizer.encode(caption, add_special_tokens=False)
            for i, (start, end) in zip(enc.ids, enc.offsets):
                word = caption[start:end].strip(" \u2581")
                if i == UNK and word and word not in SPECIALS and word not in found:
                    found.append(word)
        return found

    def scorer(self, raw, x: torch.Tensor, epochs: int, seed: int, cache_dir=None):
        """Generated captions parsed back into attributes (built-in data sources with a caption parser)."""
        from omnivae.metrics.coherence import caption_scorer

        return caption_scorer(self, raw)

    # -- networks ---------------------------------------------------------------------
    def log_likelihood(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Teacher-forced log p(caption | z) summed over tokens up to <eos>: z[...,B,D], x[B,L] -> [...,B]."""
        flat, lead = flatten_codes(z)
        if not lead or lead[-1] != x.shape[0]:
            raise ValueError(f"modality {self.name!r} (text): codes {list(z.shape)} do not match "
                             f"{x.shape[0]} captions")
        xs = x.repeat(len(flat) // x.shape[0], 1)  # row s*B + b is caption b, as in flatten_codes
        rate = self.spec.word_dropout if self.training else 0.0
        return decoding.sequence_log_prob(self.decoder, flat, xs, rate).reshape(lead)

    def generate(self, z: torch.Tensor, strategy: str = "greedy", max_len: int | None = None,
                 temperature: float = 1.0, top_k: int = 0, beam_size: int = 4, return_ids: bool = True,
                 sample: bool = False, generator: torch.Generator | None = None, **_):
        """Captions for codes z[N,D], as ids [N, spec.max_len] (or strings if return_ids=False).

        max_len (at most spec.max_len) caps the generated tokens, <eos> included;
        sample=True is shorthand for strategy="sample" (the option other modalities take).
        """
        strategy = "sample" if sample and strategy == "greedy" else strategy
        self._check_generate(z, strategy, max_len, temperature, top_k, beam_size)
        steps, width = max_len or self.spec.max_len, self.spec.max_len
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                if strategy == "greedy":
                    ids = decoding.greedy(self.decoder, z, steps, width)
                elif strategy == "sample":
                    ids = decoding.sample(self.decoder, z, steps, width, temperature, top_k, generator)
                else:
                    ids = decoding.beam_search(self.decoder, z, steps, width, beam_size)
        finally:
            self.train(was_training)
        return ids if return_ids else self.to_output(ids)

    def agreed(self, z: torch.Tensor, rows: int = 4096, **options) -> torch.Tensor:
        """As Modality.agreed, over greedy (or beam) decodes; strategy="sample" samples a caption
        from the first code instead (sampled captions are meant to vary)."""
        if options.get("strategy") == "sample":
            return self.generate(z[0], **options)
        return super().agreed(z, rows, **options)

    def generate_text(self, z: torch.Tensor, **options) -> list[str]:
        return self.generate(z, **{**options, "return_ids": False})

    def _check_generate(self, z, strategy, max_len, temperature, top_k, beam_size) -> None:
        """Decoding options are user input: refused here (InputError, also a ValueError), not by torch."""
        if not isinstance(z, torch.Tensor) or z.dim() != 2 or z.shape[1] != self.latent_dim:
            shape = list(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise self._error(f"expected codes [N, {self.latent_dim}], got {shape}")
        if not isinstance(strategy, str) or strategy not in STRATEGIES:
            raise self._error(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        if max_len is not None and not (_is_int(max_len) and 1 <= max_len <= self.spec.max_len):
            raise self._error(f"max_len must be an integer in 1..{self.spec.max_len}, got {max_len!r}")
        if not (isinstance(temperature, Real) and not isinstance(temperature, bool)
                and 0 < temperature < float("inf")):
            raise self._error(f"temperature must be a finite number > 0, got {temperature!r}")
        if not (_is_int(top_k) and top_k >= 0 and _is_int(beam_size) and beam_size >= 1):
            raise self._error(f"need integers top_k >= 0 and beam_size >= 1, got {top_k!r}, {beam_size!r}")

    # -- tokenizer file -----------------------------------------------------------------
    def _tokenizer_file(self) -> str:
        return f"tokenizer_{self.name}.json"

    def extra_files(self) -> dict[str, str]:
        return {self._tokenizer_file(): self._need_tokenizer().to_str()}

    def load_extra_files(self, folder: Path) -> None:
        path = Path(folder) / self._tokenizer_file()
        if not path.is_file():
            raise ModelFileError(f"tokenizer file {path} is missing (modality {self.name!r})")
        try:
            tok = Tokenizer.from_str(path.read_text(encoding="utf-8"))
        except Exception as exc:  # the library raises plain Exception on malformed JSON
            raise ModelFileError(f"tokenizer file {path} cannot be read: {exc}") from None
        self._set_tokenizer(tok, f"tokenizer file {path}", ModelFileError)
