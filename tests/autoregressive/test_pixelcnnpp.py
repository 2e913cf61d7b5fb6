"""PixelCNN++ network and bundle (Salimans et al. 2017): causality and the absence of a blind
spot by autodiff, exact normalization of the whole model over every image of a tiny space,
sampler frequencies against the model's own mass function, the paper-scale parameter count
against a hand count of the architecture, and input / config errors."""
import dataclasses
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from gen_jax.distributions import logistic_mixture as lm
from gen_jax.autoregressive.pixelcnnpp import PixelCNNPP
from gen_jax.autoregressive.pixelcnnpp_model import PixelCNNPPConfig, build_pixelcnnpp, make_pixelcnnpp
from gen_jax.config import ConfigError, typed


@dataclasses.dataclass(frozen=True)
class Info:
    image_shape: tuple
    num_levels: int
    num_classes: int = 10
    name: str = "test"


def _count(tree):
    return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


def _random_params(init, *args, seed=0, out_gain=1.0):
    """Random params with the shapes of ``init(*args)`` drawn on the host (nothing to compile):
    weight-norm gains ``g`` in [0.5, 1.5], directions ``v`` N(0, 1), plain kernels
    N(0, 1 / fan_in), biases and embeddings N(0, 0.1^2); the output layer's gain or kernel is
    scaled by ``out_gain`` (sharper scales, stronger coupling than at init)."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(init, *args)

    def draw(path, leaf):
        name = jax.tree_util.keystr(path)
        gain = out_gain if "'out'" in name else 1.0
        if "'g'" in name:
            v = rng.uniform(0.5, 1.5, leaf.shape) * gain
        elif "'kernel'" in name:
            v = rng.normal(size=leaf.shape) * gain / math.sqrt(math.prod(leaf.shape[:-1]))
        elif "'v'" in name:
            v = rng.normal(size=leaf.shape)
        else:  # biases 'b', label embeddings
            v = 0.1 * rng.normal(size=leaf.shape)
        return jnp.asarray(v, leaf.dtype)

    return jax.tree_util.tree_map_with_path(draw, shapes)


# ----------------------------------------------------------------------------------------
# Causality: d raw[i] / d x[j] == 0 exactly for j >= i (raster order, all channels), != 0
# for j < i. A 4x4x3 net with 3 stages (two down- and up-samplings), class-conditional:
# every earlier pixel is within its reach.
# ----------------------------------------------------------------------------------------

CAUSAL_SHAPE = (4, 4, 3)


@pytest.fixture(scope="module")
def dependence():
    """``dep[i, j]`` = max over channels of |d <v_i, raw[i]> / d x[j]| for a random cotangent
    ``v_i`` on output pixel ``i`` only (a generic linear functional of all P outputs there);
    pixels ``i, j`` in raster order, ``[HW, HW]``."""
    h, w, c = CAUSAL_SHAPE
    n = h * w
    # Plain convs (weight norm rescales output channels; it cannot change which inputs they read).
    net = PixelCNNPP(out_features=lm.num_params(2, c), nr_filters=8, nr_resnet=1, num_stages=3, dropout=0.5,
                     num_classes=3, weight_norm=False)
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.uniform(-1.0, 1.0, (1, h, w, c)), jnp.float32)
    label = jnp.array([2], jnp.int32)
    params = _random_params(net.init, jax.random.PRNGKey(0), x, label)
    v = rng.normal(size=(n, h, w, lm.num_params(2, c))) * np.eye(n).reshape(n, h, w, 1)  # pixel i only

    def program(params, v):
        y, vjp = jax.vjp(lambda x: net.apply(params, x, label)[0], x)  # y: [H, W, P]
        g = jax.vmap(lambda vi: vjp(vi)[0])(v)  # [n, 1, H, W, C]
        return jnp.max(jnp.abs(g.reshape(n, n, c)), axis=-1)

    return jax.device_get(jax.jit(program)(params, jnp.asarray(v, jnp.float32)))


def test_output_at_a_pixel_ignores_it_and_everything_after_it(dependence):
    n = dependence.shape[0]
    later = np.triu(np.ones((n, n), bool))  # j >= i (the pixel itself, all channels, included)
    assert np.all(dependence[later] == 0.0), np.argwhere(later & (dependence != 0))[:5]


def test_no_blind_spot_every_earlier_pixel_is_seen(dependence):
    n = dependence.shape[0]
    earlier = np.tril(np.ones((n, n), bool), -1)
    assert np.all(dependence[earlier] > 0.0), np.argwhere(earlier & (dependence == 0))[:5]


# ----------------------------------------------------------------------------------------
# The bundle on 2x2x3 images with K = 2 levels (4096 images), class-conditional, dropout.
# ----------------------------------------------------------------------------------------

TINY = Info((2, 2, 3), 2, num_classes=3)
TINY_CFG = dict(nr_resnet=1, nr_filters=8, num_stages=2, nr_logistic_mix=2, dropout=0.5, conditional=True)
D_LOG_K = 12 * math.log(2.0)


def _all_images(shape):
    """Every image of ``shape`` with 2 levels, ``[2^D, *shape]``, in binary-code order."""
    d = math.prod(shape)
    return np.array(list(itertools.product(range(2), repeat=d)), np.float32).reshape((-1,) + shape)


def _codes(images):
    d = math.prod(images.shape[1:])
    return images.reshape(len(images), d).astype(int) @ (2 ** np.arange(d - 1, -1, -1))


@pytest.fixture(scope="module")
def tiny():
    """(model, params, log_prob of all 4096 images with label 0, log_prob of the first 8 with
    label 1, the loss on those 8 (label 1) under two dropout keys): one compiled program."""
    model = make_pixelcnnpp(TINY_CFG, TINY)
    images = jnp.asarray(_all_images(TINY.image_shape))
    n = images.shape[0]

    params = _random_params(model.training.init, jax.random.PRNGKey(0),
                            {"image": images[:4], "label": jnp.zeros(4, jnp.int32)}, out_gain=4.0)

    def program(params, key):
        batch = {"image": images[:8], "label": jnp.ones(8, jnp.int32)}
        lp = model.likelihood.log_prob(params, {"image": jnp.concatenate([images, batch["image"]]),
                                                "label": jnp.concatenate([jnp.zeros(n, jnp.int32), batch["label"]])},
                                       key)
        losses = jax.vmap(lambda k: model.training.phases[0].loss(params, batch, k))(jax.random.split(key, 2))
        return params, lp[:n], lp[n:], losses

    return (model,) + tuple(jax.device_get(jax.jit(program)(params, jax.random.PRNGKey(0))))


def test_model_mass_sums_to_one_over_every_image(tiny):
    """sum over all K^D images of P(image | label) = 1: the chain rule with the causal net and
    the coupled mixture is a normalized distribution (a net that peeked at pixel i would not be)."""
    _, _, lp0, lp1, _ = tiny
    np.testing.assert_allclose(np.exp(np.asarray(lp0, np.float64) - D_LOG_K).sum(), 1.0, atol=1e-5)
    assert np.abs(lp0[:8] - lp1).max() > 1e-3  # the label changes the distribution


def test_loss_is_the_nll_with_dropout_and_log_prob_is_deterministic(tiny):
    _, _, lp0, lp1, (loss, metrics) = tiny
    assert metrics["bpd"].shape == (2, 8) and metrics["nll"].shape == (2, 8)
    np.testing.assert_allclose(loss, np.mean(metrics["nll"], axis=1), rtol=1e-6)
    np.testing.assert_allclose(metrics["bpd"], metrics["nll"] / D_LOG_K, rtol=1e-6)
    assert abs(float(loss[0]) - float(loss[1])) > 1e-4  # different dropout masks
    assert np.abs(metrics["nll"][0] + lp1 - D_LOG_K).max() > 1e-4  # dropout is on in the loss only


SAMPLER = Info((1, 2, 3), 2, num_classes=2)
NUM_DRAWS = 4000


@pytest.fixture(scope="module")
def draws():
    """A 1x2x3 model (64 images, one stage, plain convs), label 1: log P of every image and
    4000 samples."""
    model = make_pixelcnnpp(dict(TINY_CFG, num_stages=1, weight_norm=False), SAMPLER)
    images = jnp.asarray(_all_images(SAMPLER.image_shape))

    params = _random_params(model.training.init, jax.random.PRNGKey(0),
                            {"image": images[:2], "label": jnp.zeros(2, jnp.int32)}, seed=3, out_gain=4.0)

    def program(params, key):
        lp = model.likelihood.log_prob(params, {"image": images, "label": jnp.ones(len(images), jnp.int32)}, key)
        x = model.sampler.sample(params, jax.random.fold_in(key, 1), NUM_DRAWS,
                                 {"label": jnp.ones(NUM_DRAWS, jnp.int32)})
        return lp, x

    return jax.device_get(jax.jit(program)(params, jax.random.PRNGKey(3)))


def test_sampler_draws_from_the_model_mass_function(draws):
    """Raster-scan samples against exp(log P(image | label)) over all 64 images (Pearson
    chi-square; bins with expected count < 5 pooled; fixed seed)."""
    lp, x = draws
    assert x.shape == (NUM_DRAWS, 1, 2, 3) and x.dtype == np.float32 and set(np.unique(x)) <= {0.0, 1.0}
    p = np.exp(np.asarray(lp, np.float64) - 6 * math.log(2.0))
    np.testing.assert_allclose(p.sum(), 1.0, atol=1e-5)
    counts = np.bincount(_codes(x), minlength=64)
    small = p * NUM_DRAWS < 5
    obs = np.append(counts[~small], counts[small].sum())
    exp = np.append(NUM_DRAWS * p[~small], NUM_DRAWS * p[small].sum())
    assert (~small).sum() > 10 and p.max() < 0.5
    assert stats.chi2.sf(np.sum((obs - exp) ** 2 / exp), len(obs) - 1) > 1e-4


# ----------------------------------------------------------------------------------------
# Paper scale (shapes only) and the hand count of the architecture.
# ----------------------------------------------------------------------------------------


def hand_count(c, f, r, s, m, num_classes=0, weight_norm=True):
    """Parameters of PixelCNN++ counted from the architecture: a weight-normalized conv has
    ``kh kw in out`` weights + ``out`` gains + ``out`` biases."""
    conv = lambda kh, kw, i, o: kh * kw * i * o + o + (o if weight_norm else 0)
    emb = num_classes * 2 * f
    first = conv(2, 3, c + 1, f) + conv(1, 3, c + 1, f) + conv(2, 1, c + 1, f)  # image + ones channel
    u_block = conv(2, 3, 2 * f, f) + conv(2, 3, 2 * f, 2 * f) + emb  # concat_elu doubles inputs
    ul_block = conv(2, 2, 2 * f, f) + conv(1, 1, 2 * f, f) + conv(2, 2, 2 * f, 2 * f) + emb  # a = u
    u_down = u_block + conv(1, 1, 2 * f, f)  # a = u short-cut
    ul_down = conv(2, 2, 2 * f, f) + conv(1, 1, 4 * f, f) + conv(2, 2, 2 * f, 2 * f) + emb  # a = [u, ul]
    resample = 2 * (s - 1) * (conv(2, 3, f, f) + conv(2, 2, f, f))  # strided convs + transposed convs
    down_blocks = r + (s - 1) * (r + 1)
    out = conv(1, 1, f, m * (1 + 2 * c + c * (c - 1) // 2))
    return first + s * r * (u_block + ul_block) + resample + down_blocks * (u_down + ul_down) + out


def test_cifar10_config_is_paper_scale():
    from experiments.configs.pixelcnnpp_cifar10 import get_config

    c = get_config()
    assert c.dataset.name == "cifar10" and c.model.name == "pixelcnnpp"
    cfg = typed(PixelCNNPPConfig, c.model)  # the config file declares what differs from these defaults
    assert (cfg.nr_resnet, cfg.nr_filters, cfg.nr_logistic_mix, cfg.num_stages, cfg.dropout) == (5, 160, 10, 3, 0.5)
    parts = build_pixelcnnpp(cfg, Info((32, 32, 3), 256))
    batch = {"image": jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)}
    params = jax.eval_shape(parts.model.training.init, jax.random.PRNGKey(0), batch)
    n = _count(params)
    assert n == hand_count(3, 160, 5, 3, 10) == 53_659_080  # the paper: "about 53M"
    raw = jax.eval_shape(parts.raw, params, batch["image"])
    assert raw.shape == (2, 32, 32, 100)


def test_parameter_count_matches_the_hand_count():
    """A config unlike the paper's: 2 channels, 4 stages, class-conditional, no weight norm."""
    shape, kw = (8, 8, 2), dict(nr_resnet=1, nr_filters=12, num_stages=4, nr_logistic_mix=3, conditional=True,
                                weight_norm=False)
    model = make_pixelcnnpp(kw, Info(shape, 17))
    batch = {"image": jax.ShapeDtypeStruct((2,) + shape, jnp.float32), "label": jax.ShapeDtypeStruct((2,), jnp.int32)}
    n = _count(jax.eval_shape(model.training.init, jax.random.PRNGKey(0), batch))
    full = PixelCNNPPConfig(**kw)
    assert n == hand_count(shape[2], full.nr_filters, full.nr_resnet, full.num_stages, full.nr_logistic_mix,
                           10 if full.conditional else 0, full.weight_norm)


# ----------------------------------------------------------------------------------------
# Errors.
# ----------------------------------------------------------------------------------------


def test_bad_inputs_and_configs_raise_clear_errors(tiny):
    model, params = tiny[0], tiny[1]
    assert model.sampler.kind == "image" and model.likelihood[1:] == ("exact", "dim", None)
    assert model.conditioning.keys == ("label",) and model.conditioning.num_classes == 3
    np.testing.assert_array_equal(model.conditioning.draw(4)["label"], [0, 1, 2, 0])
    with pytest.raises(ConfigError, match=r"config.model.num_stages=3: 3 stages downsample by 4, so H and W must be "
                                          r"divisible by 4; got image shape \(6, 6, 1\)"):
        make_pixelcnnpp({"num_stages": 3}, Info((6, 6, 1), 17))
    with pytest.raises(ValueError, match=r"PixelCNNPP num_stages=2 .*got image shape \(5, 4, 1\)"):
        PixelCNNPP(out_features=3, nr_filters=4, num_stages=2).init(jax.random.PRNGKey(0), jnp.zeros((1, 5, 4, 1)))
    img = np.zeros((2, 2, 2, 3), np.float32)  # TINY images
    lab = np.zeros(2, np.int32)
    bad = img.copy()
    bad[1, 0, 1, 2] = 1.5
    with pytest.raises(ValueError, match=r"log_prob batch\['image'\]: 1 value\(s\) outside \[0, 1\].*\(2, 2, 2, 3\)"):
        model.likelihood.log_prob(params, {"image": bad, "label": lab}, None)
    with pytest.raises(ValueError, match=r"loss batch\['image'\] must be \[B, 2, 2, 3\], got \(2, 2, 2\)"):
        model.training.phases[0].loss(params, {"image": img[..., 0], "label": lab}, jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="sample: the model is class-conditional"):
        model.sampler.sample(params, jax.random.PRNGKey(0), 2)
    with pytest.raises(ConfigError, match="config.model.dropout"):
        make_pixelcnnpp({"dropout": 1.0}, TINY)
    with pytest.raises(ConfigError, match="config.model.nr_filters"):
        make_pixelcnnpp({"nr_filters": 0}, TINY)
    with pytest.raises(ConfigError, match="config.model.nr_resnets: unknown field"):
        make_pixelcnnpp({"nr_resnets": 2}, TINY)
    with pytest.raises(ConfigError, match="config.model.conditional"):
        make_pixelcnnpp({"conditional": True}, Info((8, 8, 1), 17, num_classes=0))
