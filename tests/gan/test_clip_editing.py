"""CLIP-guided latent editing (gen_jax.gan.clip_editing) on a stand-in linear generator and a
stand-in embedder whose optimum is known: ``E_I(G(z)) = normalize(z Q)`` for an orthogonal
``Q``, so ``cos(E_I(G(z)), e) = cos(z, u)`` with ``u = e Q^T``: the per-example optimum without
the L2 term is any ``z`` along ``u`` (similarity 1), and the references with the L2 term or a
shared direction are scipy optimizations of the same objectives written in numpy."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import minimize

from gen_jax.gan import clip_editing as ce
from gen_jax.model import Embedder

Z = 4
H, W, C = 2, 2, 1


def _orth(rng, n):
    q, r = np.linalg.qr(rng.normal(size=(n, n)))
    return (q * np.sign(np.diag(r))).astype(np.float32)


def _standins():
    rng = np.random.default_rng(0)
    a, b = _orth(rng, Z), _orth(rng, Z)
    texts = rng.normal(size=(6, Z)).astype(np.float32)
    texts /= np.linalg.norm(texts, axis=1, keepdims=True)
    a_j = jnp.asarray(a)

    def generate(z):  # a linear generator: z [N, Z] -> [N, 2, 2, 1]
        return (z @ a_j).reshape(z.shape[0], H, W, C)

    def embed_image(params, x):
        e = x.reshape(x.shape[0], -1) @ params["B"]
        return e / jnp.linalg.norm(e, axis=-1, keepdims=True)

    def embed_text(params, tokens):  # caption = its first token id
        e = params["T"][tokens[:, 0]]
        return e / jnp.linalg.norm(e, axis=-1, keepdims=True)

    params = {"B": jnp.asarray(b), "T": jnp.asarray(texts)}
    q = a @ b
    u = texts @ q.T  # cos(E_I(G(z)), texts[k]) = cos(z, u[k])
    z0 = rng.normal(size=(3, Z)).astype(np.float32)
    return dict(generate=generate, emb=Embedder(embed_image, embed_text, Z), params=params, u=u, z0=z0, q=q)


@pytest.fixture(scope="module")
def setup():
    return _standins()


def _cos(a, b):
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_similarity_matches_numpy(setup):
    s = setup
    z = s["z0"]
    tokens = np.array([[1, 0], [2, 0], [3, 0]], np.int32)
    got = np.asarray(ce.clip_similarity(s["emb"], s["params"], s["generate"](jnp.asarray(z)), tokens))
    want = [_cos(z[i], s["u"][tokens[i, 0]]) for i in range(3)]
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_optimization_without_l2_reaches_the_closed_form_optimum(setup):
    s = setup
    tok = np.array([[2, 0]], np.int32)
    out = ce.optimize_latents(s["generate"], s["emb"], s["params"], s["z0"], tok, steps=200, learning_rate=0.05,
                              l2_weight=0.0)
    sim = np.asarray(out.similarity)
    assert sim.shape == (201, 3) and out.z.shape == (3, Z)
    np.testing.assert_allclose(sim[0], [_cos(z, s["u"][2]) for z in s["z0"]], atol=1e-5)
    # Monotone-ish: the similarity never drops by more than 1e-3 between checkpoints 20 steps apart.
    assert np.all(np.diff(sim[::20], axis=0) > -1e-3)
    assert np.all(sim[-1] > 0.999)  # the closed-form optimum: cos = 1, z along u
    for z in np.asarray(out.z):
        assert _cos(z, s["u"][2]) > 0.999
    np.testing.assert_allclose(np.asarray(out.loss), 1.0 - sim, atol=1e-6)


def test_optimization_with_l2_matches_a_scipy_reference(setup):
    s = setup
    # lambda |z0|^2 > 2 >= 1 - cos: the optimum is a genuine interior point, not the collapse
    # z -> 0 along u that a weak L2 term allows (cos is scale-free).
    lam, u = 1.0, s["u"][4]
    out = ce.optimize_latents(s["generate"], s["emb"], s["params"], s["z0"], np.array([4, 0]), steps=600,
                              learning_rate=0.01, l2_weight=lam)
    for i, z0 in enumerate(s["z0"].astype(np.float64)):
        f = lambda z: 1.0 - _cos(z, u) + lam * np.sum((z - z0) ** 2)
        ref = minimize(f, z0, method="BFGS", options=dict(gtol=1e-10)).x
        assert np.linalg.norm(ref) > 0.3 * np.linalg.norm(z0)
        np.testing.assert_allclose(np.asarray(out.z[i]), ref, atol=1e-4)
        assert float(out.loss[-1, i]) == pytest.approx(f(ref), abs=1e-6)
        assert float(out.similarity[-1, i]) > float(out.similarity[0, i])


def test_large_l2_or_image_weight_keeps_z_at_z0(setup):
    s = setup
    free = ce.optimize_latents(s["generate"], s["emb"], s["params"], s["z0"], np.array([1, 0]), steps=100,
                               l2_weight=0.0)
    moved = np.asarray(ce.latent_distance(s["z0"], free.z))
    assert np.all(moved > 0.3)
    for kw in (dict(l2_weight=1e4), dict(l2_weight=0.0, image_weight=1e4)):
        out = ce.optimize_latents(s["generate"], s["emb"], s["params"], s["z0"], np.array([1, 0]), steps=100, **kw)
        assert np.all(np.asarray(ce.latent_distance(s["z0"], out.z)) < 0.02 * moved), kw
    # The identity term through a feature map (here the flattened image) holds z too.
    out = ce.optimize_latents(s["generate"], s["emb"], s["params"], s["z0"], np.array([1, 0]), steps=100,
                              l2_weight=0.0, identity_weight=1e4, identity_features=lambda x: x.reshape(x.shape[0], -1))
    assert np.all(np.asarray(ce.latent_distance(s["z0"], out.z)) < 0.1 * moved)


def _ref_direction(zs, alpha, t, src=None):
    def f(v):
        d = v / np.linalg.norm(v)
        x = zs + alpha * d
        val = np.mean([_cos(r, t) for r in x])
        if src is not None:
            val -= np.mean([_cos(r, src) for r in x])
        return -val

    best = min((minimize(f, v0, method="BFGS") for v0 in [t, -t, np.ones_like(t)]), key=lambda r: r.fun)
    return best.x / np.linalg.norm(best.x), -best.fun


def test_global_direction_is_unit_and_aligns_with_the_best_direction(setup):
    s = setup
    zs = np.random.default_rng(1).normal(size=(8, Z)).astype(np.float32)
    u = s["u"][3]
    out = ce.global_direction(s["generate"], s["emb"], s["params"], zs, np.array([3, 0]), alpha=3.0, steps=300,
                              learning_rate=0.02, key=jax.random.PRNGKey(0))
    d = np.asarray(out.direction, np.float64)
    assert abs(np.linalg.norm(d) - 1.0) < 1e-5
    ref, best = _ref_direction(zs.astype(np.float64), 3.0, u.astype(np.float64))
    assert _cos(d, ref) > 0.9999
    assert _cos(d, u) > 0.9  # large alpha: the best shared direction is close to u itself
    obj = np.asarray(out.objective)
    assert obj.shape == (301,) and obj[-1] > obj[0] and obj[-1] == pytest.approx(best, abs=1e-5)
    np.testing.assert_allclose(np.asarray(out.similarity), [_cos(r, u) for r in zs + 3.0 * d], atol=1e-4)
    np.testing.assert_allclose(np.asarray(ce.apply_direction(zs, d, 3.0)), zs + 3.0 * d, atol=1e-5)


def test_directional_variant_matches_its_reference(setup):
    s = setup
    zs = np.random.default_rng(2).normal(size=(8, Z)).astype(np.float32)
    t, src = s["u"][0].astype(np.float64), s["u"][5].astype(np.float64)
    out = ce.global_direction(s["generate"], s["emb"], s["params"], zs, np.array([0, 0]),
                              source_tokens=np.array([[5, 0]]), alpha=3.0, steps=300, learning_rate=0.02,
                              init=np.ones(Z))
    d = np.asarray(out.direction, np.float64)
    assert abs(np.linalg.norm(d) - 1.0) < 1e-5
    ref, best = _ref_direction(zs.astype(np.float64), 3.0, t, src)
    assert _cos(d, ref) > 0.9999
    assert float(out.objective[-1]) == pytest.approx(best, abs=1e-5)


def test_prompt_ensemble_is_the_renormalized_mean(setup):
    s = setup
    tokens = np.array([[1, 0], [2, 0], [4, 0]], np.int32)
    m = np.asarray(s["params"]["T"])[[1, 2, 4]].mean(0)
    got = np.asarray(ce.ensemble_embedding(s["emb"], s["params"], tokens))
    np.testing.assert_allclose(got, m / np.linalg.norm(m), atol=1e-6)
    # A direction toward an ensemble is the direction toward its mean embedding's pre-image.
    zs = np.random.default_rng(3).normal(size=(8, Z)).astype(np.float32)
    out = ce.global_direction(s["generate"], s["emb"], s["params"], zs, tokens, alpha=3.0, steps=300,
                              learning_rate=0.02, init=np.ones(Z))
    ref, _ = _ref_direction(zs.astype(np.float64), 3.0, (got @ s["q"].T).astype(np.float64))
    assert _cos(np.asarray(out.direction, np.float64), ref) > 0.9999


def test_factor_edit_scores():
    before = np.array([[0, 1, 0], [2, 3, 1], [1, 1, 1], [4, 0, 0]])
    after = np.array([[0, 2, 0], [2, 2, 0], [1, 1, 1], [3, 2, 0]])
    got = ce.factor_edit_scores(before, after, factor=1, target=2)
    assert got == {"success": 0.75, "kept": 0.5, "both": 0.25, "n": 4}
    got = ce.factor_edit_scores(before, after, factor=1, target=np.array([2, 2, 1, 0]))
    assert got["success"] == 0.75


def test_refusals_name_the_argument(setup):
    s = setup
    g, e, p, z0 = s["generate"], s["emb"], s["params"], s["z0"]
    tok = np.array([1, 0])
    cases = [
        (lambda: ce.optimize_latents(g, e, p, z0[0], tok), "z0"),
        (lambda: ce.optimize_latents(g, e, p, z0, np.zeros((2, 2), np.int32)), "caption_tokens"),
        (lambda: ce.optimize_latents(g, e, p, z0, np.zeros((3, 2), np.float32)), "caption_tokens"),
        (lambda: ce.optimize_latents(g, e, p, z0, tok, steps=0), "steps"),
        (lambda: ce.optimize_latents(g, e, p, z0, tok, learning_rate=0.0), "learning_rate"),
        (lambda: ce.optimize_latents(g, e, p, z0, tok, l2_weight=-1.0), "l2_weight"),
        (lambda: ce.optimize_latents(g, e, p, z0, tok, identity_weight=1.0), "identity_features"),
        (lambda: ce.optimize_latents(g, "clip", p, z0, tok), "embedder"),
        (lambda: ce.global_direction(g, e, p, z0[0], tok, key=jax.random.PRNGKey(0)), "z"),
        (lambda: ce.global_direction(g, e, p, z0, np.zeros((2, 2), np.float32), key=jax.random.PRNGKey(0)),
         "target_tokens"),
        (lambda: ce.global_direction(g, e, p, z0, tok, source_tokens=np.zeros((3, 2, 1), np.int32),
                                     key=jax.random.PRNGKey(0)), "source_tokens"),
        (lambda: ce.global_direction(g, e, p, z0, tok, steps=-1, key=jax.random.PRNGKey(0)), "steps"),
        (lambda: ce.global_direction(g, e, p, z0, tok, alpha=0.0, key=jax.random.PRNGKey(0)), "alpha"),
        (lambda: ce.global_direction(g, e, p, z0, tok), "key"),
        (lambda: ce.global_direction(g, e, p, z0, tok, init=np.ones(Z + 1)), "init"),
        (lambda: ce.clip_similarity(e, p, np.zeros((3, 4)), tok), "images"),
        (lambda: ce.latent_distance(z0, z0[:2]), "z0"),
        (lambda: ce.apply_direction(z0, np.ones(Z + 1), 1.0), "direction"),
        (lambda: ce.factor_edit_scores(np.zeros((2, 3)), np.zeros((3, 3)), 0, 1), "after"),
        (lambda: ce.factor_edit_scores(np.zeros((2, 3)), np.zeros((2, 3)), 3, 1), "factor"),
    ]
    for fn, name in cases:
        with pytest.raises(ValueError, match=name):
            fn()
