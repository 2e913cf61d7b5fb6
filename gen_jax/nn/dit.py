"""DiT: the diffusion transformer denoiser (Peebles & Xie 2023, "Scalable Diffusion Models
with Transformers"), matmul-bound by design.

The architecture of Sec. 3.2 ("Diffusion Transformer design space", Fig. 3), with the
adaLN-Zero block that the paper's ablation selects (Sec. 3.2, Fig. 5):

* **Patchify** (Sec. 3.2, "Patchify", Fig. 4): the input ``x [B, H, W, C]`` is cut into
  ``T = (H / p) (W / p)`` non-overlapping ``p x p`` patches, each flattened to ``p^2 C`` values
  (row-major over ``(i, j, c)`` within the patch, tokens row-major over the patch grid;
  :func:`patchify`) and linearly embedded to the width ``d``. The fixed 2-D sine-cosine
  position embedding (the "standard ViT frequency-based positional embeddings (the sine-cosine
  version)" of the same paragraph; :func:`sincos_position_embedding_2d`) is added: channels
  ``[0, d/2)`` encode the patch row ``r``, ``[d/2, d)`` the patch column ``q``, each as
  ``[sin(pos w_k), cos(pos w_k)]`` with ``w_k = 10000^{-k / (d/4)}``, ``k = 0..d/4-1``
  (Vaswani et al. 2017, Sec. 3.5, once per axis).
* **Conditioning vector** (Sec. 3.2, "adaLN block": "we regress them from the sum of the
  embedding vectors of t and c"): ``c = MLP(e(t)) + E[y]`` with ``e`` the sinusoidal timestep
  embedding of width ``time_dim`` (:func:`gen_jax.nn.unet.timestep_embedding`),
  ``MLP = Dense(d) -> SiLU -> Dense(d)``, and ``E`` a learned label embedding with
  ``num_classes + 1`` rows, row ``num_classes`` being the null class of classifier-free
  guidance (Ho & Salimans 2022, Sec. 3.2; Peebles & Xie 2023, Sec. 3.1, "Classifier-free
  guidance").
* **DiT block with adaLN-Zero** (Sec. 3.2, "adaLN-Zero block")::

      (b1, g1, a1, b2, g2, a2) = Dense_0(SiLU(c))          # [B, 6 d], zero-initialized
      x = x + a1 * Attn(LN(x) (1 + g1) + b1)              # multi-head self-attention
      x = x + a2 * MLP(LN(x) (1 + g2) + b2)               # Dense(m d) -> GELU -> Dense(d)

  with parameter-free LayerNorms (``eps = 1e-6``); the shift ``b``, scale ``g`` and gate ``a``
  are per sample and per channel, the same for every token. Because ``Dense_0`` starts at zero,
  every gate is zero and each block is the identity at initialization ("this initializes the
  full DiT block as the identity function"). The attention is the library's
  :class:`gen_jax.nn.attention.MultiHeadAttention` (Vaswani et al. 2017, Eq. 1; not causal: every
  token attends to every token).
* **Final layer** (Sec. 3.2, "Transformer decoder"): the adaptive LayerNorm
  ``LN(x) (1 + g) + b`` with ``(b, g) = Dense_0(SiLU(c))``, then a zero-initialized linear
  decoder of each token to ``p^2 out`` values, rearranged to ``[B, H, W, out]``
  (:func:`unpatchify`, the exact inverse of :func:`patchify`). ``out = C`` for a mean
  prediction, ``2 C`` with learned variances ("a p x p x 2C tensor"). The network outputs zero
  at initialization.

Everything but the patchify/unpatchify rearrangements and the normalizations is a dense
matmul over ``B T`` tokens (or ``B`` conditioning vectors), so on a CPU it runs near the
machine's matmul rate, unlike the small-image convolutions of the U-Net.

Model sizes (Table 1): S (depth 12, width 384, 6 heads), B (12, 768, 12), L (24, 1024, 16),
XL (28, 1152, 16); "/p" is the patch size. DiT-XL/2 on the 32x32x4 latents of 256x256
ImageNet (1000 classes, learned variances: 8 output channels) has 674,834,720 parameters with
this layout, the 675M the paper reports.

Details that follow the authors' public description rather than the text: Xavier-uniform
initialization of the linear layers, ``N(0, 0.02)`` for the timestep MLP, tanh-approximated
GELU, and an MLP ratio of 4.

Layout NHWC: ``x [B, H, W, C]``, ``t [B]``, ``label`` int ``[B]`` (or None), output
``[B, H, W, out_channels]`` -- the call signature of :class:`gen_jax.nn.unet.UNet`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gen_jax.config import Checked, typed
from gen_jax.nn.attention import MultiHeadAttention
from gen_jax.nn.conditioning import check_denoiser_inputs, embed_labels
from gen_jax.nn.partitioning import constrain
from gen_jax.nn.remat import remat_block
from gen_jax.nn.unet import timestep_embedding


@dataclasses.dataclass(frozen=True)
class DiTConfig(Checked):
    """``config.model.dit``: a diffusion transformer (module docstring; Table 1 for the paper's
    sizes).

    Attributes:
      patch_size: ``p``; the image height and width must be divisible by it.
      width: hidden width ``d`` (divisible by ``num_heads`` and by 4, for the 2-D sin-cos
        position embedding).
      depth: number of DiT blocks.
      num_heads: attention heads.
      mlp_ratio: MLP hidden width ``mlp_ratio * d``.
      time_dim: width of the sinusoidal timestep embedding (256 in the paper's code).
      time_scale: the embedding sees ``time_scale * t`` (1 for integer steps ``0..T-1``).
      num_classes: ``> 0`` adds a label embedding with ``num_classes + 1`` rows (row
        ``num_classes`` is the null class); set by the model bundle from the dataset.
      out_channels: output channels; ``0`` = the input's ``C`` (``2 C`` for learned
        variances); set by the model bundle.
    """

    PATH = "config.model.dit"

    patch_size: int = 2
    width: int = 256
    depth: int = 6
    num_heads: int = 4
    mlp_ratio: float = 4.0
    time_dim: int = 256
    time_scale: float = 1.0
    num_classes: int = 0
    out_channels: int = 0

    def __post_init__(self):
        self.positive("patch_size", "width", "depth", "num_heads", "mlp_ratio", "time_scale")
        self.require(self.width % self.num_heads == 0, "num_heads",
                     f"must divide width={self.width}, got {self.num_heads}")
        self.require(self.width % 4 == 0, "width",
                     f"must be divisible by 4 (2-D sin-cos position embedding), got {self.width}")
        self.require(self.time_dim >= 4 and self.time_dim % 2 == 0, "time_dim",
                     f"must be even and >= 4 (sinusoidal embedding), got {self.time_dim}")
        self.require(int(self.mlp_ratio * self.width) >= 1, "mlp_ratio",
                     f"mlp_ratio * width must be >= 1, got {self.mlp_ratio} * {self.width}")
        self.nonnegative("num_classes", "out_channels")

    @property
    def null_label(self) -> int:
        """The reserved label id of the null (unconditional) class: ``num_classes``."""
        return self.num_classes

    @property
    def mlp_width(self) -> int:
        return int(self.mlp_ratio * self.width)

    def num_tokens(self, image_shape) -> int:
        """``T = (H / p) (W / p)`` for ``image_shape = (H, W, C)``."""
        self.check_image_shape(image_shape)
        return (image_shape[0] // self.patch_size) * (image_shape[1] // self.patch_size)

    def check_image_shape(self, image_shape) -> None:
        """Raises ``ValueError`` naming ``config.model.dit.patch_size`` unless ``image_shape =
        (H, W, C)`` has ``H`` and ``W`` divisible by ``p``."""
        if len(image_shape) != 3:
            raise ValueError(f"image shape must be (H, W, C), got {tuple(image_shape)}")
        h, w, _ = image_shape
        p = self.patch_size
        if h % p or w % p:
            raise ValueError(f"image size {h}x{w} is not divisible by the patch size "
                             f"({self.PATH}.patch_size={p})")


def as_dit_config(cfg) -> DiTConfig:
    """``cfg`` as a :class:`DiTConfig` (errors name ``config.model.dit.<field>``)."""
    return typed(DiTConfig, cfg, "config.model.dit")


# ----------------------------------------------------------------------------------------
# Patchify / unpatchify and the position embedding.
# ----------------------------------------------------------------------------------------


def patchify(x: jax.Array, p: int) -> jax.Array:
    """``x [B, H, W, C]`` -> tokens ``[B, (H/p)(W/p), p*p*C]`` (Sec. 3.2, "Patchify"): token
    ``r (W/p) + q`` holds ``x[:, r p + i, q p + j, c]`` at index ``(i p + j) C + c``."""
    b, h, w, c = x.shape
    if h % p or w % p:
        raise ValueError(f"patchify: image size {h}x{w} is not divisible by the patch size {p}")
    x = x.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(tokens: jax.Array, grid_h: int, grid_w: int, p: int) -> jax.Array:
    """Tokens ``[B, grid_h grid_w, p*p*C]`` -> ``[B, grid_h p, grid_w p, C]``, the exact inverse
    of :func:`patchify` (Sec. 3.2, "Transformer decoder": "rearrange the decoded tokens into
    their original spatial layout")."""
    b, t, k = tokens.shape
    if t != grid_h * grid_w or k % (p * p):
        raise ValueError(f"unpatchify: tokens must be [B, {grid_h}*{grid_w}, p*p*C] with p={p}, "
                         f"got shape {tokens.shape}")
    c = k // (p * p)
    x = tokens.reshape(b, grid_h, grid_w, p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, grid_h * p, grid_w * p, c)


def sincos_1d(positions: np.ndarray, dim: int) -> np.ndarray:
    """``[sin(pos w_k), cos(pos w_k)]``, ``w_k = 10000^{-k / (dim/2)}``, ``k < dim/2``
    (Vaswani et al. 2017, Sec. 3.5) -> ``[len(positions), dim]`` float64."""
    omega = 1.0 / 10000.0 ** (np.arange(dim // 2, dtype=np.float64) / (dim // 2))
    ang = np.asarray(positions, np.float64)[:, None] * omega[None, :]
    return np.concatenate([np.sin(ang), np.cos(ang)], axis=1)


def sincos_position_embedding_2d(grid_h: int, grid_w: int, dim: int) -> np.ndarray:
    """The fixed 2-D sin-cos embedding of a ``grid_h x grid_w`` patch grid, ``[grid_h grid_w,
    dim]`` float32 (token order of :func:`patchify`): the patch row in channels ``[0, dim/2)``,
    the column in ``[dim/2, dim)``, each by :func:`sincos_1d`."""
    if dim % 4:
        raise ValueError(f"the 2-D sin-cos embedding needs a width divisible by 4, got {dim}")
    rows, cols = np.meshgrid(np.arange(grid_h), np.arange(grid_w), indexing="ij")
    emb = np.concatenate([sincos_1d(rows.reshape(-1), dim // 2), sincos_1d(cols.reshape(-1), dim // 2)], 1)
    return emb.astype(np.float32)


# ----------------------------------------------------------------------------------------
# Modules.
# ----------------------------------------------------------------------------------------

_xavier = nn.initializers.xavier_uniform()


def _dense(features: int, name: str, zero: bool = False, init=_xavier, dtype=None):
    return nn.Dense(features, kernel_init=nn.initializers.zeros if zero else init, dtype=dtype, name=name)


def _layer_norm(name: str):
    """A LayerNorm without its own affine parameters (adaLN supplies shift and scale)."""
    return nn.LayerNorm(epsilon=1e-6, use_bias=False, use_scale=False, name=name)


def modulate(x: jax.Array, shift: jax.Array, scale: jax.Array) -> jax.Array:
    """``x (1 + scale) + shift`` of tokens ``x [B, T, d]`` by per-sample ``[B, d]`` vectors."""
    return x * (1.0 + scale[:, None, :]) + shift[:, None, :]


class DiTBlock(nn.Module):
    """One DiT block with adaLN-Zero (module docstring): ``(x [B, T, d], c [B, d]) -> [B, T, d]``,
    the identity at initialization."""

    num_heads: int
    mlp_width: int
    dtype: Optional[Any] = None  # compute dtype of the matmuls (gen_jax.nn.precision)

    @nn.compact
    def __call__(self, x: jax.Array, c: jax.Array) -> jax.Array:
        d = x.shape[-1]
        mod = _dense(6 * d, "adaln_modulation", zero=True, dtype=self.dtype)(nn.silu(c))
        shift1, scale1, gate1, shift2, scale2, gate2 = jnp.split(mod, 6, axis=-1)
        h = modulate(_layer_norm("norm1")(x), shift1, scale1)
        h = MultiHeadAttention(self.num_heads, kernel_init=_xavier, out_init=_xavier, scale_at="logits",
                               dtype=self.dtype, name="attn")(h)
        x = x + gate1[:, None, :] * h
        h = modulate(_layer_norm("norm2")(x), shift2, scale2)
        h = constrain(_dense(self.mlp_width, "mlp_in", dtype=self.dtype)(h),
                      "batch", None, "mlp")  # TP: hidden over 'model'
        h = _dense(d, "mlp_out", dtype=self.dtype)(nn.gelu(h, approximate=True))
        return x + gate2[:, None, :] * h


class FinalLayer(nn.Module):
    """The adaptive LayerNorm and the zero-initialized linear decoder to ``p^2 out`` per token."""

    features: int

    @nn.compact
    def __call__(self, x: jax.Array, c: jax.Array) -> jax.Array:
        shift, scale = jnp.split(_dense(2 * x.shape[-1], "adaln_modulation", zero=True)(nn.silu(c)), 2, axis=-1)
        return _dense(self.features, "linear", zero=True)(modulate(_layer_norm("norm")(x), shift, scale))


class DiT(nn.Module):
    """The diffusion transformer ``(x [B, H, W, C], t [B], label [B] | None) -> [B, H, W, out]``.

    Attributes:
      config: a :class:`DiTConfig`.
    """

    config: DiTConfig
    dtype: Optional[Any] = None  # mixed precision: the blocks' matmuls in this dtype (gen_jax.nn.precision)
    remat: str = "none"  # 'none' | 'full' | 'dots_saveable' per DiT block (gen_jax.nn.remat)

    def condition(self, t: jax.Array, label: Optional[jax.Array]) -> jax.Array:
        """The conditioning vector ``c = MLP(e(t)) + E[label]`` ``[B, d]``."""
        cfg = self.config
        temb = timestep_embedding(cfg.time_scale * t.astype(jnp.float32), cfg.time_dim)
        init = nn.initializers.normal(0.02)
        c = _dense(cfg.width, "t_embed0", init=init)(temb)
        c = _dense(cfg.width, "t_embed1", init=init)(nn.silu(c))
        if cfg.num_classes > 0:
            c = c + embed_labels(label, cfg.num_classes, cfg.width, null=True, name="label_embed")
        return c

    @nn.compact
    def __call__(self, x: jax.Array, t: jax.Array, label: Optional[jax.Array] = None, *,
                 train: bool = False) -> jax.Array:
        """Denoiser output.

        Args:
          x: noisy images (or latents) ``[B, H, W, C]``, ``H`` and ``W`` divisible by ``p``.
          t: times ``[B]`` (int steps ``0..T-1`` or floats).
          label: int ``[B]`` class ids in ``0..num_classes`` (``num_classes`` = null class);
            required iff ``num_classes > 0``.
          train: accepted for the U-Net's signature (the DiT has no dropout).

        Returns:
          ``[B, H, W, out_channels]`` (``out_channels = C`` when the config says 0).
        """
        del train
        cfg = self.config
        t = jnp.asarray(t)
        check_denoiser_inputs(self.config, x, t, label, net="DiT", path="config.model.dit")
        b, h, w, c_in = x.shape
        p = cfg.patch_size
        out_c = cfg.out_channels or c_in
        pos = jnp.asarray(sincos_position_embedding_2d(h // p, w // p, cfg.width))
        z = _dense(cfg.width, "patch_embed")(patchify(x, p)) + pos[None]
        c = self.condition(t, label)
        block = remat_block(DiTBlock, self.remat)
        for i in range(cfg.depth):
            z = block(cfg.num_heads, cfg.mlp_width, self.dtype, name=f"block{i}")(z, c)
        z = FinalLayer(p * p * out_c, name="final")(z, c)
        return unpatchify(z, h // p, w // p, p)
