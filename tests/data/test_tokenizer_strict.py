"""Strict encoding of user prompts: words the closed caption vocabulary cannot encode are a clear
error naming them (issue 15, bad input), the default encoding is unchanged."""
import numpy as np
import pytest

from gen_jax.data.datasets import get_tokenizer
from gen_jax.data.tokenizers import UNK, UnknownWordsError, WordTokenizer, encode_prompts


@pytest.fixture(scope="module")
def tok():
    return get_tokenizer("shapes")


def test_known_prompt_matches_default_encoding(tok):
    texts = ["a large red circle at the top left", "a small cyan cross in the center"]
    np.testing.assert_array_equal(encode_prompts(tok, texts, 10), tok.encode(texts, 10))
    np.testing.assert_array_equal(encode_prompts(tok, texts[0], 10), tok.encode(texts[:1], 10))
    assert tok.decode(encode_prompts(tok, texts, 10)) == texts


@pytest.mark.parametrize("text,bad", [("un grand cercle rouge", ["cercle", "grand", "rouge", "un"]),
                                      ("ein großer roter kreis", ["ein", "großer", "kreis", "roter"]),
                                      ("大きな赤い円", ["大きな赤い円"]),
                                      ("a large crimson circle", ["crimson"])])
def test_unencodable_words_are_named(tok, text, bad):
    with pytest.raises(UnknownWordsError) as e:
        encode_prompts(tok, ["a red circle", text], 10)
    assert list(e.value.unknown) == [1] and sorted(e.value.unknown[1]) == bad
    for w in bad:
        assert repr(w)[1:-1] in str(e.value)
    assert "text 1" in str(e.value) and "text 0" not in str(e.value)


def test_default_behaviour_unchanged_and_overlong(tok):
    # existing callers: unknown words still map to <unk>, long texts are still truncated
    ids = tok.encode(["a crimson circle"], 10)
    assert ids[0, 2] == UNK
    long = "a large red circle at the top left " * 2
    assert tok.encode([long], 10).shape == (1, 10)
    with pytest.raises(ValueError, match="longer than max_len=10"):
        encode_prompts(tok, [long], 10)
    with pytest.raises(TypeError, match="non-empty list of strings"):
        encode_prompts(tok, [], 10)
    with pytest.raises(UnknownWordsError):
        WordTokenizer(["a", "b"]).encode(["a <unk> b"], 6, strict=True)
