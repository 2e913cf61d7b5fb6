"""gen_jax.xla_options: the library's CPU compiler options take effect and change no numbers."""
import jax
import jax.numpy as jnp
import numpy as np

from gen_jax import xla_options
from gen_jax.nn.unet import UNet, UNetConfig


def test_options_by_backend_and_xla_flags(monkeypatch):
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    assert xla_options.compiler_options("cpu") == xla_options.CPU_COMPILER_OPTIONS
    assert xla_options.compiler_options("gpu") == {}
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type= --xla_force_host_platform_device_count=2")
    assert xla_options.compiler_options("cpu") == {}


def test_unet_loss_and_gradient_unchanged_and_fusion_applied(monkeypatch):
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    net = UNet(UNetConfig(ch=8, ch_mult=(1,), num_res_blocks=1, attn_resolutions=(8,), num_groups=4,
                          dropout=0.0))
    r = np.random.default_rng(0)
    x = jnp.asarray(r.normal(size=(4, 8, 8, 1)), jnp.float32)
    t = jnp.asarray([1, 10, 100, 500], jnp.int32)
    params = net.init(jax.random.PRNGKey(0), x, t, train=False)
    # Perturb the zero-initialized output layers so every gradient is non-trivial.
    params = jax.tree.map(lambda p: p + 0.05 * jnp.asarray(r.normal(size=p.shape), jnp.float32), params)

    def loss(p):
        return jnp.mean(jnp.square(net.apply(p, x, t, train=False) - x))

    grad = jax.value_and_grad(loss)
    lib = xla_options.jit(grad)
    plain = jax.jit(grad, compiler_options={})
    ynn = lambda f: f.lower(params).compile().as_text().count('"kind":"__ynn_fusion"')
    # The option is really applied: YNNPACK keeps the dot fusions only (XLA's default also
    # hands it the convolutions and reductions).
    assert 0 < ynn(lib) < ynn(plain)
    (l1, g1), (l0, g0) = lib(params), plain(params)
    np.testing.assert_allclose(float(l1), float(l0), rtol=1e-5)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g0)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
