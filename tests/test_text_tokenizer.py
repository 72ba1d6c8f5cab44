"""Tokenizer training, caption validation, the tensor form and the tokenizer file."""
import pytest
import torch
from hypothesis import given, settings, strategies as st
from tokenizers import Tokenizer

from omnivae.errors import InputError, ModelFileError
from omnivae.modalities.text import TextModality, TextSpec
from omnivae.modalities.text.tokenizer import BOS, EOS, PAD, UNK

CAPTIONS = ["a red circle", "a blue square.", "the small green triangle", "A big red square!", None, "  "]
WORDS = ["a", "red", "circle", "blue", "square", "the", "small", "green", "triangle", "big"]


def make(kind="word", captions=CAPTIONS, **spec):
    return TextModality.from_data("caption", TextSpec(tokenizer=kind, max_len=6, **spec), 4, captions)


@pytest.mark.parametrize("kind", ["word", "bpe"])
def test_round_trip_through_json(tmp_path, kind):
    m = make(kind)
    caps = ["a red circle", "the big blue triangle", "a square zebra"]
    ((fname, text),) = m.extra_files().items()
    assert fname == "tokenizer_caption.json"
    assert torch.equal(TextModality("caption", m.spec, 4, Tokenizer.from_str(text)).prepare(caps), m.prepare(caps))
    (tmp_path / fname).write_text(text)
    rebuilt = TextModality("caption", m.spec, 4)  # vocab known from the spec, as when loading a model
    rebuilt.load_extra_files(tmp_path)
    assert torch.equal(rebuilt.prepare(caps), m.prepare(caps))
    assert rebuilt.to_output(rebuilt.prepare(caps[:2])) == ["a red circle", "the big blue triangle"]


def test_special_ids_and_vocab():
    m = make()
    tok = m.tokenizer
    assert [tok.token_to_id(s) for s in ["<pad>", "<unk>", "<bos>", "<eos>"]] == [PAD, UNK, BOS, EOS]
    assert m.spec.vocab_size == tok.get_vocab_size() > 4
    assert make(max_vocab=7).spec.vocab_size == 7


def test_unknown_words_and_typed_specials_become_unk():
    m = make()
    x = m.prepare("a purple circle <eos> <bos>")
    a, circle = (m.prepare(w)[0, 0].item() for w in ("a", "circle"))
    assert x[0].tolist() == [a, UNK, circle, UNK, UNK, EOS]


def test_lowercase_option():
    assert torch.equal(make().prepare("A RED Circle"), make().prepare("a red circle"))
    cased = make(lowercase=False)
    assert UNK in cased.prepare("A RED").tolist()[0]


def test_truncation_and_strict_length():
    x = make().prepare("a red circle a red circle a red")
    assert x.shape == (1, 6) and x[0, -1] == EOS and (x[0, :-1] != PAD).all()
    with pytest.raises(InputError, match="more than max_len"):
        make(truncate=False).prepare("a red circle a red circle a red")
    make(truncate=False).prepare("a red circle a red")  # exactly max_len - 1 tokens fits


@pytest.mark.parametrize("bad", ["", "   ", "\t\n", ["a red circle", " "], [None], [3], 3.0, b"\xff\xfe",
                                 "a \udcff b"])
def test_bad_captions_raise(bad):
    with pytest.raises(InputError):
        make().prepare(bad)


def test_utf8_bytes_are_accepted():
    m = make()
    assert torch.equal(m.prepare("a red circle".encode()), m.prepare("a red circle"))


def test_from_data_skips_missing_and_needs_some_captions():
    assert make(captions=["a red circle", None, ""]).spec.vocab_size == 4 + 3
    with pytest.raises(InputError, match="no captions"):
        make(captions=[None, " "])
    with pytest.raises(InputError, match="UTF-8"):
        make(captions=["a red circle", b"\xff"])


def test_constructor_without_tokenizer_points_to_from_data():
    with pytest.raises(InputError, match="from_data"):
        TextModality("caption", TextSpec(), 4)
    m = TextModality("caption", TextSpec(vocab_size=20), 4)
    with pytest.raises(InputError, match="no tokenizer"):
        m.prepare("a red circle")


def test_tokenizer_file_from_another_model_is_refused(tmp_path):
    ours, other = make(), make(captions=["one two three four five six seven"])
    assert ours.spec.vocab_size != other.spec.vocab_size
    (tmp_path / "tokenizer_caption.json").write_text(other.tokenizer.to_str())
    with pytest.raises(ModelFileError, match="tokenizer_caption.json has vocab .* is it from another model"):
        ours.load_extra_files(tmp_path)
    (tmp_path / "tokenizer_caption.json").write_text("{not json")
    with pytest.raises(ModelFileError, match="cannot be read"):
        ours.load_extra_files(tmp_path)
    with pytest.raises(ModelFileError, match="missing"):
        ours.load_extra_files(tmp_path / "nowhere")


def test_check_accepts_prepared_and_placeholder_rows():
    m = make()
    m.check(m.prepare(["a red circle", "square"]))
    p = m.placeholder(3)
    m.check(p)
    assert p.shape == (3, 6) and (p[:, 0] == EOS).all() and (p[:, 1:] == PAD).all()


@pytest.mark.parametrize("x, message", [
    (torch.zeros(2, 5, dtype=torch.long), "shape"),
    (torch.full((2, 6), EOS, dtype=torch.float32), "dtype"),
    (torch.full((2, 6), 999), "lie in"),
    (torch.full((2, 6), 5), "no <eos>"),
    (torch.tensor([[5, PAD, 5, EOS, PAD, PAD]]), "<pad> before"),
    (torch.zeros(2, 6, dtype=torch.long), "no <eos>"),
])
def test_check_rejects(x, message):
    with pytest.raises(InputError, match=message):
        make().check(x)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.sampled_from(WORDS), min_size=1, max_size=8), min_size=1, max_size=4))
def test_prepare_to_output_round_trip(word_lists):
    m = make()
    x = m.prepare([" ".join(w) for w in word_lists])
    m.check(x)
    assert m.to_output(x) == [" ".join(w[:5]) for w in word_lists]


def test_tokenizer_without_our_special_tokens_is_refused(tmp_path):
    from tokenizers import models
    foreign = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="a"))
    with pytest.raises(InputError, match="special tokens"):
        TextModality("caption", TextSpec(), 4, tokenizer=foreign)
    (tmp_path / "tokenizer_caption.json").write_text(foreign.to_str())
    with pytest.raises(ModelFileError, match="special tokens"):
        TextModality("caption", TextSpec(vocab_size=len(WORDS)), 4).load_extra_files(tmp_path)


# -- decoding gives the text back as written ------------------------------------------------------------
WRITTEN = ["a red t-shirt, size m.", "it's a dog's toy", "a big red circle"]


@pytest.mark.parametrize("lowercase", [True, False])
def test_word_captions_round_trip_with_their_punctuation(lowercase):
    m = TextModality.from_data("caption", TextSpec(max_len=16, lowercase=lowercase), 4, WRITTEN + ["wow... really?!"])
    assert m.to_output(m.prepare(WRITTEN)) == WRITTEN
    assert m.to_output(m.prepare("wow... really?!")) == ["wow... really?!"]
    assert m.to_output(m.prepare(" a  big\tred circle ")) == ["a big red circle"]  # white space as one space
    if lowercase:
        assert m.to_output(m.prepare("A Red T-Shirt, size M.")) == ["a red t-shirt, size m."]
    else:  # "A" is an unknown word, dropped on decoding
        assert m.to_output(m.prepare("A red t-shirt, size m.")) == ["red t-shirt, size m."]


def test_word_captions_survive_the_tokenizer_file(tmp_path):
    m = TextModality.from_data("caption", TextSpec(max_len=16), 4, WRITTEN)
    (tmp_path / "tokenizer_caption.json").write_text(m.extra_files()["tokenizer_caption.json"])
    rebuilt = TextModality("caption", m.spec, 4)
    rebuilt.load_extra_files(tmp_path)
    assert rebuilt.to_output(rebuilt.prepare(WRITTEN)) == WRITTEN


def legacy_word_tokenizer(captions):
    """A word tokenizer as saved before decoders were added: Whitespace pre-tokenizer, no decoder."""
    from tokenizers import models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Strip(), normalizers.Lowercase()])
    tok.train_from_iterator(captions, trainer=trainers.WordLevelTrainer(
        vocab_size=5000, special_tokens=["<pad>", "<unk>", "<bos>", "<eos>"]))
    return Tokenizer.from_str(tok.to_str())


def test_old_word_tokenizer_files_load_and_decode_as_before(tmp_path):
    old = legacy_word_tokenizer(WRITTEN)
    spec = TextSpec(max_len=16, vocab_size=old.get_vocab_size())
    (tmp_path / "tokenizer_caption.json").write_text(old.to_str())
    m = TextModality("caption", spec, 4)
    m.load_extra_files(tmp_path)
    x = m.prepare(WRITTEN)
    assert x[0, :10].tolist() == old.encode("a red t-shirt, size m.", add_special_tokens=False).ids + [EOS]
    assert m.to_output(x) == ["a red t - shirt, size m.", "it ' s a dog ' s toy", "a big red circle"]
