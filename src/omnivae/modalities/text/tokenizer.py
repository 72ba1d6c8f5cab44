"""Caption tokenizers (HF `tokenizers`): word-level or BPE, with fixed special token ids.

Ids 0..3 are always <pad>, <unk>, <bos>, <eos>; a caption's tensor row is its token ids,
then <eos>, then <pad> up to max_len.

Word-level: white space is split off, each word gets the Metaspace marker "▁" and is then
split at every punctuation character ("a t-shirt," -> "▁a", "▁t", "-", "shirt", ","), so the
Metaspace decoder puts a space only where a word started: captions decode as written
("a t-shirt,"), runs of white space as one space. Tokenizer files saved before this
(Whitespace pre-tokenizer, no decoder) still load and decode as they did: tokens joined by
spaces, then the text modality removes the space before , . ; : ! ?
"""
from __future__ import annotations

from typing import Any, Literal

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from omnivae.errors import InputError

SPECIALS = ("<pad>", "<unk>", "<bos>", "<eos>")
PAD, UNK, BOS, EOS = range(4)


def train_tokenizer(captions: list[str], kind: Literal["word", "bpe"], max_vocab: int,
                    lowercase: bool) -> Tokenizer:
    """Train a word-level (white space and punctuation split, see the module docstring) or BPE
    tokenizer on captions."""
    steps = [normalizers.NFKC(), normalizers.Strip()] + ([normalizers.Lowercase()] if lowercase else [])
    if kind == "word":
        tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.WhitespaceSplit(),  # white space (any run of it) never becomes a token
            pre_tokenizers.Metaspace(prepend_scheme="always"),  # every word starts with "▁"
            pre_tokenizers.Punctuation(),  # "▁t-shirt," -> "▁t", "-", "shirt", ","
        ])
        tok.decoder = decoders.Metaspace(prepend_scheme="always")  # "▁" -> " ", the leading one dropped
        trainer = trainers.WordLevelTrainer(vocab_size=max_vocab, special_tokens=list(SPECIALS))
    else:
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer, tok.decoder = pre_tokenizers.Metaspace(), decoders.Metaspace()
        trainer = trainers.BpeTrainer(vocab_size=max_vocab, special_tokens=list(SPECIALS))
    tok.normalizer = normalizers.Sequence(steps)
    tok.train_from_iterator(captions, trainer=trainer)
    return tok


def specials_problem(tok: Tokenizer) -> str | None:
    """None if the special tokens sit at their fixed ids, else what is wrong."""
    got = [tok.token_to_id(s) for s in SPECIALS]
    if got != list(range(len(SPECIALS))):
        return f"special tokens {list(SPECIALS)} must have ids 0..3, found {got}"
    return None


def as_caption(value: Any, where: str) -> str:
    """Validate one raw caption: str, or UTF-8 bytes; never None, empty or whitespace-only."""
    if isinstance(value, (bytes, bytearray)):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"{where} is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    if not isinstance(value, str):
        raise InputError(f"{where} must be a str, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(f"{where} holds characters that are not valid Unicode (lone surrogates)") from None
    if not value.strip():
        raise InputError(f"{where} is empty or whitespace-only (mark missing captions in the data mask)")
    return value


def token_ids(tok: Tokenizer, captions: list[str]) -> list[list[int]]:
    """Token ids per caption, without <bos>/<eos>; special tokens typed in the text become <unk>."""
    return [[UNK if i < len(SPECIALS) else i for i in enc.ids]
            for enc in tok.encode_batch(captions, add_special_tokens=False)]
