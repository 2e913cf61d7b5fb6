"""Small CNN classifiers used as feature networks for the embedded datasets.

For 8x8x1 digits and 32x32x3 shapes the standard Inception-v3 features are poorly suited
(the images would be upsampled ~40x and the classes are not ImageNet's), so FID/KID/
precision/recall on the embedded data use the penultimate layer of a classifier trained on
the data itself. The metric definitions are unchanged; only the feature map differs, so
numbers are comparable within this library, not with published Inception-based values.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from gen_jax.config import Checked, typed
from gen_jax.model import Classifier, Predictor, check_image_batch, loss_training


class FeatureClassifier(nn.Module):
    """Conv stack -> dense feature layer -> logits.

    Each entry of ``features`` is a 3x3 conv + ReLU followed by 2x2 average pooling (skipped
    once the map is 1 pixel wide). ``8x8`` digits with ``(32, 64)`` end at ``2x2x64``,
    ``32x32`` shapes at ``8x8x64``; the map is flattened into a ``hidden``-wide ReLU layer,
    whose activations are the features.

    Call: ``(images [B, H, W, C] in [0, 1], train=False) -> (logits [B, num_classes],
    features [B, hidden])``. With ``train=True`` and ``dropout_rate > 0`` dropout is applied
    to the features before the logits and needs a ``'dropout'`` rng. ``factor_classes``
    ``(K_1, ..., K_F)`` adds one linear head per factor on the same (dropped-out) features,
    ``Dense(K_f)``, returned with ``factors=True`` as a third output.
    """

    num_classes: int
    features: tuple[int, ...] = (32, 64)
    hidden: int = 128
    dropout_rate: float = 0.0
    factor_classes: tuple[int, ...] = ()

    @nn.compact
    def __call__(self, images, train: bool = False, factors: bool = False):
        """``(logits, features)``; with ``factors=True`` also the factor heads' logits, a tuple
        ``([B, factor_classes[0]], ...)`` (``init`` with ``factors=True`` creates them)."""
        if images.ndim != 4:
            raise ValueError(f"images must be [B, H, W, C], got shape {images.shape}")
        h = 2.0 * images.astype(jnp.float32) - 1.0
        for i, f in enumerate(self.features):
            h = nn.relu(nn.Conv(f, (3, 3), padding="SAME", name=f"conv{i}")(h))
            if h.shape[1] >= 2 and h.shape[2] >= 2:
                h = nn.avg_pool(h, (2, 2), strides=(2, 2))
        h = h.reshape(h.shape[0], -1)
        feats = nn.relu(nn.Dense(self.hidden, name="hidden")(h))
        out = nn.Dropout(self.dropout_rate, deterministic=not train)(feats) \
            if self.dropout_rate > 0 else feats
        logits = nn.Dense(self.num_classes, name="logits")(out)
        if not factors:
            return logits, feats
        heads = tuple(nn.Dense(k, name=f"factor_{i}")(out) for i, k in enumerate(self.factor_classes))
        return logits, feats, heads


@dataclasses.dataclass(frozen=True)
class ClassifierConfig(Checked):
    """Typed view of ``config.model`` for the feature classifier (``typed(ClassifierConfig, cfg)``).

    Attributes:
      name: model name (tables, file names).
      features: channels of the conv stages.
      hidden: width of the feature (penultimate) layer.
      dropout_rate: dropout on the features during training (0 disables it).
      factor_classes: classes of each factor of a dataset with known factors (shapes:
        ``(5, 6, 2, 3, 3)`` for :data:`gen_jax.data.shapes.FACTORS`), one linear head each on
        the shared features, trained on ``batch['factors'] int [B, F]`` beside the label;
        ``()`` (the default) has no heads and trains on the label only.
    """

    name: str = "classifier"
    features: tuple[int, ...] = (32, 64)
    hidden: int = 128
    dropout_rate: float = 0.0
    factor_classes: tuple[int, ...] = ()

    def __post_init__(self):
        self.require(bool(self.features) and all(f >= 1 for f in self.features), "features",
                     f"need positive channel counts, got {self.features}")
        self.positive("hidden")
        self.in_range("dropout_rate", 0.0, 1.0, hi_open=True)
        self.require(all(int(k) >= 2 for k in self.factor_classes), "factor_classes",
                     f"every factor needs >= 2 classes, got {self.factor_classes}")


def make_network(cfg: Any, num_classes: int) -> FeatureClassifier:
    """The :class:`FeatureClassifier` described by ``cfg`` (a :class:`ClassifierConfig` or
    ``config.model``) for ``num_classes`` classes."""
    cfg = typed(ClassifierConfig, cfg, "config.model")
    return FeatureClassifier(num_classes=num_classes, features=tuple(cfg.features),
                             hidden=cfg.hidden, dropout_rate=cfg.dropout_rate,
                             factor_classes=tuple(int(k) for k in cfg.factor_classes))


def factor_cross_entropy(factor_logits: Sequence[jax.Array], factors: jax.Array) -> jax.Array:
    """``sum_f CE(factor_logits[f], factors[:, f])`` per example, ``[B]`` nats: the factor
    heads' loss (independent softmax heads, one per factor). ``factors`` int ``[B, F]``."""
    if factors.ndim != 2 or factors.shape[1] != len(factor_logits):
        raise ValueError(f"batch['factors'] must be int [B, F={len(factor_logits)}], got shape {factors.shape}")
    return sum(optax.softmax_cross_entropy_with_integer_labels(lg, factors[:, f])
               for f, lg in enumerate(factor_logits))


def make_factor_predictor(cfg: Any, params: Any, batch_size: int = 250) -> Callable:
    """``predict(images [N, H, W, C] in [0, 1]) -> int [N, F]``: the argmax of each factor
    head of a trained :class:`FeatureClassifier` with ``cfg.factor_classes`` (``params`` its
    trained params), in inference mode, ``batch_size`` images per compiled call."""
    cfg = typed(ClassifierConfig, cfg, "config.model")
    if not cfg.factor_classes:
        raise ValueError("make_factor_predictor: config.model.factor_classes is empty (no factor heads)")
    missing = [f"factor_{i}" for i in range(len(cfg.factor_classes)) if f"factor_{i}" not in params]
    if missing:
        raise ValueError(f"make_factor_predictor: params have no factor heads {missing} (a checkpoint trained "
                         f"without config.model.factor_classes)")
    net = make_network(cfg, int(params["logits"]["kernel"].shape[-1]))
    apply = jax.jit(lambda p, x: jnp.stack([jnp.argmax(h, -1) for h in net.apply({"params": p}, x, factors=True)[2]],
                                           axis=1))

    def predict(images) -> np.ndarray:
        x = np.asarray(images, np.float32)
        out = []
        for s in range(0, len(x), batch_size):
            chunk = x[s:s + batch_size]
            pad = np.concatenate([chunk, np.zeros((batch_size - len(chunk),) + x.shape[1:], np.float32)])
            out.append(np.asarray(apply(params, jnp.asarray(pad)))[:len(chunk)])
        return np.concatenate(out).astype(np.int32)

    return predict


def make_classifier(cfg: Any, info: Any) -> Predictor:
    """The feature classifier as a trainable :class:`~gen_jax.model.Predictor` (not a
    generative model).

    Args:
      cfg: a :class:`ClassifierConfig` or ``config.model`` (``ConfigDict``/mapping); unknown
        fields or wrong types raise :class:`ConfigError` naming ``config.model.<field>``.
      info: object with ``image_shape`` ``(H, W, C)`` and ``num_classes`` (DatasetInfo).

    Returns:
      a :class:`Predictor` whose one training phase's ``loss(params, batch, key)`` is the mean
      softmax cross-entropy of ``batch['label'] [B]`` given ``batch['image'] [B, H, W, C]``,
      with metrics ``loss`` and ``accuracy`` (``key`` drives dropout); with
      ``cfg.factor_classes`` the loss adds :func:`factor_cross_entropy` of ``batch['factors']``
      and the metrics ``accuracy_factor_<f>`` (:func:`make_factor_predictor` reads the heads); and whose
      ``classifier`` has, in inference mode, ``logits(params, images) -> [B, num_classes]``
      and ``features(params, images) -> [B, hidden]``.
    """
    cfg = typed(ClassifierConfig, cfg, "config.model")
    num_classes = getattr(info, "num_classes", None)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"info.num_classes must be an int >= 2 for a classifier, got {num_classes!r}")
    image_shape = tuple(getattr(info, "image_shape", ()))
    if len(image_shape) != 3:
        raise ValueError(f"info.image_shape must be (H, W, C), got {image_shape}")
    net = make_network(cfg, num_classes)

    def check_images(images):
        check_image_batch(images, image_shape)

    heads = bool(cfg.factor_classes)

    def init(key, batch):
        images = batch["image"]
        check_images(images)
        return net.init({"params": key}, images[:1], factors=heads)["params"]

    def loss(params, batch, key):
        images, labels = batch["image"], batch["label"]
        check_images(images)
        if labels.shape != images.shape[:1]:
            raise ValueError(f"batch['label'] must be [B={images.shape[0]}], got {labels.shape}")
        out = net.apply({"params": params}, images, train=True, factors=heads, rngs={"dropout": key})
        logits = out[0]
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)  # [B]
        metrics = {"accuracy": jnp.mean(jnp.argmax(logits, axis=-1) == labels)}
        if heads:
            if "factors" not in batch:
                raise ValueError("config.model.factor_classes: the factor heads train on batch['factors'] int "
                                 "[B, F], which this dataset's batches lack (only datasets with known factors)")
            factors = batch["factors"]
            ce = ce + factor_cross_entropy(out[2], factors)  # [B]
            for f, h in enumerate(out[2]):
                metrics[f"accuracy_factor_{f}"] = jnp.mean(jnp.argmax(h, axis=-1) == factors[:, f])
        mean = jnp.mean(ce)
        return mean, {"loss": mean, **metrics}

    def logits(params, images):
        """``images [B, H, W, C]`` in [0, 1] -> ``[B, num_classes]`` (inference mode)."""
        return net.apply({"params": params}, images)[0]

    def features(params, images):
        """``images [B, H, W, C]`` in [0, 1] -> penultimate features ``[B, hidden]``."""
        return net.apply({"params": params}, images)[1]

    return Predictor(name=cfg.name, training=loss_training(init, loss),
                     classifier=Classifier(logits=logits, num_classes=num_classes, features=features))
