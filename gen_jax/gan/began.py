"""BEGAN: Boundary Equilibrium GAN (Berthelot et al. 2017), ``make_began(config.model, info)``.

The discriminator is an autoencoder ``D(v) = dec(enc(v))`` (Sec. 3.3, Fig. 1) and its loss on an
image is the pixel-wise L1 reconstruction error (Eq. 1, ``eta = 1``)::

    L(v) = mean |v - D(v)|                             per example  [B]
    L_D = L(x) - k_t L(G(z_D))                         (Eq. 4)
    L_G = L(G(z_G))
    k_{t+1} = clip(k_t + lambda_k (gamma L(x) - L(G(z_G))), 0, 1)
    M_global = L(x) + |gamma L(x) - L(G(z_G))|         (Sec. 3.4.1)

with ``L`` the batch means. The losses, the ``k`` control and ``M_global`` are
:mod:`gen_jax.gan.objectives` (``began_recon_loss``, ``began_losses``, ``began_k_update``,
``began_convergence``, ``check_began_gamma``).

One train step is the paper's simultaneous update (its training loop, Sec. 3.4): one stateful
phase ``Phase(('gen', 'disc'))`` computes ``G(z_D)``, ``G(z_G)`` and the three reconstruction
losses in one forward pass at ``(theta_D_t, theta_G_t, k_t)``; the discriminator descends
``L_D``, the generator ``L_G`` (each w.r.t. its own params, each with its optimizer section
``config.optim.disc`` / ``config.optim.gen``), and ``k_{t+1}`` is computed from that same pass's
``L(x)`` and ``L(G(z_G))``. ``k`` is non-trained state: the model state ``{'began': {'k': ()}}``
(``Training.init_model_state``; initial value ``config.model.k_init``, the paper's ``k_0 = 0``).

Logged every step (batch means): ``L_real`` = ``L(x)``, ``L_fake`` = ``L(G(z_G))`` (the value the
``k`` update and ``M_global`` use), ``L_fake_d`` = ``L(G(z_D))``, ``k`` = ``k_t`` (the value this
step's ``L_D`` used), ``k_next`` = ``k_{t+1}``, ``M_global``; and the trainer's ``loss/disc``
= ``L_D``, ``loss/gen`` = ``L_G``.

Networks (Fig. 1, ELU, 3x3 convs, sized for small images): with ``n = config.model.base`` and
``S = config.model.scales`` resolutions (2 for 8x8: 8x8 and 4x4),

* encoder: ``conv(n)``, then per resolution ``i = 1..S`` two ``conv(i n)``, and between
  resolutions a stride-2 ``conv((i + 1) n)`` (sub-sampling, channels growing linearly), then
  ``Dense(h_dim)`` of the flattened ``[H / 2^(S-1), W / 2^(S-1), S n]`` map (no activation);
* decoder: ``Dense`` to ``[H / 2^(S-1), W / 2^(S-1), n]``, per resolution two ``conv(n)``, a
  nearest-neighbour 2x upsampling between resolutions, then ``conv(C)``: linear for the
  discriminator's decoder, ``tanh`` for the generator (same architecture, own weights), so
  ``G(z)`` lies in ``[-1, 1]`` (the images the networks see are ``2 x - 1``).

On 8x8 digits the paper's ``gamma = 0.5`` left ``k`` clipped at 0 (``L(G(z)) > gamma L(x)``)
for thousands of steps, and with ``k = 0`` the discriminator only autoencodes real data, so the
generator collapsed onto one image it reconstructs well; ``gamma = 1`` (the most diverse
setting, Sec. 3.2) trains (``experiments/configs/began_digits.py``).

``z ~ U[-1, 1]^{z_dim}`` (Sec. 3.3). Real images are the data's levels moved by uniform noise of
one level's width (as :mod:`gen_jax.gan.model`). The L1 losses are measured in the networks'
``[-1, 1]`` scale.

Shapes: ``batch['image']`` ``[B, H, W, C]`` in [0, 1]; ``sample(params, key, num) -> [num, H, W, C]``
in [0, 1] (``(G(z) + 1) / 2``). Codec: ``decode(params, z [N, Z]) -> [N, H, W, C]`` (the sampler's
map), ``encode(params, x) -> z [N, Z]`` by inversion (Adam on ``|decode(z) - x|^2``,
:func:`gen_jax.gan.latent_tools.invert`).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from gen_jax.checks import DataSpec
from gen_jax.config import Checked, ConfigError, typed
from gen_jax.gan import latent_tools
from gen_jax.gan import objectives as obj
from gen_jax.model import Codec, GenerativeModel, Phase, Sampler, Training, check_image_batch

GEN, DISC, STATE = "gen", "disc", "began"


@dataclasses.dataclass(frozen=True)
class BEGANConfig(Checked):
    """``config.model`` of BEGAN.

    Attributes:
      name: model name (tables, file names).
      z_dim: width of ``z ~ U[-1, 1]^{z_dim}`` (the paper's ``N_z``).
      h_dim: width of the discriminator's embedding ``h`` (the paper's ``N_h``).
      base: conv channels ``n`` (Fig. 1).
      scales: resolutions of the encoder / decoder (image H and W divisible by ``2^(scales-1)``).
      gamma: the diversity ratio ``gamma = E[L(G(z))] / E[L(x)]`` in ``(0, 1]`` (Sec. 3.2).
      lambda_k: the proportional gain of the ``k`` control (0.001 in the paper).
      k_init: ``k_0`` in ``[0, 1]`` (0 in the paper).
      invert_steps: Adam steps of the codec's ``encode`` (inversion).
    """

    name: str = "began"
    z_dim: int = 32
    h_dim: int = 32
    base: int = 32
    scales: int = 2
    gamma: float = 0.5
    lambda_k: float = 0.001
    k_init: float = 0.0
    invert_steps: int = 1000

    def __post_init__(self):
        self.positive("z_dim", "h_dim", "base", "scales", "invert_steps")
        self.nonnegative("lambda_k")
        self.in_range("k_init", 0.0, 1.0)
        try:
            obj.check_began_gamma(self.gamma, f"{self.PATH}.gamma")
        except ValueError as e:
            raise ConfigError(str(e)) from None


def _conv(ch: int, name: str, stride: int = 1):
    return nn.Conv(ch, (3, 3), strides=stride, padding="SAME", name=name)


class Encoder(nn.Module):
    """``x [B, H, W, C] -> h [B, h_dim]`` (Berthelot et al. 2017, Fig. 1, left)."""

    base: int
    scales: int
    h_dim: int

    @nn.compact
    def __call__(self, x):
        h = nn.elu(_conv(self.base, "conv_in")(x))
        for i in range(1, self.scales + 1):
            for j in range(2):
                h = nn.elu(_conv(i * self.base, f"conv_{i}_{j}")(h))
            if i < self.scales:
                h = nn.elu(_conv((i + 1) * self.base, f"down_{i}", stride=2)(h))
        return nn.Dense(self.h_dim, name="embed")(h.reshape(h.shape[0], -1))


class Decoder(nn.Module):
    """``h [B, h_dim] -> [B, H, W, C]`` (Berthelot et al. 2017, Fig. 1, right); ``tanh`` output
    (into ``[-1, 1]``) for the generator, linear for the discriminator's decoder."""

    image_shape: tuple
    base: int
    scales: int
    tanh: bool = False

    @nn.compact
    def __call__(self, h):
        hh, ww, c = self.image_shape
        f = 2 ** (self.scales - 1)
        x = nn.Dense(hh // f * (ww // f) * self.base, name="project")(h)
        x = x.reshape(h.shape[0], hh // f, ww // f, self.base)
        for i in range(1, self.scales + 1):
            for j in range(2):
                x = nn.elu(_conv(self.base, f"conv_{i}_{j}")(x))
            if i < self.scales:
                x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)  # nearest-neighbour 2x
        x = _conv(c, "conv_out")(x)
        return jnp.tanh(x) if self.tanh else x


class AutoencoderDiscriminator(nn.Module):
    """BEGAN's discriminator ``D(v) = dec(enc(v))``: ``[B, H, W, C] -> [B, H, W, C]``."""

    image_shape: tuple
    base: int
    scales: int
    h_dim: int

    @nn.compact
    def __call__(self, v):
        h = Encoder(self.base, self.scales, self.h_dim, name="encoder")(v)
        return Decoder(self.image_shape, self.base, self.scales, name="decoder")(h)


def _check_shape(image_shape, scales: int) -> tuple:
    shape = tuple(int(s) for s in image_shape)
    f = 2 ** (scales - 1)
    if len(shape) != 3 or shape[0] % f or shape[1] % f:
        raise ConfigError(f"config.model.scales: {scales} resolutions need H and W divisible by {f}; "
                          f"the dataset's image_shape is {shape}")
    return shape


def make_began(cfg: Any, info: Any) -> GenerativeModel:
    """BEGAN (module docstring) on a dataset with ``info`` (``image_shape``, ``num_levels``): a
    :class:`GenerativeModel` of family ``'gan'`` with a sampler and a codec (no likelihood)."""
    cfg = typed(BEGANConfig, cfg, "config.model")
    image_shape = _check_shape(info.image_shape, cfg.scales)
    levels = int(info.num_levels)
    g = Decoder(image_shape, cfg.base, cfg.scales, tanh=True)
    d = AutoencoderDiscriminator(image_shape, cfg.base, cfg.scales, cfg.h_dim)

    def draw_z(key, n):
        return jax.random.uniform(key, (n, cfg.z_dim), jnp.float32, -1.0, 1.0)

    def real_images(batch, key):
        """``batch['image']`` dequantized within one level, as ``[-1, 1]`` images ``[B, H, W, C]``."""
        x = batch["image"]
        check_image_batch(x, image_shape)
        u = jax.random.uniform(key, x.shape, x.dtype, -0.5, 0.5)
        return 2.0 * jnp.clip(x + u / (levels - 1), 0.0, 1.0) - 1.0

    def init(key, batch):
        x = batch["image"]
        check_image_batch(x, image_shape)
        kg, kd = jax.random.split(key)
        return {GEN: g.init(kg, draw_z(kg, x.shape[0]))["params"], DISC: d.init(kd, 2.0 * x - 1.0)["params"]}

    def init_model_state(key, batch):
        del key, batch
        return {STATE: {"k": jnp.asarray(cfg.k_init, jnp.float32)}}

    def losses(params, state, batch, key):
        """One forward pass at ``(theta_G_t, theta_D_t, k_t)``: ``({'disc': L_D, 'gen': L_G},
        (metrics, {'began': {'k': k_{t+1}}}))`` (Eq. 1-4)."""
        kx, kd, kg = jax.random.split(key, 3)
        real = real_images(batch, kx)
        b = real.shape[0]
        fakes = g.apply({"params": params[GEN]}, jnp.concatenate([draw_z(kd, b), draw_z(kg, b)]))
        v = jnp.concatenate([real, fakes])                      # [3B, H, W, C]: x, G(z_D), G(z_G)
        rec = obj.began_recon_loss(v, d.apply({"params": params[DISC]}, v))
        l_real, l_fake_d, l_fake_g = rec[:b], rec[b:2 * b], rec[2 * b:]
        k = state[STATE]["k"]
        d_loss, _ = obj.began_losses(l_real, l_fake_d, k)
        _, g_loss = obj.began_losses(l_real, l_fake_g, k)
        k_next = obj.began_k_update(k, l_real, l_fake_g, cfg.gamma, cfg.lambda_k)
        m = {"L_real": jnp.mean(l_real), "L_fake": jnp.mean(l_fake_g), "L_fake_d": jnp.mean(l_fake_d),
             "k": k, "k_next": k_next, "M_global": obj.began_convergence(l_real, l_fake_g, cfg.gamma)}
        return {DISC: d_loss, GEN: g_loss}, (m, {**state, STATE: {"k": k_next}})

    def decode(params, z, cond=None, key=None):
        """``(G(z) + 1) / 2``: ``z [N, Z] -> [N, H, W, C]`` in [0, 1] (``cond``, ``key`` unused)."""
        del key
        if cond is not None:
            raise ValueError("decode: BEGAN is unconditional; pass cond=None")
        if z.ndim != 2 or z.shape[1] != cfg.z_dim:
            raise ValueError(f"decode: z must be [N, Z={cfg.z_dim}], got shape {z.shape}")
        x = g.apply({"params": params[GEN]}, z)
        return jnp.clip((x + 1.0) / 2.0, 0.0, 1.0).astype(jnp.float32)

    def encode(params, x, cond=None):
        """Inversion (Zhu et al. 2016, Sec. 3.1): ``argmin_z |decode(z) - x|^2`` by Adam from one
        fixed draw of ``U[-1, 1]`` (``PRNGKey(0)``), ``[N, H, W, C] -> [N, Z]``."""
        check_image_batch(x, image_shape, "encode: x")
        z0 = draw_z(jax.random.PRNGKey(0), x.shape[0])
        return latent_tools.invert(lambda z: decode(params, z, cond), x, z0, steps=cfg.invert_steps)[0]

    def sample(params, key, num, cond=None):
        return decode(params, draw_z(key, num), cond)

    phase = Phase((GEN, DISC), loss=losses, name="began", stateful=True)
    return GenerativeModel(
        name=cfg.name, family="gan",
        training=Training(init=init, phases=(phase,), ema_groups=(GEN,), init_model_state=init_model_state),
        sampler=Sampler(sample, "image"), codec=Codec(encode, decode),
        data=DataSpec(image_shape, levels, 0))
