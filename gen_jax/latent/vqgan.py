"""VQGAN (Esser et al. 2021, "Taming Transformers for High-Resolution Image Synthesis", Sec. 3.2):
the VQ tokenizer of :mod:`gen_jax.latent.vqvae` trained with a perceptual reconstruction loss and
a patch discriminator, ``make_vqgan(config.model, info, stages)``.

The tokenizer is :class:`gen_jax.latent.vqvae.VQTokenizer` (encoder, quantizer with its EMA
codebook / k-means init / dead-code resets in the model state, decoder) unchanged; its params are
the group ``'ae'``. VQGAN replaces the squared error of Eq. 3 by a perceptual loss and adds an
adversarial term (Eq. 4-7)::

    L_rec(x, x_hat) = |x - x_hat|_1 (or ^2) + w_p d_P(x, x_hat)                 per example [B]
    L_VQ            = L_rec + beta ||sg[z_q] - E(x)||^2 [+ ||sg[E(x)] - z_q||^2]    (Eq. 4)
    L_GAN           = hinge: L_D = mean relu(1 - D(x)) + mean relu(1 + D(x_hat)),
                      L_G = -mean D(x_hat)                                         (Eq. 5, hinge form)
    lambda          = ||grad_{G_L} L_rec|| / (||grad_{G_L} L_G|| + delta)          (Eq. 7)
    Q*              = argmin_{E,G,Z} max_D  L_VQ + f_t w_d lambda L_GAN             (Eq. 6)

* ``D`` is the PatchGAN discriminator of Isola et al. 2017
  (:class:`gen_jax.gan.image_networks.PatchDiscriminator`, unconditional; group ``'disc'``,
  optimizer section ``config.optim.disc``), the hinge losses those of
  :mod:`gen_jax.gan.objectives` averaged over all patch logits (the authors' code uses the hinge
  loss for the discriminator and ``-mean D`` for the generator).
* ``d_P`` is an LPIPS-style distance (Zhang et al. 2018, Eq. 1 with unit layer weights,
  :func:`perceptual_distance`) in the layers ``config.model.perceptual_layers`` of *our* shapes
  feature network (:class:`gen_jax.metrics.classifier.FeatureClassifier`, trained by
  ``classifier_shapes``), not VGG: a trained stage ``config.stages.features`` composed at the
  experiment edge and frozen (:attr:`gen_jax.model.Training.frozen` group ``'features'``).
* ``lambda`` is taken at the decoder's last layer ``G_L`` (the kernel of ``conv_out``,
  :func:`gen_jax.latent.vq_networks.last_layer_kernel`) by :func:`adaptive_weight`, without a
  gradient through it, with ``delta = 1e-6`` (paper) and clipped at ``1e4`` (the authors' code).
* ``f_t = [t >= disc_start]``: the adversarial terms of both players are off before the
  discriminator start step (the authors' ``disc_start``; the losses are then exactly the VQ
  tokenizer's, and the discriminator is not evaluated). The loss does not get the step, so the
  model keeps a counter in its state ``{'vqgan': {'step': int32 []}}`` beside the quantizer's
  ``{'vq': ...}``; both phases read it, the tokenizer phase advances it.

One train step: ``Phase('disc', L_D)`` then ``Phase('ae', L_VQ + f_t w_d lambda L_G)`` (the
quantizer's state advances in the latter only), both stateful.

Logged: ``l1``, ``mse``, ``perceptual``, ``commitment``, the quantizer's ``perplexity`` /
``codes_used_batch`` / ``codes_reset`` / ``codes_used_window``, ``g_adv``, ``lambda``,
``rec_grad_norm``, ``gan_grad_norm``, ``disc_active``; for the discriminator ``d_adv``,
``d_real``, ``d_fake``.

Codec (kind ``'ids'``), the VQ-VAE's: ``encode(params, x) -> int32 [B, h, w]``,
``decode(params, ids) -> [B, H, W, C]`` in ``[0, 1]``, reading the codebook from
``params['model_state']`` (:func:`gen_jax.train.loop.eval_params`). Ids outside ``[0, K)``, of
the wrong grid or dtype, and images of the wrong size are refused naming the argument; a bad
discriminator or perceptual setting, a missing or unusable feature stage, with a
``ConfigError`` naming the field.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Literal, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import optax

from gen_jax.checks import DataSpec
from gen_jax.config import ConfigError, typed
from gen_jax.gan import objectives as gan_obj
from gen_jax.gan.image_networks import PatchDiscriminator, patch_logits_shape
from gen_jax.latent.vq_networks import last_layer_kernel
from gen_jax.latent.vqvae import VQTokenizer, VQVAEConfig, eval_state
from gen_jax.metrics.classifier import make_network
from gen_jax.model import Codec, GenerativeModel, Phase, Stage, Training

AE, DISC, FEATURES, COUNTER = "ae", "disc", "features", "vqgan"
STAGE_CONFIG = "config.stages.features.config"


@dataclasses.dataclass(frozen=True)
class VQGANConfig(VQVAEConfig):
    """``config.model`` of VQGAN: the VQ-VAE's fields (:class:`gen_jax.latent.vqvae.VQVAEConfig`:
    quantizer and networks) and:

    Attributes:
      rec_loss: ``'l1'`` (the authors' code) or ``'l2'`` pixel term of ``L_rec``.
      perceptual_weight: ``w_p`` of the perceptual term (0 = none; then no feature stage is read).
      perceptual_layers: the feature network's layers ``d_P`` compares (``conv<i>``, ``hidden``).
      disc_weight: ``w_d``, multiplying the adaptive weight.
      disc_start: the step from which the adversarial terms are on.
      disc_base, disc_layers: PatchGAN width and stride-2 layers.
      disc_norm: ``'instance'`` or ``'none'`` (no batch statistics in this model).
      adaptive_delta: ``delta`` of Eq. 7; adaptive_max: the clip of ``lambda``.
    """

    name: str = "vqgan"
    rec_loss: Literal["l1", "l2"] = "l1"
    perceptual_weight: float = 1.0
    perceptual_layers: tuple[str, ...] = ("conv0", "conv1", "hidden")
    disc_weight: float = 0.8
    disc_start: int = 500
    disc_base: int = 64
    disc_layers: int = 2
    disc_norm: Literal["instance", "none"] = "instance"
    adaptive_delta: float = 1e-6
    adaptive_max: float = 1e4

    def __post_init__(self):
        super().__post_init__()
        self.nonnegative("perceptual_weight", "disc_weight", "disc_start", "disc_layers")
        self.positive("disc_base", "adaptive_delta", "adaptive_max")
        self.require(isinstance(self.disc_start, int), "disc_start", f"must be an int step, got {self.disc_start!r}")
        self.require(self.perceptual_weight == 0 or len(self.perceptual_layers) > 0, "perceptual_layers",
                     "a perceptual loss needs at least one layer of the feature network")


# ----------------------------------------------------------------------------- objectives


def set_path(tree: Mapping, path: Sequence[str], value: Any) -> dict:
    """A copy of the nested dict ``tree`` with the leaf at ``path`` replaced by ``value``."""
    if not path:
        return value
    return {**tree, path[0]: set_path(tree[path[0]], path[1:], value)}


def adaptive_weight(rec_of_last, gan_of_last, last, delta: float = 1e-6, max_weight: float = 1e4):
    """The adaptive weight of the adversarial term (Esser et al. 2021, Eq. 7)::

        lambda = ||grad_{G_L} L_rec|| / (||grad_{G_L} L_GAN|| + delta)

    with ``G_L`` the last layer of the decoder: ``rec_of_last(w)``, ``gan_of_last(w)`` are the two
    losses as functions of that layer's weights ``w = last`` (any pytree), everything else held
    fixed. Returns ``(lambda, rec_norm, gan_norm)``, float32 scalars, ``lambda`` clipped to
    ``[0, max_weight]`` and without gradient (a weight, not a trained quantity)."""
    last = jax.lax.stop_gradient(last)
    rec_norm = optax.tree.norm(jax.grad(rec_of_last)(last))
    gan_norm = optax.tree.norm(jax.grad(gan_of_last)(last))
    lam = jnp.clip(rec_norm / (gan_norm + delta), 0.0, max_weight)
    return jax.lax.stop_gradient(lam), rec_norm, gan_norm


def perceptual_distance(feats_x: Sequence[jax.Array], feats_y: Sequence[jax.Array], eps: float = 1e-10) -> jax.Array:
    """LPIPS-style distance with unit layer weights (Zhang et al. 2018, Eq. 1 with ``w_l = 1``)::

        d(x, y) = sum_l mean_{h, w} || f_l(x)_hw / |f_l(x)_hw| - f_l(y)_hw / |f_l(y)_hw| ||^2

    over layers ``f_l`` (each ``[B, H_l, W_l, C_l]``, or ``[B, C_l]`` for a dense layer: one
    position), channels unit-normalized at each position. Per example ``[B]``."""
    if len(feats_x) != len(feats_y) or not feats_x:
        raise ValueError(f"perceptual_distance: need the same non-empty list of layers, got {len(feats_x)} "
                         f"and {len(feats_y)}")
    total = 0.0
    for fx, fy in zip(feats_x, feats_y):
        if fx.shape != fy.shape:
            raise ValueError(f"perceptual_distance: layer shapes differ, {fx.shape} vs {fy.shape}")
        fx = fx.reshape(fx.shape[0], -1, fx.shape[-1])                                     # [B, P, C]
        fy = fy.reshape(fy.shape[0], -1, fy.shape[-1])
        nx = fx / (jnp.sqrt(jnp.sum(fx * fx, -1, keepdims=True)) + eps)
        ny = fy / (jnp.sqrt(jnp.sum(fy * fy, -1, keepdims=True)) + eps)
        total = total + jnp.mean(jnp.sum(jnp.square(nx - ny), -1), -1)
    return total


# ----------------------------------------------------------------------------- the feature stage


def feature_layers(stage: Optional[Stage], layers: Sequence[str]) -> tuple:
    """``(features(params, x) -> [layer activations], frozen params)`` of the feature stage: the
    outputs of the named submodules of the stage's :class:`~gen_jax.metrics.classifier.FeatureClassifier`
    (convs before their ReLU, the dense ``hidden`` layer), through ``capture_intermediates``.
    ``ConfigError`` naming ``config.stages.features`` when the stage is missing or not such a network."""
    if stage is None:
        raise ConfigError("config.stages.features: VQGAN's perceptual loss (config.model.perceptual_weight > 0) "
                          "needs the trained shapes feature network: config.stages = {'features': {'config': "
                          "'classifier_shapes', 'workdir': 'results/feature_nets/shapes'}}")
    classifier = getattr(stage.model, "classifier", None)
    params = stage.params
    try:
        num_classes = int(params["logits"]["kernel"].shape[-1])
        net = make_network(stage.config.model, num_classes)
    except (KeyError, TypeError, AttributeError, ConfigError) as e:
        raise ConfigError(f"{STAGE_CONFIG}: the feature stage must be a feature classifier (classifier_<dataset>), "
                          f"got model {getattr(stage.model, 'name', '?')!r} ({e})") from None
    if classifier is None:
        raise ConfigError(f"{STAGE_CONFIG}: stage {stage.model.name!r} is not a classifier")
    known = [f"conv{i}" for i in range(len(net.features))] + ["hidden"]
    bad = [name for name in layers if name not in known]
    if bad:
        raise ConfigError(f"config.model.perceptual_layers: {bad} are not layers of the feature network "
                          f"(known: {known})")
    wanted = set(layers)

    def features(p, x):
        _, inter = net.apply({"params": p}, x, capture_intermediates=lambda m, method: m.name in wanted,
                             mutable=["intermediates"])
        return [inter["intermediates"][name]["__call__"][0] for name in layers]

    return features, params


# ----------------------------------------------------------------------------- the model


def make_vqgan(cfg: Any, info: Any, stages: Optional[Mapping[str, Stage]] = None) -> GenerativeModel:
    """VQGAN (module docstring) on a dataset with ``info`` (``image_shape``, ``num_levels``),
    ``stages['features']`` the trained feature network of the perceptual loss: a
    :class:`GenerativeModel` of family ``'latent'`` with two stateful phases and a codec of kind
    ``'ids'``."""
    cfg = typed(VQGANConfig, cfg, "config.model")
    tok = VQTokenizer(cfg, info.image_shape)
    h, w, _ = tok.image_shape
    if min(patch_logits_shape(cfg.disc_layers, h, w)) < 1:
        raise ConfigError(f"config.model.disc_layers: {cfg.disc_layers} stride-2 layers leave no patch logits for "
                          f"{h}x{w} images")
    disc = PatchDiscriminator(base=cfg.disc_base, n_layers=cfg.disc_layers, norm=cfg.disc_norm, conditional=False)
    frozen = {}
    if cfg.perceptual_weight > 0:
        features, frozen[FEATURES] = feature_layers((stages or {}).get(FEATURES), cfg.perceptual_layers)
    last_path = ("decoder", "conv_out", "kernel")

    def init(key, batch):
        ka, kd = jax.random.split(key)
        ae, _ = tok.init(ka, batch["image"])
        return {AE: ae, DISC: disc.init(kd, tok.images(batch["image"]), train=False)["params"]}

    def init_model_state(key, batch):
        ka, _ = jax.random.split(key)
        return {**tok.init(ka, batch["image"])[1], COUNTER: {"step": jnp.zeros((), jnp.int32)}}

    def d_logits(params, x):
        return disc.apply({"params": params[DISC]}, x, train=True).reshape(-1)   # [B h' w'] patch logits

    def rec_terms(params, x, x_hat):
        """``(L_rec [B], metrics)``: the pixel term plus ``w_p`` times the perceptual distance."""
        diff = (x - x_hat).reshape(x.shape[0], -1)
        l1, mse = jnp.mean(jnp.abs(diff), -1), jnp.mean(jnp.square(diff), -1)
        rec = l1 if cfg.rec_loss == "l1" else mse
        m = {"l1": l1, "mse": mse}
        if cfg.perceptual_weight > 0:
            fp = jax.lax.stop_gradient(params[FEATURES])
            p = perceptual_distance(features(fp, x), features(fp, x_hat))
            rec, m["perceptual"] = rec + cfg.perceptual_weight * p, p
        return rec, m

    def d_loss(params, state, batch, key):
        """The hinge discriminator loss on real vs reconstructed images, 0 before ``disc_start``."""
        del key
        x = tok.images(batch["image"])
        active = state[COUNTER]["step"] >= cfg.disc_start

        def on(_):
            x_hat = jax.lax.stop_gradient(tok.forward(params[AE], state, x)[0])
            r, f = d_logits(params, x), d_logits(params, x_hat)
            return gan_obj.d_hinge(r, f), jnp.mean(r), jnp.mean(f)

        zero = jnp.zeros((), jnp.float32)
        adv, r, f = jax.lax.cond(active, on, lambda _: (zero, zero, zero), None)
        return adv, ({"d_adv": adv, "d_real": r, "d_fake": f, "disc_active": active.astype(jnp.float32)}, state)

    def ae_loss(params, state, batch, key):
        """``L_VQ + f_t w_d lambda L_G`` (Eq. 4-7) averaged over the batch; advances the quantizer's
        state and the step counter."""
        x = tok.images(batch["image"])
        step = state[COUNTER]["step"]
        x_hat, out, new_state, m = tok.forward(params[AE], state, x, key)
        rec, rm = rec_terms(params, x, x_hat)
        l_rec = jnp.mean(rec)

        def on(_):
            z_q = jax.lax.stop_gradient(out.z_q)

            def with_last(k):
                ae = set_path(jax.lax.stop_gradient(params[AE]), last_path, k)
                return tok.decode_codes(ae, z_q)

            lam, rn, gn = adaptive_weight(lambda k: jnp.mean(rec_terms(params, x, with_last(k))[0]),
                                          lambda k: gan_obj.g_hinge(d_logits(params, with_last(k))),
                                          last_layer_kernel(params[AE]["decoder"]), cfg.adaptive_delta,
                                          cfg.adaptive_max)
            return gan_obj.g_hinge(d_logits(params, x_hat)), lam, rn, gn

        zero = jnp.zeros((), jnp.float32)
        g_adv, lam, rn, gn = jax.lax.cond(step >= cfg.disc_start, on, lambda _: (zero,) * 4, None)
        loss = l_rec + jnp.mean(out.loss) + cfg.disc_weight * lam * g_adv
        m = {**m, **rm, "commitment": out.commitment, "codebook_loss": out.codebook, "g_adv": g_adv,
             "lambda": lam, "rec_grad_norm": rn, "gan_grad_norm": gn,
             "disc_active": (step >= cfg.disc_start).astype(jnp.float32)}
        return loss, (m, {**new_state, COUNTER: {"step": step + 1}})

    def encode(params, x, cond=None):
        """``x [B, H, W, C]`` in [0, 1] -> int32 ids ``[B, h, w]`` (nearest codes)."""
        del cond
        return tok.encode(params[AE], eval_state(params, cfg.name), x)

    def decode(params, ids, cond=None, key=None):
        """int ids ``[B, h, w]`` in ``[0, K)`` -> ``[B, H, W, C]`` in [0, 1] (``key`` unused)."""
        del cond, key
        return tok.decode(params[AE], eval_state(params, cfg.name), ids)

    phases = (Phase(DISC, loss=d_loss, name="d", stateful=True, optim=DISC),
              Phase(AE, loss=ae_loss, name="ae", stateful=True))
    return GenerativeModel(
        name=cfg.name, family="latent",
        training=Training(init=init, phases=phases, ema_groups=(AE,), frozen=frozen,
                          init_model_state=init_model_state),
        codec=Codec(encode, decode, kind="ids"),
        data=DataSpec(tok.image_shape, int(info.num_levels), 0))
