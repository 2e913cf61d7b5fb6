"""Zero-shot classification and retrieval against numpy references on random embeddings."""
import jax.numpy as jnp
import numpy as np
import pytest

from gen_jax.data import shapes as S
from gen_jax.multimodal import zero_shot as Z


def _unit(a):
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


def test_ensemble_mean_then_renormalize():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(4, 7, 5)) * rng.uniform(0.5, 3.0, size=(4, 7, 1))   # unnormalized prompts
    ref = _unit(np.mean(_unit(z), axis=1))
    got = np.asarray(Z.ensemble_embeddings(jnp.asarray(z, jnp.float32)))
    np.testing.assert_allclose(got, ref, atol=1e-6)
    one = np.asarray(Z.ensemble_embeddings(jnp.asarray(z[:, :1], jnp.float32)))
    np.testing.assert_allclose(one, _unit(z[:, 0]), atol=1e-6)   # single template


def test_zero_shot_predict_is_argmax_of_dot():
    rng = np.random.default_rng(1)
    zi, w = _unit(rng.normal(size=(50, 6))), _unit(rng.normal(size=(5, 6)))
    got = np.asarray(Z.zero_shot_predict(jnp.asarray(zi), jnp.asarray(w)))
    np.testing.assert_array_equal(got, np.argmax(zi @ w.T, axis=1))


def _np_recall(q, items, k):
    sim = q @ items.T
    hits = 0
    for n in range(len(q)):
        order = sorted(range(len(items)), key=lambda m: -sim[n, m])   # by hand: top K by similarity
        hits += n in order[:k]
    return hits / len(q)


@pytest.mark.parametrize("k", [1, 5])
def test_recall_at_k_by_hand(k):
    rng = np.random.default_rng(2)
    zi = _unit(rng.normal(size=(40, 8)))
    zt = _unit(zi + 0.9 * rng.normal(size=(40, 8)))
    r = Z.recall_at_k(jnp.asarray(zi, jnp.float32), jnp.asarray(zt, jnp.float32), (k,))
    assert r[f"t2i_R@{k}"] == pytest.approx(_np_recall(zt, zi, k))
    assert r[f"i2t_R@{k}"] == pytest.approx(_np_recall(zi, zt, k))
    assert 0 < r[f"t2i_R@{k}"] < 1


def test_perfect_pairs_recall_one():
    z = jnp.eye(6)
    assert Z.recall_at_k(z, z, (1,)) == {"t2i_R@1": 1.0, "i2t_R@1": 1.0}


def test_shapes_prompts():
    single = Z.shapes_prompts("shape", ensemble=False)
    assert single[2] == ["a small red triangle in the center"]
    ens = Z.shapes_prompts("colour", ensemble=True)
    assert len(ens) == 6 and all(len(p) == 2 * 5 * 9 for p in ens)
    assert all(f" {S.COLOURS[c]} " in t for c, p in enumerate(ens) for t in p)
    assert "a large blue circle at the bottom right" in ens[2]        # held-out combos are text only
    pos = Z.shapes_prompts("position", ensemble=True)
    assert len(pos) == 9 and pos[0][0].endswith("at the top left") and pos[4][0].endswith("in the center")
    arrays = {"x": np.array([0, 1, 2]), "y": np.array([0, 1, 2])}
    np.testing.assert_array_equal(Z.factor_labels(arrays, "position"), [0, 4, 8])
    with pytest.raises(ValueError, match="factor"):
        Z.shapes_prompts("texture", True)


def test_class_embeddings_through_an_embedder():
    """A stand-in text embedder (a fixed random table, mean over tokens): class embeddings =
    the numpy ensemble of its outputs."""
    rng = np.random.default_rng(3)
    table = rng.normal(size=(50, 4)).astype(np.float32)

    def embed_text(params, tokens):
        return jnp.mean(jnp.asarray(params)[tokens], axis=1)

    prompts = [["a b", "c d", "e"], ["f", "g h", "i j"]]
    vocab = {w: i + 1 for i, w in enumerate("abcdefghij")}
    tokenize = lambda ts: np.array([[vocab[w] for w in t.split()] + [0] * (2 - len(t.split())) for t in ts])  # noqa
    got = np.asarray(Z.class_embeddings(embed_text, table, prompts, tokenize, batch_size=4))
    z = np.mean(table[tokenize([t for p in prompts for t in p])], axis=1).reshape(2, 3, 4)
    np.testing.assert_allclose(got, _unit(np.mean(_unit(z), axis=1)), atol=1e-5)
