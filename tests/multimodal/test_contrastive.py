"""Contrastive objectives against numpy references; the sharded loss equals the single-device one."""
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

from gen_jax.multimodal import contrastive as C

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _pair(b=12, d=6, seed=0, corr=0.5):
    rng = np.random.default_rng(seed)
    zi = rng.normal(size=(b, d))
    zt = corr * zi + rng.normal(size=(b, d))
    zi /= np.linalg.norm(zi, axis=1, keepdims=True)
    zt /= np.linalg.norm(zt, axis=1, keepdims=True)
    return zi.astype(np.float32), zt.astype(np.float32)


def _log_softmax_rows(a):
    m = a.max(axis=1, keepdims=True)
    return a - m - np.log(np.exp(a - m).sum(axis=1, keepdims=True))


def np_infonce(zi, zt, log_scale, max_scale=100.0):
    s = min(math.exp(log_scale), max_scale)
    logits = s * zi.astype(np.float64) @ zt.astype(np.float64).T
    li = -np.mean(np.diag(_log_softmax_rows(logits)))     # image -> text (rows)
    lt = -np.mean(np.diag(_log_softmax_rows(logits.T)))   # text -> image (columns)
    return 0.5 * (li + lt)


def np_siglip(zi, zt, log_t, b):
    logits = math.exp(log_t) * zi.astype(np.float64) @ zt.astype(np.float64).T + b
    z = 2 * np.eye(len(zi)) - 1
    return -np.sum(-np.log1p(np.exp(-z * logits))) / len(zi)


@pytest.mark.parametrize("log_scale", [0.0, math.log(1 / 0.07), 3.0])
def test_infonce_matches_numpy_and_is_symmetric(log_scale):
    zi, zt = _pair()
    got = float(C.infonce_loss(jnp.asarray(zi), jnp.asarray(zt), log_scale))
    np.testing.assert_allclose(got, np_infonce(zi, zt, log_scale), rtol=1e-5)
    swapped = float(C.infonce_loss(jnp.asarray(zt), jnp.asarray(zi), log_scale))
    np.testing.assert_allclose(swapped, got, rtol=1e-6)


def test_perfect_alignment_drives_infonce_to_zero():
    zi, _ = _pair(b=5, d=8)
    eye = np.eye(5, 8, dtype=np.float32)
    assert float(C.infonce_loss(jnp.asarray(eye), jnp.asarray(eye), math.log(100.0))) < 1e-30 + 1e-6
    assert abs(float(C.infonce_loss(jnp.asarray(eye), jnp.asarray(eye), -30.0)) - math.log(5)) < 1e-5


def test_clamp_in_value_and_gradient():
    """Above log 100 the loss is the one at scale 100 and d loss / d log_scale = 0; below,
    the gradient is the chain rule s dL/ds (checked by central differences in float64)."""
    zi, zt = _pair(seed=1)
    f = lambda ls: C.infonce_loss(jnp.asarray(zi), jnp.asarray(zt), ls)  # noqa: E731
    np.testing.assert_allclose(float(f(math.log(250.0))), np_infonce(zi, zt, math.log(100.0)), rtol=1e-5)
    assert float(jax.grad(f)(jnp.float32(math.log(250.0)))) == 0.0
    assert float(jax.grad(f)(jnp.float32(math.log(100.0)))) == 0.0   # at the clamp: frozen
    assert float(C.logit_scale(jnp.float32(10.0))) == pytest.approx(100.0)
    ls, h = 2.0, 1e-4
    fd = (np_infonce(zi, zt, ls + h) - np_infonce(zi, zt, ls - h)) / (2 * h)
    np.testing.assert_allclose(float(jax.grad(f)(jnp.float32(ls))), fd, rtol=1e-3)


def test_siglip_matches_numpy():
    zi, zt = _pair(seed=2)
    for log_t, b in [(C.SIGLIP_INIT_LOG_T, C.SIGLIP_INIT_BIAS), (1.0, 0.5)]:
        got = float(C.siglip_loss(jnp.asarray(zi), jnp.asarray(zt), log_t, b))
        np.testing.assert_allclose(got, np_siglip(zi, zt, log_t, b), rtol=1e-5)


def test_in_batch_accuracy():
    logits = jnp.asarray([[3.0, 1.0, 0.0], [0.0, 1.5, 2.0], [0.0, 0.0, 5.0]])
    acc = C.in_batch_accuracy(logits)
    assert float(acc["acc_i2t"]) == pytest.approx(2 / 3) and float(acc["acc_t2i"]) == pytest.approx(1.0)


def test_bad_input():
    zi, zt = _pair()
    with pytest.raises(ValueError, match="same shape"):
        C.infonce_loss(jnp.asarray(zi), jnp.asarray(zt[:, :3]), 1.0)
    with pytest.raises(ValueError, match="kind"):
        C.contrastive_loss("nce", jnp.asarray(zi), jnp.asarray(zt), {"log_scale": 1.0})


def _sharded_check():
    mesh = Mesh(np.asarray(jax.devices()[:8]), ("data",))
    zi, zt = _pair(b=16, d=8, seed=3)
    zi, zt = jnp.asarray(zi), jnp.asarray(zt)
    for kind, temp in [("infonce", {"log_scale": jnp.float32(2.5)}),
                       ("siglip", {"log_scale": jnp.float32(1.2), "bias": jnp.float32(-2.0)})]:
        one = lambda a, b, t: C.contrastive_loss(kind, a, b, t)  # noqa: E731
        many = C.sharded_loss(mesh, "data", kind)
        v1, g1 = jax.jit(jax.value_and_grad(one, argnums=(0, 1, 2)))(zi, zt, temp)
        v8, g8 = jax.jit(jax.value_and_grad(many, argnums=(0, 1, 2)))(zi, zt, temp)
        np.testing.assert_allclose(float(v8), float(v1), atol=1e-5, rtol=1e-5)
        for a, b in zip(jax.tree.leaves(g8), jax.tree.leaves(g1)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
    with pytest.raises(ValueError, match="divisible"):
        C.sharded_loss(mesh)(zi[:12], zt[:12], {"log_scale": jnp.float32(1.0)})


def test_sharded_loss_equals_single_device():
    """8 fake CPU devices (the test session's XLA_FLAGS, tests/conftest.py; a subprocess with
    them set when this process has fewer)."""
    if jax.device_count() >= 8:
        _sharded_check()
        return
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu",
               PYTHONPATH=REPO)
    code = "from tests.multimodal.test_contrastive import _sharded_check; _sharded_check()"
    r = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
