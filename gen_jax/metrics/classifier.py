"""Small CNN classifiers used as feature networks for the embedded datasets.

For 8x8x1 digits and 32x32x3 shapes the standard Inception-v3 features are poorly suited
(the images would be upsampled ~40x and the classes are not ImageNet's), so FID/KID/
precision/recall on the embedded data use the penultimate layer of a classifier trained on
the data itself. The metric definitions are unchanged; only the feature map differs, so
numbers are comparable within this library, not with published Inception-based values.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
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
    to the features before the logits and needs a ``'dropout'`` rng.
    """

    num_classes: int
    features: tuple[int, ...] = (32, 64)
    hidden: int = 128
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, images, train: bool = False):
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
        return logits, feats


@dataclasses.dataclass(frozen=True)
class ClassifierConfig(Checked):
    """Typed view of ``config.model`` for the feature classifier (``typed(ClassifierConfig, cfg)``).

    Attributes:
      name: model name (tables, file names).
      features: channels of the conv stages.
      hidden: width of the feature (penultimate) layer.
      dropout_rate: dropout on the features during training (0 disables it).
    """

    name: str = "classifier"
    features: tuple[int, ...] = (32, 64)
    hidden: int = 128
    dropout_rate: float = 0.0

    def __post_init__(self):
        self.require(bool(self.features) and all(f >= 1 for f in self.features), "features",
                     f"need positive channel counts, got {self.features}")
        self.positive("hidden")
        self.in_range("dropout_rate", 0.0, 1.0, hi_open=True)


def make_network(cfg: Any, num_classes: int) -> FeatureClassifier:
    """The :class:`FeatureClassifier` described by ``cfg`` (a :class:`ClassifierConfig` or
    ``config.model``) for ``num_classes`` classes."""
    cfg = typed(ClassifierConfig, cfg, "config.model")
    return FeatureClassifier(num_classes=num_classes, features=tuple(cfg.features),
                             hidden=cfg.hidden, dropout_rate=cfg.dropout_rate)


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
      with metrics ``loss`` and ``accuracy`` (``key`` drives dropout), and whose
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

    def init(key, batch):
        images = batch["image"]
        check_images(images)
        return net.init({"params": key}, images[:1])["params"]

    def loss(params, batch, key):
        images, labels = batch["image"], batch["label"]
        check_images(images)
        if labels.shape != images.shape[:1]:
            raise ValueError(f"batch['label'] must be [B={images.shape[0]}], got {labels.shape}")
        logits, _ = net.apply({"params": params}, images, train=True, rngs={"dropout": key})
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)  # [B]
        acc = jnp.mean(jnp.argmax(logits, axis=-1) == labels)
        mean = jnp.mean(ce)
        return mean, {"loss": mean, "accuracy": acc}

    def logits(params, images):
        """``images [B, H, W, C]`` in [0, 1] -> ``[B, num_classes]`` (inference mode)."""
        return net.apply({"params": params}, images)[0]

    def features(params, images):
        """``images [B, H, W, C]`` in [0, 1] -> penultimate features ``[B, hidden]``."""
        return net.apply({"params": params}, images)[1]

    return Predictor(name=cfg.name, training=loss_training(init, loss),
                     classifier=Classifier(logits=logits, num_classes=num_classes, features=features))
