"""CycleGAN (Zhu et al. 2017, "Unpaired Image-to-Image Translation using Cycle-Consistent
Adversarial Networks") as a two-player model of the gen_jax contract: ``make_cyclegan(config.model, info)``.

Two generators ``G: A -> B`` and ``F: B -> A`` (:class:`gen_jax.gan.cyclegan_networks.ResnetGenerator`)
and two discriminators ``D_B`` (real B vs ``G(a)``) and ``D_A`` (real A vs ``F(b)``), PatchGANs
with instance norm (:class:`gen_jax.gan.image_networks.PatchDiscriminator`, unconditional).
The full objective (Eq. 3, with the identity term of Sec. 5.2 / App. 7.1)::

    L(G, F, D_A, D_B) = L_GAN(G, D_B) + L_GAN(F, D_A) + lambda L_cyc(G, F) + 0.5 lambda L_idt(G, F)
    L_cyc = E_a |F(G(a)) - a|_1 + E_b |G(F(b)) - b|_1                              (Eq. 2)
    L_idt = E_b |G(b) - b|_1 + E_a |F(a) - a|_1                                    (Sec. 5.2)

with the least-squares adversarial loss of Sec. 4 (Mao et al. 2017): the generators minimize
``E_a (D_B(G(a)) - 1)^2 + E_b (D_A(F(b)) - 1)^2``, each discriminator minimizes
``0.5 [E (D(real) - 1)^2 + E D(fake)^2]`` ("we divide the objective by 2 while optimizing D",
Sec. 4) -- exactly :func:`gen_jax.gan.objectives.d_least_squares`; the generators' term is twice
:func:`~gen_jax.gan.objectives.g_least_squares` (whose 0.5 is Mao's). A PatchGAN's squares are
averaged over its patches. The L1 terms are means over pixels of images on ``[-1, 1]`` (the scale
the generators work in, so that ``lambda = 10`` weighs what it weighs in the paper); the
``cycle_l1`` metric is the same mean on ``[0, 1]`` images (half of it).

**Domains from one labelled dataset.** Domain A is the rows of ``label == domain_a``, domain B
those of ``label == domain_b`` (``circle`` = 0 and ``square`` = 1 on shapes); rows of other
classes contribute nothing. ``keep_factor`` / ``keep_values`` further restrict both domains to
the rows whose factor (a column of ``batch['factors']``) takes one of the values, e.g. the
colours both shapes occur in. From each batch of ``B`` rows, :func:`domain_rows` gathers up to
``rows_per_domain`` rows of each domain (``0``: all ``B`` rows, i.e. plain masks), the domain's
rows first in batch order, with a validity weight each; every expectation above is the weighted
mean over the valid rows of its domain (0 when the batch has none). The batch order is a uniform
random permutation, so the rows kept when a domain has more than ``rows_per_domain`` of them are
a uniform random subset: given its number, the mean over them is an unbiased estimate, while
the networks run on ``rows_per_domain`` rows instead of ``B`` (a capacity near the expected count
``B / num_classes`` wastes few rows; twice it rarely drops one).

**History pool** (Sec. 4, after Shrivastava et al. 2017): each discriminator is updated with
generated images drawn from a buffer of the last ``pool_size`` (50) generated images rather than
the latest ones only (:func:`pool_query`: while the pool is not full an image is stored and
returned; then with probability 1/2 a uniformly chosen stored image is returned and replaced by
the new one, else the new image is returned). The pools are non-trained model state.

One train step (the authors' order): ``Phase('gen')`` updates both generators (params group
``'gen'`` = ``{'g_ab', 'g_ba'}``, optimizer section ``config.optim.gen``) and keeps its
generated images ``G(a)``, ``F(b)`` (no gradient) in the model state; ``Phase('disc')`` passes
them through the pools and updates both discriminators on ``L_D_A + L_D_B`` (group ``'disc'`` =
``{'d_a', 'd_b'}``, section ``config.optim.disc``; the two have disjoint params, so each follows
its own loss's gradient, and Adam is per parameter). Both phases see the same batch. The model
state is ``{'pool_a', 'pool_b': {'images' [P, H, W, C], 'count' int32}, 'fake_a', 'fake_b'
[R, H, W, C], 'valid_a', 'valid_b' [R]}`` (``R`` = rows per domain); every update is a pure
function of the state and the step's key.

Sampling is translation, conditional on the source image: ``conditioning.keys == ('source',)``,
``sample(params, key, num, cond={'source': domain-A images [num, H, W, C] in [0, 1]})`` returns
``G(source)`` ``[num, H, W, C]`` in ``[0, 1]`` (deterministic; ``key`` unused). The conditions a
split provides (``conditioning.draw``) are its domain-A images in order. The other direction and
the cycles are :class:`CycleGANFunctions` (:func:`build_cyclegan`): ``translate_ab``,
``translate_ba`` (``F``), ``cycle_a`` (``F(G(a))``), ``cycle_b`` (``G(F(b))``).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Literal, Mapping, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gen_jax.checks import DataSpec
from gen_jax.config import Checked, ConfigError, typed
from gen_jax.data import image_pairs
from gen_jax.data.pipeline import FACTOR_KEYS
from gen_jax.gan.cyclegan_networks import ResnetGenerator
from gen_jax.gan.image_networks import PatchDiscriminator
from gen_jax.model import Conditioning, GenerativeModel, Phase, Sampler, Training, check_image_batch

GEN, DISC = "gen", "disc"
G_AB, G_BA, D_A, D_B = "g_ab", "g_ba", "d_a", "d_b"


@dataclasses.dataclass(frozen=True)
class CycleGANConfig(Checked):
    """``config.model`` of a CycleGAN.

    Attributes:
      name: model name (tables, file names).
      domain_a, domain_b: the class ids (``batch['label']``) of the two domains.
      rows_per_domain: rows of each domain gathered from a batch (:func:`domain_rows`);
        0 = all rows, weighted by masks.
      g_base: filters of the generators' first layer; g_res: their residual blocks;
        g_upsample: ``'transpose'`` (the paper's) or ``'resize'`` (:class:`ResnetGenerator`).
      d_base: filters of the discriminators' first conv; d_layers: their stride-2 convs
        (2 = 34x34 patches).
      cycle_weight: ``lambda`` of Eq. 3 (10 in the paper).
      identity_scale: the identity loss weighs ``identity_scale * lambda`` (0.5 in the paper).
      pool_size: generated images kept per discriminator (50); 0 = no pool.
      keep_factor, keep_values: restrict both domains to the rows whose factor ``keep_factor``
        (a column of ``batch['factors']``, :data:`gen_jax.data.pipeline.FACTOR_KEYS`) is one of
        ``keep_values`` (e.g. the colours both shapes occur in); ``''`` = no restriction.
      task: the :mod:`gen_jax.data.image_pairs` task whose rows and target factors judge the
        outputs (the bake-off's shapes table; ``'circle_to_square'``), or ``''``. Its rows must
        be the ones :func:`source_conditioning` draws (domain A's, in order, cycled).
    """

    name: str = "cyclegan"
    domain_a: int = 0
    domain_b: int = 1
    rows_per_domain: int = 0
    g_base: int = 32
    g_res: int = 6
    g_upsample: Literal["transpose", "resize"] = "transpose"
    d_base: int = 64
    d_layers: int = 2
    cycle_weight: float = 10.0
    identity_scale: float = 0.5
    pool_size: int = 50
    keep_factor: str = ""
    keep_values: tuple[int, ...] = ()
    task: str = ""

    def __post_init__(self):
        self.positive("g_base", "d_base")
        self.nonnegative("rows_per_domain", "g_res", "d_layers", "cycle_weight", "identity_scale", "pool_size",
                         "domain_a", "domain_b")
        self.require(self.domain_a != self.domain_b, "domain_b",
                     f"the two domains must be different classes, both are {self.domain_a}")
        self.require(self.keep_factor in ("", *FACTOR_KEYS), "keep_factor",
                     f"must be '' or one of {list(FACTOR_KEYS)}, got {self.keep_factor!r}")
        self.require(bool(self.keep_factor) == bool(self.keep_values), "keep_values",
                     "keep_factor and keep_values go together (both set or both empty)")
        if self.task:
            task = image_pairs.get_task(self.task)
            self.require(not task.paired, "task", f"{self.task!r} is a paired task; CycleGAN's is unpaired")


def check_domains(cfg: CycleGANConfig, num_classes: int, shape_a: Sequence[int], shape_b: Sequence[int]) -> None:
    """Refuses domains the dataset cannot provide: class ids outside ``[0, num_classes)`` and
    domains whose images differ in shape (the generators map an image to one of the same shape
    and the cycle loss compares them). ``ConfigError`` naming the field."""
    n = int(num_classes or 0)
    for field in ("domain_a", "domain_b"):
        v = getattr(cfg, field)
        if not 0 <= v < n:
            raise ConfigError(f"config.model.{field}: class id {v} is outside the dataset's labels [0, {n})"
                              + ("" if n else " (the dataset has no labels to define domains by)"))
    a, b = tuple(int(s) for s in shape_a), tuple(int(s) for s in shape_b)
    if a != b:
        raise ConfigError(f"config.model.domain_b: domain B's images are {b}, domain A's {a}; CycleGAN "
                          f"translates between domains of one image shape")
    if len(a) != 3 or a[0] % 4 or a[1] % 4:
        raise ConfigError(f"dataset image_shape {a}: the ResNet generator needs (H, W, C) with H and W "
                          f"divisible by 4")


# ------------------------------------------------------------------------------------------
# Domains, losses.
# ------------------------------------------------------------------------------------------


def domain_rows(labels: jax.Array, cls: int, rows: int, keep: Optional[jax.Array] = None):
    """``(idx [R], valid [R] float32)``: the first ``R = min(rows, B)`` batch rows after a stable
    sort that puts the rows of class ``cls`` first (in batch order); ``valid`` marks those of
    ``cls``. ``labels``: int ``[B]``; ``keep``: bool ``[B]``, the rows allowed at all (None: all)."""
    r = min(int(rows), labels.shape[0])
    member = labels == cls if keep is None else (labels == cls) & keep
    idx = jnp.argsort((~member).astype(jnp.int32), stable=True)[:r]
    return idx, member[idx].astype(jnp.float32)


def weighted_mean(v: jax.Array, w: jax.Array) -> jax.Array:
    """``sum(w v) / max(sum w, 1)`` over rows (``v, w [R]``; 0 without valid rows)."""
    return jnp.sum(w * v) / jnp.maximum(jnp.sum(w), 1.0)


def _per_row(sq: jax.Array) -> jax.Array:
    return jnp.mean(sq.reshape(sq.shape[0], -1), axis=1)


def lsgan_d_loss(real: jax.Array, fake: jax.Array, w_real: jax.Array, w_fake: jax.Array) -> jax.Array:
    """A discriminator's least-squares loss (Zhu et al. 2017, Sec. 4; Mao et al. 2017, Eq. 2 with
    ``a = 0, b = 1``): ``0.5 [E_w (D(real) - 1)^2 + E_w D(fake)^2]``, patch logits ``[R, ...]``,
    squares averaged over patches, rows weighted (:func:`weighted_mean`). With unit weights it is
    :func:`gen_jax.gan.objectives.d_least_squares` of the flattened patches."""
    return 0.5 * (weighted_mean(_per_row(jnp.square(real - 1.0)), w_real)
                  + weighted_mean(_per_row(jnp.square(fake)), w_fake))


def lsgan_g_loss(fake: jax.Array, w: jax.Array) -> jax.Array:
    """A generator's least-squares loss (Zhu et al. 2017, Sec. 4): ``E_w (D(G(x)) - 1)^2``, patch
    logits ``[R, ...]`` (twice :func:`gen_jax.gan.objectives.g_least_squares` at unit weights)."""
    return weighted_mean(_per_row(jnp.square(fake - 1.0)), w)


def l1_rows(x: jax.Array, y: jax.Array) -> jax.Array:
    """Per-row mean ``|x - y|`` on the ``[-1, 1]`` scale, ``x, y`` ``[R, H, W, C]`` in [0, 1]."""
    return 2.0 * _per_row(jnp.abs(x - y))


# ------------------------------------------------------------------------------------------
# The history pool.
# ------------------------------------------------------------------------------------------


def pool_init(size: int, image_shape: Sequence[int]) -> dict:
    """An empty pool: ``{'images': zeros [size, H, W, C], 'count': 0}`` (``count``: stored so far)."""
    return {"images": jnp.zeros((int(size), *image_shape), jnp.float32), "count": jnp.zeros((), jnp.int32)}


def pool_draws(key: jax.Array, num: int, size: int) -> tuple[jax.Array, jax.Array]:
    """The randomness of :func:`pool_query` for ``num`` images: ``(swap [num] bool`` with
    probability 1/2, ``slot [num]`` uniform in ``[0, size))``."""
    ks, ki = jax.random.split(key)
    return jax.random.bernoulli(ks, 0.5, (num,)), jax.random.randint(ki, (num,), 0, max(int(size), 1))


def pool_apply(pool: dict, images: jax.Array, valid: jax.Array, swap: jax.Array, slot: jax.Array):
    """The history pool of Shrivastava et al. 2017 as CycleGAN uses it (Zhu et al. 2017, Sec. 4),
    one image after the other (``lax.scan``): a valid image while ``count < size`` is stored at
    ``count`` and returned; once full, with ``swap`` the stored image at ``slot`` is returned and
    the new one takes its place, else the new one is returned unchanged. Invalid rows (``valid ==
    0``) are returned as given and leave the pool alone. ``images [R, H, W, C]``, ``valid, swap,
    slot [R]`` -> ``(new pool, out [R, H, W, C])``."""
    size = pool["images"].shape[0]
    if size == 0:
        return pool, images

    def one(carry, xs):
        buf, count = carry
        img, ok, sw, sl = xs
        full = count >= size
        at = jnp.where(full, sl, jnp.minimum(count, size - 1))
        stored = jax.lax.dynamic_index_in_dim(buf, at, keepdims=False)
        ok = ok > 0
        out = jnp.where(ok & full & sw, stored, img)
        new = jnp.where(ok & (~full | sw), img, stored)
        buf = jax.lax.dynamic_update_index_in_dim(buf, new, at, 0)
        return (buf, count + (ok & ~full).astype(jnp.int32)), out

    (buf, count), out = jax.lax.scan(one, (pool["images"], pool["count"]), (images, valid, swap, slot))
    return {"images": buf, "count": count}, out


def pool_query(pool: dict, images: jax.Array, valid: jax.Array, key: jax.Array):
    """:func:`pool_apply` with the draws of :func:`pool_draws` from ``key``."""
    swap, slot = pool_draws(key, images.shape[0], pool["images"].shape[0])
    return pool_apply(pool, images, valid, swap, slot)


# ------------------------------------------------------------------------------------------
# The model.
# ------------------------------------------------------------------------------------------


class CycleGANFunctions(NamedTuple):
    """The translations of a trained CycleGAN (full params as the sampler takes them), each
    ``[N, H, W, C]`` in [0, 1] -> ``[N, H, W, C]`` in [0, 1]: ``translate_ab`` (``G``, the
    sampler's), ``translate_ba`` (``F``), ``cycle_a`` (``F(G(a))``), ``cycle_b`` (``G(F(b))``)."""

    translate_ab: Callable
    translate_ba: Callable
    cycle_a: Callable
    cycle_b: Callable


def _levels01(images: np.ndarray, levels: int) -> np.ndarray:
    images = np.asarray(images)
    if np.issubdtype(images.dtype, np.integer):
        return images.astype(np.float32) / np.float32(levels - 1)
    return images.astype(np.float32)


def _kept(arrays: Mapping, factor: str, values: Sequence[int]) -> np.ndarray:
    """bool ``[N]``: the rows whose ``factor`` (a split's column, or ``arrays['factors']``) is in ``values``."""
    if factor in arrays:
        col = np.asarray(arrays[factor])
    elif "factors" in arrays:
        col = np.asarray(arrays["factors"])[:, FACTOR_KEYS.index(factor)]
    else:
        raise ValueError(f"config.model.keep_factor: the split has neither {factor!r} nor 'factors' "
                         f"(keys {sorted(arrays)})")
    return np.isin(col, np.asarray(values))


def source_conditioning(domain: int, levels: int, keep: tuple = ("", ())) -> Conditioning:
    """Conditions for translation: ``draw(num, arrays)`` -> ``{'source': float32 [num, H, W, C]}``,
    the split's images of class ``domain`` in order (cycled), with ``keep = (factor, values)`` only
    those whose factor is one of ``values``; integer levels are scaled to [0, 1]."""

    def draw(num: int, arrays: Optional[Mapping] = None) -> dict:
        if arrays is None or "image" not in arrays or "label" not in arrays:
            raise ValueError("CycleGAN sampling conditions are a split's domain-A images: pass arrays with "
                             f"'image' and 'label' (got {'none' if arrays is None else sorted(arrays)})")
        member = np.asarray(arrays["label"]) == domain
        rows = np.flatnonzero(member & _kept(arrays, *keep) if keep[0] else member)
        if rows.size == 0:
            raise ValueError(f"the split has no image of class {domain} (domain A) to translate")
        return {"source": _levels01(np.asarray(arrays["image"])[rows[np.arange(num) % rows.size]], levels)}

    return Conditioning(keys=("source",), draw=draw)


def build_cyclegan(cfg: Any, info: Any, shape_b: Optional[Sequence[int]] = None):
    """``(model, CycleGANFunctions)`` of ``config.model`` (:class:`CycleGANConfig`) on a dataset
    with ``info`` (``image_shape``, ``num_levels``, ``num_classes``). ``shape_b``: the image shape
    of domain B where its images would come from another source than domain A's (``None``: the
    dataset's, as for label-defined domains); a shape unlike domain A's is refused."""
    cfg = typed(CycleGANConfig, cfg, "config.model")
    image_shape = tuple(int(s) for s in info.image_shape)
    check_domains(cfg, info.num_classes, image_shape, image_shape if shape_b is None else shape_b)
    levels = int(info.num_levels)
    gen = ResnetGenerator(base=cfg.g_base, num_res=cfg.g_res, upsample=cfg.g_upsample)
    disc = PatchDiscriminator(base=cfg.d_base, n_layers=cfg.d_layers, norm="instance", conditional=False)
    lam, lam_idt = cfg.cycle_weight, cfg.identity_scale * cfg.cycle_weight

    def rows_of(batch):
        return int(cfg.rows_per_domain or batch["image"].shape[0])

    def domains(batch):
        """``(a, w_a, b, w_b)``: each domain's gathered images ``[R, H, W, C]`` and weights ``[R]``."""
        x = batch["image"]
        check_image_batch(x, image_shape)
        if "label" not in batch:
            raise ValueError("CycleGAN batches need batch['label'] (the class ids that define the domains)")
        keep = None
        if cfg.keep_factor:
            if "factors" not in batch:
                raise ValueError("config.model.keep_factor needs batch['factors'] (a dataset with factors)")
            col = batch["factors"][:, FACTOR_KEYS.index(cfg.keep_factor)]
            keep = jnp.any(col[:, None] == jnp.asarray(cfg.keep_values)[None], axis=1)
        ia, wa = domain_rows(batch["label"], cfg.domain_a, rows_of(batch), keep)
        ib, wb = domain_rows(batch["label"], cfg.domain_b, rows_of(batch), keep)
        return x[ia], wa, x[ib], wb

    def init(key, batch):
        x = batch["image"][:1]
        check_image_batch(x, image_shape)
        k = jax.random.split(key, 4)
        return {GEN: {G_AB: gen.init(k[0], x)["params"], G_BA: gen.init(k[1], x)["params"]},
                DISC: {D_A: disc.init(k[2], x)["params"], D_B: disc.init(k[3], x)["params"]}}

    def init_model_state(key, batch):
        del key
        check_image_batch(batch["image"], image_shape)
        r = min(rows_of(batch), batch["image"].shape[0])
        fakes = jnp.zeros((r, *image_shape), jnp.float32)
        return {"pool_a": pool_init(cfg.pool_size, image_shape), "pool_b": pool_init(cfg.pool_size, image_shape),
                "fake_a": fakes, "fake_b": fakes, "valid_a": jnp.zeros((r,)), "valid_b": jnp.zeros((r,))}

    def g(params, name, x):
        return gen.apply({"params": params[GEN][name]}, x)

    def d(params, name, x):
        return disc.apply({"params": params[DISC][name]}, x)

    def g_loss(params, state, batch, key):
        del key
        a, wa, b, wb = domains(batch)
        fake_b, fake_a = g(params, G_AB, a), g(params, G_BA, b)
        adv = lsgan_g_loss(d(params, D_B, fake_b), wa) + lsgan_g_loss(d(params, D_A, fake_a), wb)
        cyc_a, cyc_b = weighted_mean(l1_rows(g(params, G_BA, fake_b), a), wa), \
            weighted_mean(l1_rows(g(params, G_AB, fake_a), b), wb)
        idt = weighted_mean(l1_rows(g(params, G_AB, b), b), wb) + weighted_mean(l1_rows(g(params, G_BA, a), a), wa)
        loss = adv + lam * (cyc_a + cyc_b) + lam_idt * idt
        sg = jax.lax.stop_gradient
        new = {**state, "fake_a": sg(fake_a), "fake_b": sg(fake_b), "valid_a": wb, "valid_b": wa}
        m = {"g_adv": adv, "cycle": cyc_a + cyc_b, "identity": idt, "cycle_l1": 0.25 * (cyc_a + cyc_b),
             "rows_a": jnp.sum(wa), "rows_b": jnp.sum(wb)}
        return loss, (m, new)

    def d_loss(params, state, batch, key):
        ka, kb = jax.random.split(key)
        a, wa, b, wb = domains(batch)
        pool_a, old_a = pool_query(state["pool_a"], state["fake_a"], state["valid_a"], ka)
        pool_b, old_b = pool_query(state["pool_b"], state["fake_b"], state["valid_b"], kb)
        l_da = lsgan_d_loss(d(params, D_A, a), d(params, D_A, old_a), wa, state["valid_a"])
        l_db = lsgan_d_loss(d(params, D_B, b), d(params, D_B, old_b), wb, state["valid_b"])
        m = {"d_a": l_da, "d_b": l_db, "pool_count": 0.5 * (pool_a["count"] + pool_b["count"]).astype(jnp.float32)}
        return l_da + l_db, (m, {**state, "pool_a": pool_a, "pool_b": pool_b})

    def translator(name, where):
        def run(params, x):
            check_image_batch(x, image_shape, where)
            return g(params, name, jnp.asarray(x, jnp.float32))
        return run

    ab, ba = translator(G_AB, "translate_ab: x"), translator(G_BA, "translate_ba: x")
    fns = CycleGANFunctions(translate_ab=ab, translate_ba=ba, cycle_a=lambda p, x: ba(p, ab(p, x)),
                            cycle_b=lambda p, x: ab(p, ba(p, x)))

    def sample(params, key, num, cond=None):
        del key  # the translation is deterministic
        if cond is None or "source" not in cond:
            raise ValueError(f"sample: CycleGAN translates domain-A images; pass cond={{'source': [{num}, "
                             f"{', '.join(map(str, image_shape))}] in [0, 1]}}")
        src = jnp.asarray(cond["source"])
        if src.shape != (num, *image_shape):
            raise ValueError(f"sample: cond['source'] must be [{num}, {', '.join(map(str, image_shape))}], "
                             f"got {src.shape}")
        return ab(params, src)

    phases = (Phase(GEN, loss=g_loss, name="g", stateful=True, optim=GEN),
              Phase(DISC, loss=d_loss, name="d", stateful=True, optim=DISC))
    model = GenerativeModel(
        name=cfg.name, family="gan",
        training=Training(init=init, phases=phases, ema_groups=(GEN,), init_model_state=init_model_state),
        sampler=Sampler(sample, "image"),
        conditioning=source_conditioning(cfg.domain_a, levels, (cfg.keep_factor, cfg.keep_values)),
        data=DataSpec(image_shape, levels, int(info.num_classes)))
    return model, fns


def make_cyclegan(cfg: Any, info: Any) -> GenerativeModel:
    """The CycleGAN of ``config.model`` (registry name ``'cyclegan'``; :func:`build_cyclegan`)."""
    return build_cyclegan(cfg, info)[0]


__all__ = ["CycleGANConfig", "CycleGANFunctions", "build_cyclegan", "make_cyclegan", "check_domains",
           "domain_rows", "weighted_mean", "lsgan_d_loss", "lsgan_g_loss", "l1_rows", "pool_init", "pool_draws",
           "pool_apply", "pool_query", "source_conditioning"]
