"""Multimodal VAEs over (image, caption) and optionally label: MVAE and MMVAE, with a factorized variant.

Generative model: a shared latent ``z ~ N(0, I_Z)`` (and, in the factorized variant, one
private latent ``w_m ~ N(0, I_P)`` per modality), and modalities independent given it,
``p(X | z, w) = prod_m p_m(x_m | z, w_m)``:

* ``image``: a conv decoder (:class:`gen_jax.latent.networks.ConvDecoder`) to a per-pixel
  likelihood (:class:`gen_jax.latent.objectives.PixelLikelihood`; default the discretized
  logistic mixture of Salimans et al. 2017, a proper likelihood of the 256 levels, so its
  term is the log *density* of the dequantized image, ``log P(levels) + D log K``, the
  README convention; ``'gaussian'`` and ``'categorical'`` are the other sound choices; the
  Bernoulli decoder is not a likelihood on grey levels and is refused);
* ``caption_tokens``: an autoregressive GRU decoder conditioned on ``z`` (and ``w``):
  ``p(c | z) = prod_{t=1}^{L-1} Cat(c_t; f(c_{<t}, z))`` (the first token is always
  ``<bos>``; the padding after ``<eos>`` is scored too, so this is a pmf over the length-``L``
  token sequences);
* ``label`` (when ``config.model.modalities`` lists it): a categorical MLP head on ``z``.

Each modality has an encoder (an *expert*) ``q_m(z, w_m | x_m)``: conv for images, token
plus position embeddings and an MLP for captions, an embedding and MLP for labels; its
``Z + P`` outputs are the shared expert (first ``Z``) and the private posterior (last ``P``).
The expert algebra is :mod:`gen_jax.latent.experts`.

* **MVAE** (Wu & Goodman 2018): ``q(z | X)`` is the product of the observed experts and the
  prior expert (their Sec. 2-3). Training uses the sub-sampled objective of their Sec. 3 for
  ``M`` modalities: ``ELBO(X) + sum_m ELBO(x_m)`` (the joint ELBO plus every unimodal ELBO;
  no extra random subsets), each ``ELBO(S) = E_q[sum_{m in S} lambda_m log p(x_m | z, w_m)]
  - beta KL(q(z | S) || p(z)) - beta sum_{m in S} KL(q(w_m | x_m) || p(w_m))`` (their Eq. 5
  with the modality weights ``lambda_m``). With ``config.model.cross_elbo`` each unimodal term
  scores *every* modality instead: ``E_{q(z | x_m)}[sum_{m'} lambda_{m'} log p(x_{m'} | z, w_{m'})]
  - beta KL(q(z | x_m) || p(z)) - ...``, the ELBO of the whole ``X`` under the unimodal posterior
  ``q(z | x_m)`` (a lower bound on ``log p(X)`` for any ``q``, Kingma & Welling 2014, Eq. 3; the
  private latents of the other modalities from their prior, whose KL is then 0). This trains
  each decoder from every expert's ``z``: the cross-modal reconstructions that the product
  alone does not supply (the unimodal-posterior terms of the MVAE's random-subset training,
  Wu & Goodman 2018, Sec. 3, and of MMVAE, Shi et al. 2019, Eq. 3).
* **MMVAE** (Shi et al. 2019): ``q(z | X) = (1 / M) sum_m q_m(z | x_m)`` (their Sec. 3),
  trained with the stratified importance-weighted bound with ``K`` samples per expert (their
  Eq. 3; :func:`gen_jax.latent.experts.stratified_iwae`), the log-weight
  ``sum_m lambda_m log p(x_m | z, w_m) + beta [log p(z) p(w) - log q(z | X) q(w | X)]``.
* **Factorized** (Tsai et al. 2019, Sec. 3: a multimodal factor shared by all modalities and
  modality-specific generative factors): ``config.model.private_dim = P > 0`` gives every
  modality a private latent ``w_m`` with posterior ``q(w_m | x_m)`` (from the same encoder),
  seen only by that modality's decoder; in cross-modal generation the private latents of the
  generated modalities come from their prior.

With ``lambda_m = beta = 1`` both objectives are lower bounds on ``log p(X)``; the *joint ELBO*
(:attr:`MultimodalVAE.joint_elbo`) is that bound with ``lambda = beta = 1`` and one sample:
nats per example of the density of the dequantized image times the pmf of the caption (and
label), reported with its per-modality reconstruction terms.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Literal, Mapping, NamedTuple, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from gen_jax import distributions as dist
from gen_jax.config import Checked, ConfigError, typed
from gen_jax.data.tokenizers import BOS
from gen_jax.latent import experts, networks, objectives
from gen_jax.model import (Codec, DataSpec, GenerativeModel, Likelihood, Sampler, check_image_batch, loss_training,
                           split_conditioning)

IMAGE, CAPTION, LABEL = "image", "caption_tokens", "label"
MODALITIES = (IMAGE, CAPTION, LABEL)


@dataclasses.dataclass(frozen=True)
class MultimodalVAEConfig(Checked):
    """``config.model`` of MVAE / MMVAE.

    Attributes:
      name: ``'mvae'`` or ``'mmvae'`` (the registry name; the factory fixes the posterior).
      modalities: the batch keys modelled, from ``('image', 'caption_tokens', 'label')``;
        ``image`` is required (the sampler's and codec's modality).
      latent_dim: shared latent ``Z``.
      private_dim: modality-specific latent ``P`` per modality (0: none; > 0: the factorized
        variant of Tsai et al. 2019).
      conv_features, hidden, activation: the conv image encoder / decoder (as the VAE's).
      likelihood: image likelihood (``'logistic_mixture'``, ``'gaussian'``, ``'categorical'``).
      num_mixtures, gaussian_scale: of the image likelihood.
      text_dim: token embedding width (caption encoder and decoder).
      text_hidden: MLP width of the caption and label encoders, GRU width of the caption decoder.
      image_weight, caption_weight, label_weight: ``lambda_m`` of the training objective (the
        reported bounds use 1).
      beta: KL weight of the training objective (1: the bound).
      cross_elbo: MVAE: the unimodal ELBOs score every modality (module docstring).
      num_samples: ``K`` samples per expert of the MMVAE objective (MVAE: 1 per ELBO).
      iwae_k: importance samples of the image likelihood (1: the ELBO).
      sample_mean: the image sampler returns the mean of ``p(x | z)`` on the levels instead of
        a draw (the usual VAE figure convention; default a draw).
    """

    name: str = "mvae"
    modalities: tuple[str, ...] = (IMAGE, CAPTION)
    latent_dim: int = 32
    private_dim: int = 0
    conv_features: tuple[int, ...] = (32, 64)
    hidden: tuple[int, ...] = (256,)
    activation: networks.Activation = "gelu"
    likelihood: Literal["logistic_mixture", "gaussian", "categorical"] = "logistic_mixture"
    num_mixtures: int = 5
    gaussian_scale: float = 0.0
    text_dim: int = 64
    text_hidden: int = 128
    image_weight: float = 1.0
    caption_weight: float = 1.0
    label_weight: float = 1.0
    beta: float = 1.0
    cross_elbo: bool = False
    num_samples: int = 1
    iwae_k: int = 1
    sample_mean: bool = False

    def __post_init__(self):
        mods = tuple(self.modalities)
        self.require(all(m in MODALITIES for m in mods) and len(set(mods)) == len(mods), "modalities",
                     f"distinct names from {list(MODALITIES)}, got {list(mods)}")
        self.require(IMAGE in mods and len(mods) >= 2, "modalities",
                     f"need 'image' and at least one other modality, got {list(mods)}")
        self.positive("latent_dim", "num_mixtures", "text_dim", "text_hidden", "num_samples", "iwae_k")
        self.nonnegative("private_dim", "gaussian_scale", "image_weight", "caption_weight", "label_weight", "beta")
        self.require(bool(self.conv_features) and all(f >= 1 for f in self.conv_features), "conv_features",
                     f"need positive channel counts, got {self.conv_features}")
        self.require(all(h >= 1 for h in self.hidden), "hidden", f"widths must be >= 1, got {self.hidden}")


# ------------------------------------------------------------------------------------------
# Networks.
# ------------------------------------------------------------------------------------------


class _Head(nn.Module):
    """``h -> (mean, log_var)`` of ``out_dim`` Gaussian coordinates."""

    out_dim: int

    @nn.compact
    def __call__(self, h):
        return nn.Dense(self.out_dim, name="mean")(h), nn.Dense(self.out_dim, name="log_var")(h)


class CaptionExpert(nn.Module):
    """``tokens [B, L] -> (mean, log_var) [B, out_dim]``: token + learned position embeddings,
    flattened, then an MLP (order-aware; captions have a fixed length ``L``)."""

    vocab_size: int
    length: int
    dim: int
    hidden: int
    out_dim: int
    activation: str = "gelu"

    @nn.compact
    def __call__(self, tokens):
        act = networks.ACTIVATIONS[self.activation]
        e = nn.Embed(self.vocab_size, self.dim, name="embed")(tokens)
        e = e + self.param("positions", nn.initializers.normal(0.02), (self.length, self.dim))
        h = networks.dense_stack(e.reshape(tokens.shape[0], -1), (self.hidden, self.hidden), act)
        return _Head(self.out_dim, name="head")(h)


class LabelExpert(nn.Module):
    """``label [B] -> (mean, log_var) [B, out_dim]``."""

    num_classes: int
    hidden: int
    out_dim: int
    activation: str = "gelu"

    @nn.compact
    def __call__(self, label):
        act = networks.ACTIVATIONS[self.activation]
        h = networks.dense_stack(nn.Embed(self.num_classes, self.hidden, name="embed")(label), (self.hidden,), act)
        return _Head(self.out_dim, name="head")(h)


class CaptionDecoder(nn.Module):
    """The autoregressive caption decoder: ``h_0 = tanh(W z)``, then per step
    ``h_t = GRU(h_{t-1}, [embed(c_{t-1}), V z])`` and ``logits_t = U [h_t, z]``."""

    vocab_size: int
    dim: int
    hidden: int

    def setup(self):
        self.to_state = nn.Dense(self.hidden)
        self.embed = nn.Embed(self.vocab_size, self.dim)
        self.z_in = nn.Dense(self.dim)
        self.cell = nn.GRUCell(features=self.hidden)
        self.out = nn.Dense(self.vocab_size)

    def initial(self, z):
        return jnp.tanh(self.to_state(z))

    def step(self, h, token, z):
        inp = jnp.concatenate([self.embed(token), self.z_in(z)], axis=-1)
        h, y = self.cell(h, inp)
        return h, self.out(jnp.concatenate([y, z], axis=-1))

    def __call__(self, z, token):
        return self.step(self.initial(z), token, z)


class MultimodalNet(nn.Module):
    """All encoders (experts) and decoders, as methods: ``encode(modality, x) -> (mean, log_var)
    [B, Z + P]``; ``decode_image(z) -> [B, H, W, F]``; ``caption_initial(z) -> h``;
    ``caption_step(h, token, z) -> (h, logits [B, V])``; ``label_logits(z) -> [B, C]``
    (``z`` here is ``[z_shared, w_m]``, ``[B, Z + P]``)."""

    cfg: MultimodalVAEConfig
    image_shape: tuple[int, int, int]
    out_features: int
    vocab_size: int = 0
    caption_len: int = 0
    num_classes: int = 0

    def setup(self):
        cfg, d = self.cfg, self.cfg.latent_dim + self.cfg.private_dim
        self.image_encoder = networks.ConvEncoder(cfg.conv_features, cfg.hidden, d, cfg.activation)
        self.image_decoder = networks.ConvDecoder(cfg.conv_features, tuple(reversed(cfg.hidden)), self.image_shape,
                                                  self.out_features, cfg.activation)
        if CAPTION in cfg.modalities:
            self.caption_encoder = CaptionExpert(self.vocab_size, self.caption_len, cfg.text_dim, cfg.text_hidden,
                                                 d, cfg.activation)
            self.caption_decoder = CaptionDecoder(self.vocab_size, cfg.text_dim, cfg.text_hidden)
        if LABEL in cfg.modalities:
            self.label_encoder = LabelExpert(self.num_classes, cfg.text_hidden, d, cfg.activation)
            self.label_decoder = nn.Sequential([nn.Dense(cfg.text_hidden), networks.ACTIVATIONS[cfg.activation],
                                                nn.Dense(self.num_classes)])

    def encode(self, modality, x):
        if modality == IMAGE:
            return self.image_encoder(2.0 * x - 1.0)
        if modality == CAPTION:
            return self.caption_encoder(x)
        return self.label_encoder(x)

    def decode_image(self, z):
        return self.image_decoder(z)

    def caption_initial(self, z):
        return self.caption_decoder.initial(z)

    def caption_step(self, h, token, z):
        return self.caption_decoder.step(h, token, z)

    def label_logits(self, z):
        return self.label_decoder(z)

    def __call__(self, image, tokens=None, label=None):
        b, d = image.shape[0], self.cfg.latent_dim + self.cfg.private_dim
        z = jnp.zeros((b, d), jnp.float32)
        out = [self.encode(IMAGE, image), self.decode_image(z)]
        if CAPTION in self.cfg.modalities:
            out += [self.encode(CAPTION, tokens), self.caption_decoder(z, tokens[:, 0])]
        if LABEL in self.cfg.modalities:
            out += [self.encode(LABEL, label), self.label_logits(z)]
        return out


# ------------------------------------------------------------------------------------------
# The bundle.
# ------------------------------------------------------------------------------------------


class MultimodalVAE(NamedTuple):
    """A built MVAE / MMVAE: the :class:`GenerativeModel` and the cross-modal functions.

    Attributes:
      model: the model (training, image sampler, image likelihood, image codec, caption
        conditioning).
      generate: ``(params, key, num, given=None) -> {modality: [num, ...]}``: every modality
        of the model generated from ``z ~ q(z | given)`` (``given`` a dict of observed
        modalities, e.g. ``{'caption_tokens': [num, L]}``; ``None``: ``z ~ p(z)``, the joint /
        unconditional samples). Images are ``[num, H, W, C]`` in ``[0, 1]`` (drawn as the
        sampler does), captions the greedy decode ``int32 [num, L]``, labels the argmax ``[num]``.
      caption_image: ``(params, image [B, H, W, C]) -> int32 [B, L]``: greedy caption of
        ``z = `` the posterior mean given the image (private latents at their prior mean).
      joint_elbo: ``(params, batch, key) -> {'elbo', 'kl', <modality>: [B]}``: the joint
        ELBO in nats per example (module docstring) and its reconstruction terms.
      posterior: ``(params, given) -> (mean, log_var)`` of the shared latent (MVAE: the
        product ``[B, Z]``; MMVAE: the stacked experts ``[M, B, Z]`` of the mixture, in
        ``config.model.modalities`` order).
      experts: ``(params, given) -> (names, means, log_vars)``: the observed modalities'
        experts, ``[M, B, Z + P]`` (shared coordinates first, then the private posterior).
      log_likelihood: ``(params, modality, z, value, key=None) -> [N]``: ``log p_m(value | z)``
        in nats (``z [N, Z + P]``: shared and that modality's private latent; ``value`` as in a
        batch; an image is scored as the density of its dequantized values, which the Gaussian
        likelihood draws with ``key``).
      describe: ``tokens [N, L] -> list[str]`` (the dataset's word tokenizer).
      kind: ``'poe'`` (MVAE) or ``'moe'`` (MMVAE).
    """

    model: GenerativeModel
    generate: Callable
    caption_image: Callable
    joint_elbo: Callable
    posterior: Callable
    experts: Callable
    log_likelihood: Callable
    describe: Optional[Callable]
    kind: str


def _describer(info) -> Optional[Callable]:
    from gen_jax.data.datasets import DatasetError, get_tokenizer
    try:
        return get_tokenizer(str(getattr(info, "name", ""))).decode
    except DatasetError:  # a dataset without a word tokenizer: no text rendering
        return None


def _check_info(cfg: MultimodalVAEConfig, info) -> tuple:
    image_shape = tuple(int(s) for s in info.image_shape)
    if len(image_shape) != 3:
        raise ValueError(f"info.image_shape must be (H, W, C), got {info.image_shape}")
    vocab = int(getattr(info, "vocab_size", 0) or 0)
    length = int(getattr(info, "caption_len", 0) or 0)
    classes = int(getattr(info, "num_classes", 0) or 0)
    if CAPTION in cfg.modalities and (vocab < 1 or length < 2):
        raise ConfigError(f"config.model.modalities: 'caption_tokens' needs a dataset with captions "
                          f"(info.vocab_size={vocab}, info.caption_len={length})")
    if LABEL in cfg.modalities and classes < 1:
        raise ConfigError(f"config.model.modalities: 'label' needs a dataset with labels (num_classes={classes})")
    return image_shape, vocab, length, classes


def build_multimodal_vae(cfg: Any, info: Any, kind: Literal["poe", "moe"]) -> MultimodalVAE:
    """Builds MVAE (``kind='poe'``) or MMVAE (``kind='moe'``); see the module docstring.

    Args:
      cfg: :class:`MultimodalVAEConfig` or ``config.model``.
      info: dataset info (``image_shape``, ``num_levels``, ``vocab_size``, ``caption_len``,
        ``num_classes``, ``name``).
      kind: the joint posterior: product (MVAE) or mixture (MMVAE) of experts.
    """
    cfg = typed(MultimodalVAEConfig, cfg, "config.model")
    if kind not in ("poe", "moe"):
        raise ValueError(f"kind must be 'poe' or 'moe', got {kind!r}")
    image_shape, vocab, length, classes = _check_info(cfg, info)
    mods = tuple(cfg.modalities)
    lik = objectives.PixelLikelihood(cfg.likelihood, image_shape, int(info.num_levels), cfg.num_mixtures,
                                     cfg.gaussian_scale)
    net = MultimodalNet(cfg, image_shape, lik.out_features, vocab, length, classes)
    zd, pd = cfg.latent_dim, cfg.private_dim
    weights = {IMAGE: cfg.image_weight, CAPTION: cfg.caption_weight, LABEL: cfg.label_weight}
    unit_weights = {m: 1.0 for m in mods}
    who = "MVAE" if kind == "poe" else "MMVAE"

    # --- checks -------------------------------------------------------------------------

    def observed(values: Optional[Mapping], where: str, required: tuple = ()) -> dict:
        """The model's modalities present in ``values``, shape-checked; a ``ValueError`` naming
        each of ``required`` that is missing."""
        values = {} if values is None else values
        for m in required:
            if m not in values or values[m] is None:
                raise ValueError(f"{who} {where}: the modality {m!r} is missing (needed: {list(required)}; "
                                 f"given: {sorted(values)})")
        obs = {m: jnp.asarray(values[m]) for m in mods if m in values and values[m] is not None}
        sizes = {m: v.shape[0] if v.ndim else None for m, v in obs.items()}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"{who} {where}: the modalities have different batch sizes {sizes}")
        for m, v in obs.items():
            if m == IMAGE:
                check_image_batch(v, image_shape, f"{where}['image']")
            elif m == CAPTION and (v.ndim != 2 or v.shape[1] != length):
                raise ValueError(f"{who} {where}['caption_tokens'] must be int [B, {length}], got {v.shape}")
            elif m == LABEL and v.ndim != 1:
                raise ValueError(f"{who} {where}['label'] must be int [B], got {v.shape}")
        return obs

    # --- encoders and decoders ------------------------------------------------------------

    def expert_stack(params, obs: dict):
        """``(names, means [M, B, Z + P], log_vars)`` of the observed experts."""
        names = tuple(m for m in mods if m in obs)
        outs = [net.apply(params, m, obs[m], method=MultimodalNet.encode) for m in names]
        return names, jnp.stack([o[0] for o in outs]), jnp.stack([o[1] for o in outs])

    def caption_logits(params, z, tokens):
        """Teacher-forced ``logits [B, L-1, V]`` of ``c_1..c_{L-1}`` given ``c_0..c_{L-2}`` (a scan)."""
        h0 = net.apply(params, z, method=MultimodalNet.caption_initial)

        def body(h, tok):
            return net.apply(params, h, tok, z, method=MultimodalNet.caption_step)

        _, logits = jax.lax.scan(body, h0, tokens[:, :-1].T)
        return jnp.swapaxes(logits, 0, 1)

    def greedy_caption(params, z):
        """``z [B, Z + P] -> int32 [B, L]``: ``<bos>`` then the argmax token at each step (a scan)."""
        h0 = net.apply(params, z, method=MultimodalNet.caption_initial)
        bos = jnp.full((z.shape[0],), BOS, jnp.int32)

        def body(carry, _):
            h, tok = carry
            h, logits = net.apply(params, h, tok, z, method=MultimodalNet.caption_step)
            nxt = jnp.argmax(logits, axis=-1).astype(jnp.int32)
            return (h, nxt), nxt

        _, toks = jax.lax.scan(body, (h0, bos), None, length=length - 1)
        return jnp.concatenate([bos[:, None], toks.T], axis=1)

    def targets(key, obs: dict) -> dict:
        """What each likelihood scores: the image's dequantized values or levels, ids as given."""
        return {m: (lik.target(key, v) if m == IMAGE else v) for m, v in obs.items()}

    def log_lik(params, m, z, target):
        """``log p_m(target | z)`` ``[N]`` (image: log density of the dequantized data)."""
        if m == IMAGE:
            return lik.log_prob(net.apply(params, z, method=MultimodalNet.decode_image), target) + lik.density_offset
        if m == CAPTION:
            lp = dist.categorical_log_prob(target[:, 1:], caption_logits(params, z, target))
            return jnp.sum(lp, axis=-1)
        return dist.categorical_log_prob(target, net.apply(params, z, method=MultimodalNet.label_logits))

    def with_private(z, w: dict, m):
        return z if pd == 0 else jnp.concatenate([z, w[m]], axis=-1)

    def rep(x, n):
        """``x [B, ...]`` repeated ``n`` times: ``[n * B, ...]``."""
        return jnp.broadcast_to(x[None], (n,) + x.shape).reshape((n * x.shape[0],) + x.shape[1:])

    # --- MVAE: the ELBO of a subset ------------------------------------------------------

    def poe(means, log_vars):
        return experts.product_of_experts(means[..., :zd], log_vars[..., :zd], prior_expert=True)

    def subset_elbo(params, names, means, log_vars, tgt: dict, key, lam: dict, beta: float,
                    scored: Optional[tuple] = None) -> dict:
        """Wu & Goodman 2018, Eq. 5 on the subset ``names`` (their experts ``[|S|, B, Z + P]``):
        one-sample terms ``[B]``; the likelihoods of ``scored`` (default ``names``; a superset:
        the ELBO of those modalities under ``q(z | S)``, unobserved private latents from the prior)."""
        scored = names if scored is None else scored
        mean, log_var = poe(means, log_vars)
        keys = jax.random.split(key, 1 + len(scored))
        z = dist.gaussian_sample(keys[0], mean, log_var)
        kl = dist.kl_standard_normal(mean, log_var)
        w = {}
        for i, m in enumerate(names):
            if pd:
                w[m] = dist.gaussian_sample(keys[1 + i], means[i, :, zd:], log_vars[i, :, zd:])
                kl = kl + dist.kl_standard_normal(means[i, :, zd:], log_vars[i, :, zd:])
        for i, m in enumerate(scored):
            if pd and m not in names:
                w[m] = jax.random.normal(keys[1 + i], (mean.shape[0], pd))
        rec = {m: log_lik(params, m, with_private(z, w, m), tgt[m]) for m in scored}
        out = dict(rec, kl=kl, elbo=sum(rec.values()) - kl)
        out["objective"] = sum(lam[m] * rec[m] for m in scored) - beta * kl
        return out

    # --- MMVAE: the stratified bound ------------------------------------------------------

    def mixture_log_weights(params, obs: dict, tgt: dict, key, k: int, lam: dict, beta: float):
        """``log w [M, K, B]`` (Shi et al. 2019, Eq. 3) and the reconstruction terms
        ``{m: [M, K, B]}``: ``z`` from each expert ``K`` times, ``w_m`` from ``q(w_m | x_m)``."""
        names, means, log_vars = expert_stack(params, obs)
        mm, b = len(names), means.shape[1]
        sm, slv = means[..., :zd], log_vars[..., :zd]
        keys = jax.random.split(key, 1 + mm)
        eps = jax.random.normal(keys[0], (mm, k, b, zd))
        z = sm[:, None] + jnp.exp(0.5 * slv[:, None]) * eps  # [M, K, B, Z]
        log_prior_q = dist.gaussian_log_prob(z, 0.0, jnp.zeros(())) - experts.mixture_log_prob(z, sm, slv)
        w = {}
        for i, m in enumerate(names):
            if pd:
                pm, plv = means[i, :, zd:], log_vars[i, :, zd:]
                w[m] = pm + jnp.exp(0.5 * plv) * jax.random.normal(keys[1 + i], (mm, k, b, pd))
                log_prior_q = log_prior_q + dist.gaussian_log_prob(w[m], 0.0, jnp.zeros(())) \
                    - dist.gaussian_log_prob(w[m], pm, plv)
        n = mm * k
        flat = lambda a: a.reshape(n * b, a.shape[-1])
        wf = {m: flat(v) for m, v in w.items()}
        rec = {m: log_lik(params, m, with_private(flat(z), wf, m), rep(tgt[m], n)).reshape(mm, k, b) for m in names}
        lw = sum(lam[m] * rec[m] for m in names) + beta * log_prior_q
        return lw, rec, log_prior_q

    # --- training ------------------------------------------------------------------------

    def init(key, batch):
        obs = observed(batch, "init batch", mods)
        return net.init(key, obs[IMAGE], obs.get(CAPTION), obs.get(LABEL))

    def mvae_loss(params, batch, key):
        obs = observed(batch, "loss batch", mods)
        k_t, k_e = jax.random.split(key)
        tgt = targets(k_t, obs)
        ks = jax.random.split(k_e, 1 + len(mods))
        names, means, log_vars = expert_stack(params, obs)  # the experts once, for every subset
        joint = subset_elbo(params, names, means, log_vars, tgt, ks[0], weights, cfg.beta)
        total, metrics = joint["objective"], {"elbo": joint["elbo"], "kl": joint["kl"]}
        for i, m in enumerate(names):
            uni = subset_elbo(params, (m,), means[i:i + 1], log_vars[i:i + 1], tgt, ks[1 + i], weights, cfg.beta,
                              names if cfg.cross_elbo else None)
            total = total + uni["objective"]
            metrics[f"elbo_{m}"] = uni["elbo"]
        for m in mods:
            metrics[f"recon_{m}"] = joint[m]
        return -jnp.mean(total), metrics

    def mmvae_loss(params, batch, key):
        obs = observed(batch, "loss batch", mods)
        k_t, k_e = jax.random.split(key)
        tgt = targets(k_t, obs)
        lw, rec, log_prior_q = mixture_log_weights(params, obs, tgt, k_e, cfg.num_samples, weights, cfg.beta)
        bound = experts.stratified_iwae(lw)
        metrics = {"bound": bound, "kl": -jnp.mean(log_prior_q, axis=(0, 1))}
        for m in mods:
            metrics[f"recon_{m}"] = jnp.mean(rec[m], axis=(0, 1))
        metrics["elbo"] = sum(metrics[f"recon_{m}"] for m in mods) - metrics["kl"]
        return -jnp.mean(bound), metrics

    # --- the joint ELBO ------------------------------------------------------------------

    def joint_elbo(params, batch, key):
        obs = observed(batch, "joint_elbo batch", mods)
        k_t, k_e = jax.random.split(key)
        tgt = targets(k_t, obs)
        if kind == "poe":
            out = subset_elbo(params, *expert_stack(params, obs), tgt, k_e, unit_weights, 1.0)
            return {m: out[m] for m in (*mods, "kl", "elbo")}
        lw, rec, log_prior_q = mixture_log_weights(params, obs, tgt, k_e, 1, unit_weights, 1.0)
        out = {m: jnp.mean(rec[m], axis=(0, 1)) for m in mods}
        out["kl"] = -jnp.mean(log_prior_q, axis=(0, 1))
        out["elbo"] = experts.stratified_iwae(lw)
        return out

    # --- posteriors and generation -------------------------------------------------------

    def posterior_given(params, given: dict):
        names, means, log_vars = expert_stack(params, given)
        if kind == "poe":
            return poe(means, log_vars)
        return means[..., :zd], log_vars[..., :zd]

    def experts_of(params, given):
        return expert_stack(params, observed(given, "experts", ()))

    def posterior(params, given):
        return posterior_given(params, observed(given, "posterior", ()))

    def draw_shared(params, key, num, given: Optional[dict]):
        """``z [num, Z]``: from ``p(z)`` (nothing given), the product (MVAE) or one uniformly
        chosen observed expert per example (MMVAE: a draw of the mixture)."""
        k_m, k_z = jax.random.split(key)
        if not given:
            return jax.random.normal(k_z, (num, zd))
        mean, log_var = posterior_given(params, given)
        if kind == "moe":
            pick = jax.random.randint(k_m, (num,), 0, mean.shape[0])
            mean = jnp.take_along_axis(mean, pick[None, :, None], axis=0)[0]
            log_var = jnp.take_along_axis(log_var, pick[None, :, None], axis=0)[0]
        return dist.gaussian_sample(k_z, mean, log_var)

    def image_draw(key, out):
        if cfg.sample_mean:
            kk = lik.num_levels
            return (jnp.round(lik.mean(out) * (kk - 1)) / (kk - 1)).astype(jnp.float32)
        return lik.sample(key, out).astype(jnp.float32)

    def generate_from(params, key, z):
        """Every modality from shared ``z [num, Z]``; private latents of the prior."""
        k_w, k_x = jax.random.split(key)
        w = {m: jax.random.normal(jax.random.fold_in(k_w, i), (z.shape[0], pd)) for i, m in enumerate(mods)}
        out = {IMAGE: image_draw(k_x, net.apply(params, with_private(z, w, IMAGE), method=MultimodalNet.decode_image))}
        if CAPTION in mods:
            out[CAPTION] = greedy_caption(params, with_private(z, w, CAPTION))
        if LABEL in mods:
            logits = net.apply(params, with_private(z, w, LABEL), method=MultimodalNet.label_logits)
            out[LABEL] = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        return out

    def generate(params, key, num, given=None):
        if given is not None and not isinstance(given, Mapping):
            raise ValueError(f"{who} generate: given must be a dict of modalities or None, got {type(given).__name__}")
        unknown = sorted(set(given or {}) - set(mods))
        if unknown:
            raise ValueError(f"{who} generate: given has modalities {unknown} the model lacks (it has {list(mods)})")
        obs = observed(given, "generate given", ())
        if obs and next(iter(obs.values())).shape[0] != num:
            raise ValueError(f"{who} generate: the given modalities have {next(iter(obs.values())).shape[0]} rows, "
                             f"expected num={num}")
        k_z, k_x = jax.random.split(key)
        return generate_from(params, k_x, draw_shared(params, k_z, num, obs))

    def log_likelihood(params, modality, z, value, key=None):
        if modality not in mods:
            raise ValueError(f"{who} log_likelihood: unknown modality {modality!r} (the model has {list(mods)})")
        obs = observed({modality: value}, "log_likelihood", (modality,))
        if z.ndim != 2 or z.shape != (obs[modality].shape[0], zd + pd):
            raise ValueError(f"{who} log_likelihood: z must be [{obs[modality].shape[0]}, {zd + pd}], got {z.shape}")
        if modality == IMAGE and cfg.likelihood == "gaussian" and key is None:
            raise ValueError(f"{who} log_likelihood: the Gaussian image likelihood needs a key (dequantization)")
        tgt = targets(jax.random.PRNGKey(0) if key is None else key, obs)
        return log_lik(params, modality, z, tgt[modality])

    def caption_image(params, image):
        if CAPTION not in mods:
            raise ValueError(f"{who} caption_image: the model has no 'caption_tokens' modality ({list(mods)})")
        obs = observed({IMAGE: image}, "caption_image", (IMAGE,))
        mean, _ = posterior_given(params, obs)
        z = mean if kind == "poe" else mean[0]
        return greedy_caption(params, with_private(z, {CAPTION: jnp.zeros((z.shape[0], pd))}, CAPTION))

    # --- model capabilities -------------------------------------------------------------

    def sample(params, key, num, cond=None):
        """Caption -> image (``cond`` with ``'caption_tokens'``, and ``'label'`` when modelled),
        or unconditional images (``cond=None``)."""
        if cond is not None:
            given = {m: cond[m] for m in mods if m != IMAGE and m in cond}
            observed(given, "sample cond", (CAPTION,) if CAPTION in mods else (LABEL,))
        else:
            given = None
        return generate(params, key, num, given)[IMAGE]

    def image_posterior(params, image):
        names, means, log_vars = expert_stack(params, {IMAGE: image})
        mean, log_var = poe(means, log_vars) if kind == "poe" else (means[0, :, :zd], log_vars[0, :, :zd])
        if pd:
            mean = jnp.concatenate([mean, means[0, :, zd:]], axis=-1)
            log_var = jnp.concatenate([log_var, log_vars[0, :, zd:]], axis=-1)
        return mean, log_var

    def codec_posterior(params, image, cond=None):
        observed({IMAGE: image}, "encode", (IMAGE,))
        return image_posterior(params, image)

    def codec_encode(params, image, cond=None):
        return codec_posterior(params, image, cond)[0]

    def codec_decode(params, z, cond=None, key=None):
        if z.ndim != 2 or z.shape[1] != zd + pd:
            raise ValueError(f"{who} decode: z must be [N, {zd + pd}] (shared {zd} + image private {pd}), "
                             f"got {z.shape}")
        out = net.apply(params, z, method=MultimodalNet.decode_image)
        return lik.mean(out) if key is None else image_draw(key, out)

    def log_prob(params, batch, key):
        """The image's marginal bound with ``q(z | image)`` (IWAE-``iwae_k``), nats of the density
        of the dequantized image (unit ``'dim'``)."""
        obs = observed(batch, "log_prob batch", (IMAGE,))
        k_t, k_z = jax.random.split(key)
        target = lik.target(k_t, obs[IMAGE])
        mean, log_var = image_posterior(params, obs[IMAGE])

        def lw(k, n):
            b = mean.shape[0]
            z = dist.gaussian_sample(k, mean[None], jnp.broadcast_to(log_var, (n, b, zd + pd)))
            rec = log_lik(params, IMAGE, z.reshape(n * b, -1), rep(target, n)).reshape(n, b)
            return rec + dist.gaussian_log_prob(z, 0.0, jnp.zeros(())) - dist.gaussian_log_prob(z, mean, log_var)

        return objectives.iwae_bound(k_z, lw, cfg.iwae_k, min(cfg.iwae_k, 25))

    model = GenerativeModel(
        name=cfg.name if cfg.name not in ("mvae", "mmvae") else {"poe": "mvae", "moe": "mmvae"}[kind],
        family="latent",
        training=loss_training(init, mvae_loss if kind == "poe" else mmvae_loss),
        sampler=Sampler(sample, "image"),
        likelihood=Likelihood(log_prob, "elbo" if cfg.iwae_k == 1 else f"iwae-{cfg.iwae_k}"),
        codec=Codec(codec_encode, codec_decode, posterior=codec_posterior),
        conditioning=split_conditioning(CAPTION, with_label=LABEL in mods) if CAPTION in mods else None,
        data=DataSpec(image_shape, int(info.num_levels), classes if LABEL in mods else 0,
                      ((CAPTION, vocab),) if CAPTION in mods else ()))
    return MultimodalVAE(model=model, generate=generate, caption_image=caption_image, joint_elbo=joint_elbo,
                         posterior=posterior, experts=experts_of, log_likelihood=log_likelihood,
                         describe=_describer(info) if CAPTION in mods else None, kind=kind)


def make_mvae(cfg: Any, info: Any) -> GenerativeModel:
    """MVAE (Wu & Goodman 2018): product of Gaussian experts with a prior expert, trained with
    the joint plus unimodal ELBOs (:func:`build_multimodal_vae` with ``kind='poe'``)."""
    return build_multimodal_vae(cfg, info, "poe").model


def make_mmvae(cfg: Any, info: Any) -> GenerativeModel:
    """MMVAE (Shi et al. 2019): uniform mixture of experts, trained with the stratified
    importance-weighted bound, ``K = num_samples`` per expert (``kind='moe'``)."""
    return build_multimodal_vae(cfg, info, "moe").model
