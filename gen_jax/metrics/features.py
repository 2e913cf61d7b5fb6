"""Batched feature extraction and one-call scoring of samples against reference data."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from gen_jax.config import typed
from gen_jax.metrics import classifier as classifier_lib
from gen_jax.metrics import fid as fid_lib
from gen_jax.metrics import inception as inception_lib
from gen_jax.metrics.inception_score import inception_score
from gen_jax.metrics.precision_recall import precision_recall


@dataclasses.dataclass(frozen=True)
class FeatureExtractor:
    """A feature network with its parameters, run in fixed-size batches.

    Attributes:
      apply: jitted ``(params, images [B, H, W, C]) -> (logits [B, C], features [B, F])``.
      params: the network's variables.
      batch_size: images per call; the last batch is zero-padded to this size so ``apply``
        compiles once per image shape.
      name: label for reports.
    """

    apply: Callable
    params: Any
    batch_size: int = 256
    name: str = "features"

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"FeatureExtractor.batch_size must be >= 1, got {self.batch_size}")

    def __call__(self, images) -> dict[str, np.ndarray]:
        """``images [N, H, W, C]`` in ``[0, 1]`` -> ``{'features': [N, F] float64,
        'logits': [N, C] float64}``."""
        images = np.asarray(images, dtype=np.float32)
        if images.ndim != 4 or images.shape[0] < 1:
            raise ValueError(f"images must be [N, H, W, C] with N >= 1, got {images.shape}")
        n, b = images.shape[0], self.batch_size
        feats, logits = [], []
        for s in range(0, n, b):
            chunk = images[s:s + b]
            k = chunk.shape[0]
            if k < b:
                chunk = np.concatenate([chunk, np.zeros((b - k,) + chunk.shape[1:], np.float32)])
            lg, ft = self.apply(self.params, jnp.asarray(chunk))
            logits.append(np.asarray(lg, dtype=np.float64)[:k])
            feats.append(np.asarray(ft, dtype=np.float64)[:k])
        return {"features": np.concatenate(feats), "logits": np.concatenate(logits)}


def make_classifier_extractor(cfg: Any, params: Any, batch_size: int = 256) -> FeatureExtractor:
    """Extractor from a trained :class:`~gen_jax.metrics.classifier.FeatureClassifier`.

    Args:
      cfg: the classifier's ``ClassifierConfig`` or ``config.model`` mapping.
      params: its trained ``params`` (the number of classes is read from ``params['logits']``).
      batch_size: images per compiled call.
    """
    cfg = typed(classifier_lib.ClassifierConfig, cfg, "config.model")
    try:
        num_classes = int(params["logits"]["kernel"].shape[-1])
    except (KeyError, TypeError, AttributeError) as e:
        raise ValueError("params do not look like FeatureClassifier params "
                         "(no params['logits']['kernel'])") from e
    net = classifier_lib.make_network(cfg, num_classes)
    apply = jax.jit(lambda p, x: net.apply({"params": p}, x))
    return FeatureExtractor(apply=apply, params=params, batch_size=batch_size, name=cfg.name)


def make_inception_extractor(variables: Any, batch_size: int = 32) -> FeatureExtractor:
    """Extractor of Inception-v3 pool3 features (2048-d) and logits.

    Args:
      variables: ``{'params', 'batch_stats'}`` from
        :func:`~gen_jax.metrics.inception.load_inception_params`.
      batch_size: images per compiled call (each is resized to 299x299).
    """
    num_classes = int(variables["params"]["fc"]["kernel"].shape[-1])
    net = inception_lib.InceptionV3(num_classes=num_classes)
    apply = jax.jit(lambda v, x: net.apply(v, inception_lib.preprocess(x)))
    return FeatureExtractor(apply=apply, params=variables, batch_size=batch_size,
                            name="inception_v3")


def validate_images(x, name: str) -> np.ndarray:
    """Checks ``x`` is a finite float ``[N, H, W, C]`` array in ``[0, 1]``; returns it."""
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"{name}: expected images of shape [N, H, W, C], got shape {x.shape}")
    if x.shape[0] < 2:
        raise ValueError(f"{name}: need at least 2 images, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{name}: expected a float array in [0, 1], got dtype {x.dtype}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name}: contains NaN or inf")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(f"{name}: values must lie in [0, 1], got range [{lo:.4g}, {hi:.4g}]")
    return x


def score_samples(samples, reference, extractor: FeatureExtractor, seed: int = 0,
                  kid_subset_size: int = 1000, kid_num_subsets: int = 100, k: int = 3,
                  is_splits: int = 10, labels=None) -> dict[str, float]:
    """Scores generated images against reference images in one feature space.

    Metrics: FID (Heusel et al. 2017), KID mean/std (Binkowski et al. 2018), improved
    precision/recall with ``k``-NN radii (Kynkaanniemi et al. 2019) and the Inception Score
    of the samples from the extractor's logits (Salimans et al. 2016).

    Args:
      samples: ``[N, H, W, C]`` float in ``[0, 1]``.
      reference: ``[M, H, W, C]`` float in ``[0, 1]`` (e.g. the test split), same ``H, W, C``.
      extractor: a :class:`FeatureExtractor`.
      seed: seed of the KID subsets.
      kid_subset_size, kid_num_subsets: KID subsets (size clipped to ``min(N, M)``).
      k: neighbourhood size for precision/recall (clipped to ``min(N, M) - 1``).
      is_splits: Inception Score splits.
      labels: optional int ``[N]``, the class each sample was drawn for (a conditional
        model): adds ``label_accuracy``, the fraction of samples the feature network
        classifies as their label.

    Returns:
      ``{'fid', 'kid', 'kid_std', 'precision', 'recall', 'inception_score', 'class_kl'}`` (and
      ``label_accuracy`` with ``labels``) as floats. ``class_kl`` is the KL divergence (nats)
      of the histogram of the classes the feature network assigns to the samples from the
      uniform one (0 when every class is as frequent; ``log C`` when all samples are one
      class): mode coverage over the classes.
    """
    samples = validate_images(samples, "samples")
    reference = validate_images(reference, "reference")
    if samples.shape[1:] != reference.shape[1:]:
        raise ValueError(f"samples and reference differ in image shape: samples "
                         f"{samples.shape[1:]} vs reference {reference.shape[1:]}")
    fake = extractor(samples)
    real = extractor(reference)
    kid, kid_std = fid_lib.kernel_inception_distance(
        real["features"], fake["features"], num_subsets=kid_num_subsets,
        subset_size=kid_subset_size, seed=seed)
    k = min(k, samples.shape[0] - 1, reference.shape[0] - 1)
    prec, rec = precision_recall(real["features"], fake["features"], k=k)
    is_mean, _ = inception_score(fake["logits"], num_splits=is_splits)
    out = {
        "fid": fid_lib.fid_from_features(real["features"], fake["features"]),
        "kid": kid,
        "kid_std": kid_std,
        "precision": prec,
        "recall": rec,
        "inception_score": is_mean,
    }
    hist = np.bincount(np.argmax(fake["logits"], axis=-1), minlength=fake["logits"].shape[-1]) / samples.shape[0]
    nz = hist > 0
    out["class_kl"] = float(np.sum(hist[nz] * np.log(hist[nz] * hist.size)))
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (samples.shape[0],):
            raise ValueError(f"labels must be [N={samples.shape[0]}] (one per sample), got shape {labels.shape}")
        out["label_accuracy"] = float(np.mean(np.argmax(fake["logits"], axis=-1) == labels))
    return out
