"""parse_caption inverts caption_for on every factor combination and refuses ambiguity."""
import itertools

from gen_jax.data import shapes as S


def test_parse_caption_inverts_caption_for_on_all_combinations():
    combos = itertools.product(range(len(S.SHAPES)), range(len(S.COLOURS)), range(len(S.SIZES)),
                               range(len(S.XS)), range(len(S.YS)))
    for f in combos:
        assert S.parse_caption(S.caption_for(*f)) == f


def test_parse_caption_marks_missing_and_ambiguous_factors():
    assert S.parse_caption("a big red thing") == (-1, 0, -1, -1, -1)
    # two colours named: colour is ambiguous; 'on the left' fixes y to the middle row
    assert S.parse_caption("a small red blue circle on the left") == (0, -1, 0, 0, 1)
    assert S.parse_caption("") == (-1, -1, -1, -1, -1)
