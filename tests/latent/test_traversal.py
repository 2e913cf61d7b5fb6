"""Latent traversals, interpolations and reconstructions (gen_jax.latent.traversal): grid
shapes and endpoints, slerp geometry, and the model-level helpers through a VAE's codec."""
import jax
import jax.numpy as jnp
import numpy as np

from gen_jax.latent import traversal
from gen_jax.latent.vae import make_vae
from tests.latent.stand_in import INFO, stand_in_batch as _batch


def _fake_decode(z):
    return jnp.broadcast_to(jax.nn.sigmoid(z.sum(-1))[:, None, None, None], (z.shape[0], 8, 8, 1))


def test_traversal_and_interpolation_shapes_and_endpoints():
    z0 = jnp.array([0.5, -1.0, 2.0])
    codes = traversal.traversal_codes(z0, [0, 2], jnp.array([-1.0, 0.0, 1.0]))
    assert codes.shape == (2, 3, 3)
    np.testing.assert_allclose(codes[1, :, 2], [-1.0, 0.0, 1.0])
    np.testing.assert_allclose(codes[1, :, :2], np.tile([0.5, -1.0], (3, 1)))
    grid = traversal.latent_traversal(_fake_decode, z0, dims=[0, 1], num_values=5)
    assert grid.shape == (2, 5, 8, 8, 1)
    za, zb = jnp.array([[1.0, 0.0], [0.0, 2.0]]), jnp.array([[0.0, 1.0], [2.0, 0.0]])
    t = jnp.linspace(0, 1, 5)
    for fn in (traversal.lerp, traversal.slerp):
        path = fn(za, zb, t)
        np.testing.assert_allclose(path[:, 0], za, atol=1e-6)
        np.testing.assert_allclose(path[:, -1], zb, atol=1e-6)
    # slerp between equal-norm codes stays on the sphere; lerp cuts inside it.
    np.testing.assert_allclose(jnp.linalg.norm(traversal.slerp(za, zb, t), axis=-1),
                               [[1.0] * 5, [2.0] * 5], rtol=1e-5)
    assert float(jnp.linalg.norm(traversal.lerp(za, zb, t)[0, 2])) < 0.75
    assert traversal.interpolate(_fake_decode, za, zb, 6, "linear").shape == (2, 6, 8, 8, 1)


def test_interpolate_images_with_vae():
    model = make_vae(dict(hidden=(16,), latent_dim=3), INFO)
    batch = _batch(4)

    @jax.jit
    def run(key):
        params = model.training.init(key, batch)
        grid = traversal.interpolate_images(model, params, batch["image"][:2], batch["image"][2:], 5)
        rec = traversal.reconstruct(model, params, {"image": batch["image"][:2]})
        tr = traversal.traverse_image(model, params, batch["image"][0], dims=[0, 2], num_values=4)
        return grid, rec, tr

    grid, rec, tr = run(jax.random.PRNGKey(0))
    assert grid.shape == (2, 5, 8, 8, 1) and tr.shape == (2, 4, 8, 8, 1)
    np.testing.assert_allclose(grid[:, 0], rec, atol=1e-5)
