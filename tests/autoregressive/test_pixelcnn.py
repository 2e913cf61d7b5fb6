"""PixelCNN, gated PixelCNN and Row LSTM PixelRNN: masks, causality by autodiff, normalization
by enumeration, the raster sampler against exact probabilities, and input errors."""
import itertools
import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_jax.autoregressive import image_model as im
from gen_jax.autoregressive.masked_conv import channel_groups, raster_mask
from gen_jax.config import ConfigError

MAKERS = {"pixelcnn": im.make_pixelcnn, "gated_pixelcnn": im.make_gated_pixelcnn, "pixelrnn": im.make_pixelrnn}
BUILDERS = {"pixelcnn": im.build_pixelcnn, "gated_pixelcnn": im.build_gated_pixelcnn, "pixelrnn": im.build_pixelrnn}
# Small networks for 5x5 images. The gated PixelCNN has enough layers for its receptive field
# to cover every earlier sub-pixel of a 5x5 image; the PixelCNN has as many masked 3x3 layers.
CFGS = {
    "pixelcnn": dict(hidden=12, num_blocks=3, first_kernel=3, kernel=3, out_hidden=12),
    "gated_pixelcnn": dict(hidden=12, num_layers=5, first_kernel=3, kernel=3, out_hidden=12),
    "pixelrnn": dict(hidden=6, num_layers=2, kernel=3, out_hidden=12),
}


def info(h, w, c, k, num_classes=3, vocab_size=0, caption_len=0):
    return types.SimpleNamespace(image_shape=(h, w, c), num_levels=k, num_classes=num_classes,
                                 vocab_size=vocab_size, caption_len=caption_len)


def rand_images(key, n, shape, k):
    return jax.random.randint(key, (n,) + tuple(shape), 0, k).astype(jnp.float32) / (k - 1)


# ----------------------------------------------------------------------------- masks


def test_raster_mask_matches_fig4_by_hand():
    g = np.arange(3)  # R, G, B
    a = raster_mask((3, 3), (1, 1), g, g, "A")
    b = raster_mask((3, 3), (1, 1), g, g, "B")
    for m in (a, b):
        assert np.all(m[0] == 1) and np.all(m[1, 0] == 1)          # rows above, left in the row
        assert np.all(m[1, 2] == 0) and np.all(m[2] == 0)          # right in the row, rows below
    # centre tap [in, out]: A: R sees nothing, G sees R, B sees R, G; B adds the diagonal
    np.testing.assert_array_equal(a[1, 1], [[0, 1, 1], [0, 0, 1], [0, 0, 0]])
    np.testing.assert_array_equal(b[1, 1], [[1, 1, 1], [0, 1, 1], [0, 0, 1]])
    np.testing.assert_array_equal(channel_groups(12, 3, splits=2), [0, 0, 1, 1, 2, 2] * 2)
    np.testing.assert_array_equal(channel_groups(4, 1), [0, 0, 0, 0])


# ----------------------------------------------------------------------------- causality


@pytest.fixture(scope="module")
def jacobians():
    """|d logits / d x| summed over the K logits and over 3 random inputs (so that a ReLU of the
    output layers that happens to be inactive at one input hides no path), as a [D, D] matrix
    in (row, col, channel) order, for every model on 5x5x3 and 5x5x1 images, random params."""
    out = {}
    for name, c in itertools.product(MAKERS, (3, 1)):
        parts = BUILDERS[name](CFGS[name], info(5, 5, c, 4))

        @jax.jit
        def jac_fn(key, x, parts=parts):  # init and Jacobian in one program: one compile
            params = parts.model.training.init(key, {"image": x})
            f = lambda xi: parts.logits(params, {"image": xi[None]})[0]
            return jax.vmap(jax.jacfwd(f))(x)  # [3, 5, 5, c, K, 5, 5, c]

        jac = jac_fn(jax.random.PRNGKey(0), rand_images(jax.random.PRNGKey(c), 3, (5, 5, c), 4))
        d = 25 * c
        out[name, c] = np.asarray(jnp.sum(jnp.abs(jnp.moveaxis(jac, 4, 0)), (0, 1))).reshape(d, d)
    return out


@pytest.mark.parametrize("c", [3, 1])
@pytest.mark.parametrize("name", list(MAKERS))
def test_logits_never_see_the_current_or_later_subpixels(jacobians, name, c):
    jac = jacobians[name, c]  # [i, j]: output sub-pixel i, input sub-pixel j
    assert np.all(np.triu(jac) == 0.0), np.argwhere(np.triu(jac) != 0)[:5]
    assert np.count_nonzero(np.tril(jac, -1)) > 0  # the network does see the past


@pytest.mark.parametrize("c", [3, 1])
def test_gated_pixelcnn_has_no_blind_spot(jacobians, c):
    jac = jacobians["gated_pixelcnn", c]
    lower = np.tril_indices(jac.shape[0], -1)
    assert np.all(jac[lower] > 0.0), "every earlier sub-pixel must reach every later one"


def _sub(row, col, ch, c):
    return (row * 5 + col) * c + ch


@pytest.mark.parametrize("c", [3, 1])
def test_plain_pixelcnn_has_the_blind_spot_the_gated_one_fills(jacobians, c):
    # Stacked masked 3x3 kernels never reach (i - 1, j + 2) from (i, j) (2016b Fig. 1).
    i, j = _sub(2, 0, 0, c), _sub(1, 2, 0, c)
    assert jacobians["pixelcnn", c][i, j] == 0.0
    assert jacobians["gated_pixelcnn", c][i, j] > 0.0
    upper_right = [(_sub(r, q, 0, c), _sub(r2, q2, ch, c)) for r, q, r2, q2, ch in
                   itertools.product(range(5), range(5), range(5), range(5), range(c)) if r2 < r and q2 > q]
    blind = sum(jacobians["pixelcnn", c][a, b] == 0.0 for a, b in upper_right)
    assert blind > 0 and all(jacobians["gated_pixelcnn", c][a, b] > 0 for a, b in upper_right)


# ----------------------------------------------------------------------------- exact mass and sampler

TINY = info(2, 2, 1, 3)  # D = 4, K = 3: 81 images
TINY_CFGS = {name: dict(cfg, hidden=4, out_hidden=4) for name, cfg in CFGS.items()}


GRID = np.array(list(itertools.product(range(3), repeat=4)), np.float32).reshape(81, 2, 2, 1) / 2.0
NUM_SAMPLES = 4000


@pytest.fixture(scope="module")
def tiny():
    """Per model, from one compiled program: log P of all 81 images, the loss and its bpd
    metric on the first 8, and 4000 samples, with random params scaled by 4 (sharper and
    strongly dependent conditionals, so that a wrong sampler is detectable)."""
    out = {}
    for name in MAKERS:
        model = MAKERS[name](TINY_CFGS[name], TINY)

        @jax.jit
        def run(key, model=model):
            k_init, k_loss, k_sample = jax.random.split(key, 3)
            params = model.training.init(k_init, {"image": jnp.asarray(GRID[:2])})
            params = jax.tree.map(lambda v: 4.0 * v, params)
            lp = model.likelihood.log_prob(params, {"image": jnp.asarray(GRID)}, None)
            loss, metrics = model.training.phases[0].loss(params, {"image": jnp.asarray(GRID[:8])}, k_loss)
            return lp, loss, metrics["bpd"], model.sampler.sample(params, k_sample, NUM_SAMPLES)

        lp, loss, bpd, samples = run(jax.random.PRNGKey(3))
        out[name] = dict(log_p=np.asarray(lp, np.float64) - 4 * math.log(3.0), loss=float(loss),
                         bpd=np.asarray(bpd), samples=np.asarray(samples))
    return out


@pytest.mark.parametrize("name", list(MAKERS))
def test_exact_mass_sums_to_one_over_all_images(tiny, name):
    assert abs(np.exp(tiny[name]["log_p"]).sum() - 1.0) < 1e-5


@pytest.mark.parametrize("name", list(MAKERS))
def test_loss_is_the_mean_nll_per_dim_of_log_prob(tiny, name):
    log_p = tiny[name]["log_p"][:8]
    np.testing.assert_allclose(tiny[name]["loss"], -np.mean(log_p) / 4, rtol=1e-5)
    np.testing.assert_allclose(tiny[name]["bpd"], -log_p / (4 * math.log(2)), rtol=1e-5)


@pytest.mark.parametrize("name", list(MAKERS))
def test_sampler_draws_from_the_exact_distribution(tiny, name):
    x, log_p, n = tiny[name]["samples"], tiny[name]["log_p"], NUM_SAMPLES
    assert x.shape == (n, 2, 2, 1) and x.dtype == np.float32
    lev = np.rint(x * 2).astype(int).reshape(n, 4)
    np.testing.assert_allclose(x * 2, lev.reshape(x.shape), atol=1e-6)  # on the levels
    idx = lev @ (3 ** np.arange(3, -1, -1))  # same order as GRID
    emp = np.bincount(idx, minlength=81) / n
    p = np.exp(log_p)
    # E[TV] <= 1/2 sum sqrt(p (1 - p) / n); TV moves by <= 1/n per sample, so (McDiarmid)
    # P(TV > E[TV] + t) <= exp(-2 n t^2) = 1e-6 for the t below.
    tol = 0.5 * np.sum(np.sqrt(p * (1 - p) / n)) + math.sqrt(math.log(1e6) / (2 * n))
    tv = 0.5 * np.abs(emp - p).sum()
    assert tv < tol, (tv, tol)
    # The test can fail: sampling each sub-pixel from its marginal (ignoring the context) is
    # detectably wrong for these params.
    digit = lambda i, d: (i // 3 ** (3 - d)) % 3
    marg = [np.array([p[digit(np.arange(81), d) == v].sum() for v in range(3)]) for d in range(4)]
    indep = np.array([np.prod([marg[d][digit(i, d)] for d in range(4)]) for i in range(81)])
    assert 0.5 * np.abs(indep - p).sum() > 2 * tol


# ----------------------------------------------------------------------------- conditioning


def test_gated_conditioning_changes_the_logits_and_samples_from_cond():
    inf = info(3, 3, 3, 4, num_classes=3, vocab_size=9, caption_len=4)
    x = rand_images(jax.random.PRNGKey(0), 2, (3, 3, 3), 4)
    x2 = jnp.concatenate([x, x])
    tokens = jnp.array([[1, 2, 0, 0], [3, 4, 5, 0]], jnp.int32)
    small = dict(hidden=3, num_layers=2, first_kernel=3, kernel=3, out_hidden=3)
    lab_model = im.make_gated_pixelcnn(dict(small, conditioning="label"), inf)
    cap_model = im.make_gated_pixelcnn(dict(small, conditioning="caption", cond_dim=4), inf)
    assert lab_model.conditional and lab_model.conditioning.key == "label"
    assert cap_model.conditional and cap_model.conditioning.key == "caption_tokens"
    np.testing.assert_array_equal(lab_model.conditioning.draw(5)["label"], [0, 1, 2, 0, 1])
    drawn = cap_model.conditioning.draw(3, {"caption_tokens": np.asarray(tokens), "label": np.array([1, 2])})
    np.testing.assert_array_equal(drawn["caption_tokens"], np.asarray(tokens)[[0, 1, 0]])
    np.testing.assert_array_equal(drawn["label"], [1, 2, 1])

    @jax.jit
    def run(key):
        pl = lab_model.training.init(key, {"image": x, "label": jnp.array([0, 1])})
        pc = cap_model.training.init(key, {"image": x, "caption_tokens": tokens})
        lab = lab_model.likelihood.log_prob(pl, {"image": x2, "label": jnp.array([0, 1, 2, 1])}, None)
        cap = cap_model.likelihood.log_prob(pc, {"image": x2, "caption_tokens": jnp.concatenate([tokens, tokens[::-1]])},
                                            None)
        return lab, cap

    lab, cap = map(np.asarray, run(jax.random.PRNGKey(1)))
    assert lab[0] != lab[2] and lab[1] == lab[3]  # only the changed label changes log P
    assert np.all(cap[:2] != cap[2:])
    pl = jax.eval_shape(lab_model.training.init, jax.random.PRNGKey(1), {"image": x, "label": jnp.array([0, 1])})
    with pytest.raises(ValueError, match="label"):
        lab_model.sampler.sample(pl, jax.random.PRNGKey(2), 2)
    with pytest.raises(ValueError, match="caption_tokens"):
        cap_model.likelihood.log_prob(pl, {"image": x}, None)


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("name,cfg,shape,match", [
    ("pixelcnn", dict(first_kernel=7), (3, 3, 1), "config.model.first_kernel"),
    ("gated_pixelcnn", dict(kernel=5, first_kernel=3), (2, 8, 1), "config.model.kernel"),
    ("pixelrnn", dict(kernel=9), (8, 4, 1), "config.model.kernel"),
    ("pixelcnn", dict(hidden=9, first_kernel=3), (4, 4, 3), "config.model.hidden"),  # 2h must split into 2 x 3
    ("gated_pixelcnn", dict(hidden=8, first_kernel=3), (4, 4, 3), "config.model.hidden"),
    ("pixelrnn", dict(hidden=6, out_hidden=7), (4, 4, 3), "config.model.out_hidden"),
    ("pixelcnn", dict(kernel=4), (8, 8, 1), "config.model.kernel"),
    ("gated_pixelcnn", dict(conditioning="text"), (8, 8, 1), "config.model.conditioning"),
])
def test_unsupported_configs_fail_when_the_bundle_is_built(name, cfg, shape, match):
    with pytest.raises(ConfigError, match=match):  # a ValueError naming config.model.<field>
        MAKERS[name](cfg, info(*shape, 4))


@pytest.mark.parametrize("name", list(MAKERS))
def test_wrong_image_shapes_are_rejected(name):
    model = MAKERS[name](TINY_CFGS[name], TINY)
    assert model.sampler.kind == "image" and model.likelihood[1:] == ("exact", "dim", None)
    assert not model.conditional
    params = jax.eval_shape(model.training.init, jax.random.PRNGKey(0), {"image": jnp.zeros((2, 2, 2, 1))})
    with pytest.raises(ValueError, match=r"log_prob batch\['image'\] must be \[B, 2, 2, 1\]"):
        model.likelihood.log_prob(params, {"image": jnp.zeros((3, 2, 2, 3))}, None)
    with pytest.raises(ValueError, match=r"init batch\['image'\]"):
        model.training.init(jax.random.PRNGKey(0), {"image": jnp.zeros((3, 4, 4, 1))})
    with pytest.raises(ValueError, match=r"loss batch\['image'\]"):
        model.training.phases[0].loss(params, {"image": jnp.zeros((2, 2, 1))}, jax.random.PRNGKey(0))
