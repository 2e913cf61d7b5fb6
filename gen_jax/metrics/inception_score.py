"""Inception Score (Salimans et al. 2016)."""
from __future__ import annotations

import numpy as np
from scipy.special import log_softmax, logsumexp


def inception_score(logits, num_splits: int = 10) -> tuple[float, float]:
    """Inception Score ``IS = exp(E_x KL(p(y|x) || p(y)))``.

    Salimans et al. 2016, "Improved techniques for training GANs", Sec. 4. ``p(y)`` is the
    marginal of ``p(y|x)`` over each split; the score is computed on ``num_splits`` disjoint
    consecutive splits and summarised by mean and standard deviation, as in the paper's code.
    Ranges from 1 (uninformative or collapsed predictions) to ``C`` (confident and balanced).

    Args:
      logits: ``[N, C]`` classifier logits (any additive offset per row is irrelevant).
      num_splits: number of splits (clipped to ``N``).

    Returns:
      ``(mean, std)`` over the splits.
    """
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or logits.shape[0] < 1 or logits.shape[1] < 2:
        raise ValueError(f"logits: expected shape [N, C] with C >= 2, got {logits.shape}")
    if not np.all(np.isfinite(logits)):
        raise ValueError("logits contain NaN or inf")
    if num_splits < 1:
        raise ValueError(f"num_splits must be >= 1, got {num_splits}")
    log_p = log_softmax(logits, axis=1)  # [N, C]
    scores = []
    for part in np.array_split(log_p, min(num_splits, logits.shape[0]), axis=0):
        log_py = logsumexp(part, axis=0) - np.log(part.shape[0])  # [C]
        kl = np.sum(np.exp(part) * (part - log_py[None, :]), axis=1)  # [n]
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))
