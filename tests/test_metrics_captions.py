import numpy as np
import pytest

from omnivae.errors import InputError
from omnivae.metrics.captions import attribute_accuracy, bleu, exact_match, token_accuracy


def test_exact_match_normalises_case_and_whitespace():
    preds = ["A red  Circle", "a blue square", "big"]
    refs = ["a red circle", "a blue circle", "big "]
    assert exact_match(preds, refs) == pytest.approx(2 / 3)


def test_token_accuracy_counts_missing_tokens_wrong():
    preds = ["a red circle", "a blue", "green square left extra"]
    refs = ["a red square", "a blue circle", "a green square"]
    # 2/3 + 2/3 (third missing) + 0/3 (shifted) -> 4/9; extra predicted tokens are ignored
    assert token_accuracy(preds, refs) == pytest.approx(4 / 9)


def test_bleu_perfect_and_disjoint():
    refs = ["the small red circle is on the left", "a big blue square sits at the top"]
    assert bleu(refs, refs) == pytest.approx(100.0)
    assert bleu(["x y z w v u t s", "q r p o n m l k"], refs) == pytest.approx(0.0)
    partial = bleu(["the small red circle is on the right", "a big blue square sits at the top"], refs)
    assert 0 < partial < 100


def parse(text):
    words = text.split()
    colour = {"red": 0, "blue": 1}.get(words[0]) if words else None
    shape = {"circle": 0, "square": 1}.get(words[1]) if len(words) > 1 else None
    return {"colour": colour, "shape": shape}


def test_attribute_accuracy_with_none_counted_wrong():
    preds = ["red circle", "blue circle", "purple square", ""]
    truth = {"colour": np.array([0, 1, 1, 0]), "shape": np.array([0, 1, 1, 0])}
    result = attribute_accuracy(preds, truth, parse)
    assert result == {"colour": 0.5, "shape": 0.5, "all": 0.25}


@pytest.mark.parametrize("call, word", [
    (lambda: exact_match(["a"], ["a", "b"]), "refs"),
    (lambda: token_accuracy([], []), "preds"),
    (lambda: token_accuracy(["a"], [""]), "reference token"),
    (lambda: bleu("abc", "abc"), "preds"),
    (lambda: attribute_accuracy(["a"], {"colour": np.zeros(2)}, parse), "colour"),
    (lambda: attribute_accuracy(["a"], {}, parse), "true_attrs"),
])
def test_bad_arguments_raise_input_error(call, word):
    with pytest.raises(InputError, match=word):
        call()
