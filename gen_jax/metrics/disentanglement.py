"""Disentanglement metrics on data with known generative factors (numpy / sklearn, host side).

A representation (a code ``z [N, Z]``, usually an encoder's posterior mean) is scored against
ground-truth factors (int ``[N, K]``, e.g. shapes' ``shape, colour, size, x, y``):

* :func:`beta_vae_score` -- Higgins et al. 2017, Sec. 3 ("disentanglement metric") and App.
  A.4: pairs of examples sharing one fixed factor ``k``; the mean absolute difference of their
  codes over ``L`` pairs, ``z_diff = 1/L sum_l |z_1^l - z_2^l|``, is the input of a linear
  classifier predicting ``k``; the score is its held-out accuracy.
* :func:`factorvae_score` -- Kim & Mnih 2018, Sec. 4: codes normalized per dimension by their
  standard deviation over the data; for a batch with factor ``k`` fixed, the vote is
  ``(argmin_d Var_batch(z_d / s_d), k)``; a majority-vote classifier maps each dimension to
  its most frequent factor; the score is the accuracy of that classifier on held-out votes.
* :func:`mig` -- Chen et al. 2018, Eq. 6: the mutual information gap
  ``1/K sum_k (I(z_{j_k}; v_k) - max_{j != j_k} I(z_j; v_k)) / H(v_k)`` with ``j_k`` the most
  informative dimension, mutual information estimated on codes discretized into histogram bins.
* :func:`dci` -- Eastwood & Williams 2018, Sec. 3 (the three criteria): an importance matrix
  ``R [Z, K]`` from one tree ensemble per factor (sklearn's impurity importances),
  disentanglement ``D = sum_i rho_i (1 - H_K(P_i.))``, completeness
  ``C = 1/K sum_j (1 - H_Z(P~_.j))``, informativeness as the trees' held-out accuracy.

The intervention-style scores (beta-VAE, FactorVAE) need data generated with chosen factors: a
:class:`FactorSource` (``sample`` factors, ``sample_given`` with one factor fixed, ``observe``
them as model inputs); :func:`shapes_source` renders shapes images with
:func:`gen_jax.data.shapes.render_factors`. Factor names are validated everywhere
(:func:`factor_indices`): asking for a factor the data lacks raises a ``ValueError`` naming it
and the factors there are.

What the definitions imply on synthetic codes (tests/metrics/test_disentanglement.py): the
factors themselves plus noise dimensions score >= 0.9 on all four; a random rotation of them
brings MIG (~0.1) and DCI disentanglement (~0.3 with boosted trees) down, but the FactorVAE
score only to ~0.7-0.85: its vote is the dimension loading the fixed factor most, so it stays
above chance unless two factors share that dimension; an even (Hadamard) mixing puts it at
chance. The beta-VAE score stays high on rotations (its linear classifier undoes them; the
criticism of Kim & Mnih 2018, Sec. 4). Random-forest importances credit continuous noise
dimensions (impurity bias), so DCI with ``model='forest'`` scores the identity code ~0.6.
"""
from __future__ import annotations

from typing import Callable, Mapping, NamedTuple, Optional, Sequence

import numpy as np

from gen_jax.data import shapes as shapes_data

# ------------------------------------------------------------------------------------------
# Factors: names, validation, the factor-controlled generators.
# ------------------------------------------------------------------------------------------

DATASET_FACTORS = {"shapes": shapes_data.FACTORS}


def factor_indices(available: Sequence[str], names: Optional[Sequence[str]], where: str = "factors") -> list[int]:
    """Positions of ``names`` in ``available`` (all of them for ``None``); a ``ValueError``
    naming every unknown factor and the factors there are."""
    available = tuple(available)
    if names is None:
        return list(range(len(available)))
    if isinstance(names, str):
        names = (names,)
    missing = [n for n in names if n not in available]
    if missing:
        raise ValueError(f"{where}: unknown factor(s) {missing}; the data has factors {list(available)}")
    if not names:
        raise ValueError(f"{where}: ask for at least one factor of {list(available)}")
    return [available.index(n) for n in names]


def dataset_factors(arrays: Mapping[str, np.ndarray], dataset: str,
                    names: Optional[Sequence[str]] = None) -> np.ndarray:
    """The factor matrix int ``[N, K]`` of a loaded split (``load_split(dataset, split)``) for
    the factors ``names`` (default: all the dataset's factors, in its order)."""
    if dataset not in DATASET_FACTORS:
        raise ValueError(f"dataset {dataset!r} has no known generative factors; datasets with factors: "
                         f"{sorted(DATASET_FACTORS)}")
    available = DATASET_FACTORS[dataset]
    idx = factor_indices(available, names, f"{dataset} factors")
    return np.stack([np.asarray(arrays[available[i]]) for i in idx], axis=1).astype(np.int64)


class FactorSource(NamedTuple):
    """A generator of observations with chosen ground-truth factors.

    Attributes:
      names: the factor names, ``K`` of them; ``num_values``: values per factor.
      sample: ``(rng, n) -> int [n, K]``, factors drawn from the data distribution.
      sample_given: ``(rng, k, values int [n]) -> int [n, K]``: factors with column ``k`` equal
        to ``values`` and the others drawn from the data distribution given it.
      observe: ``(rng, factors int [n, K]) -> [n, ...]`` model inputs showing those factors.
    """

    names: tuple[str, ...]
    num_values: tuple[int, ...]
    sample: Callable
    sample_given: Callable
    observe: Callable


def shapes_source(heldout: bool = False) -> FactorSource:
    """Shapes with controlled factors: (shape, colour) uniform over the train/test combinations
    (``heldout=False``) or the held-out ones; size, x, y uniform and independent. ``observe``
    returns float32 ``[n, 32, 32, 3]`` in ``[0, 1]`` (the model batch's ``image``)."""
    combos = np.array(shapes_data.allowed_combos(heldout), np.int64)
    num_values = (len(shapes_data.SHAPES), len(shapes_data.COLOURS), len(shapes_data.SIZES),
                  len(shapes_data.XS), len(shapes_data.YS))

    def draw(rng, n, combo_rows):
        f = np.empty((n, 5), np.int64)
        f[:, :2] = combo_rows
        for k in (2, 3, 4):
            f[:, k] = rng.integers(0, num_values[k], size=n)
        return f

    def sample(rng, n):
        return draw(rng, n, combos[rng.integers(0, len(combos), size=n)])

    def sample_given(rng, k, values):
        values = np.asarray(values, np.int64)
        f = sample(rng, len(values))
        if k >= 2:
            f[:, k] = values
            return f
        for v in np.unique(values):  # (shape, colour) from the combinations with factor k = v
            rows = combos[combos[:, k] == v]
            if not len(rows):
                raise ValueError(f"no shapes combination has {shapes_data.FACTORS[k]} = {v}")
            sel = np.flatnonzero(values == v)
            f[sel, :2] = rows[rng.integers(0, len(rows), size=len(sel))]
        return f

    def observe(rng, factors):
        return shapes_data.render_factors(factors, rng).astype(np.float32) / 255.0

    return FactorSource(shapes_data.FACTORS, num_values, sample, sample_given, observe)


def _select(source: FactorSource, names: Optional[Sequence[str]]) -> list[int]:
    return factor_indices(source.names, names, "factors")


# ------------------------------------------------------------------------------------------
# Array checks.
# ------------------------------------------------------------------------------------------


def _codes(codes, where: str = "codes") -> np.ndarray:
    c = np.asarray(codes, np.float64)
    if c.ndim != 2 or c.shape[0] < 2 or c.shape[1] < 1:
        raise ValueError(f"{where} must be [N, Z] with N >= 2, Z >= 1, got shape {np.shape(codes)}")
    if not np.all(np.isfinite(c)):
        raise ValueError(f"{where} has non-finite values")
    return c


def _factors(factors, n: int, where: str = "factors") -> np.ndarray:
    f = np.asarray(factors)
    if f.ndim == 1:
        f = f[:, None]
    if f.ndim != 2 or f.shape[0] != n or not np.issubdtype(f.dtype, np.integer):
        raise ValueError(f"{where} must be int [N, K] with N = {n} (the codes' rows), got {f.dtype} {np.shape(factors)}")
    return f.astype(np.int64)


# ------------------------------------------------------------------------------------------
# Discrete information.
# ------------------------------------------------------------------------------------------


def discretize(codes, num_bins: int = 20) -> np.ndarray:
    """Each code dimension cut into ``num_bins`` equal-width bins over its range (Chen et al.
    2018's estimator for MIG on non-factorized codes; the histogram binning of Locatello et al.
    2019): int ``[N, Z]`` bin ids."""
    c = _codes(codes)
    if num_bins < 2:
        raise ValueError(f"num_bins must be >= 2, got {num_bins}")
    out = np.empty(c.shape, np.int64)
    for j in range(c.shape[1]):
        edges = np.histogram_bin_edges(c[:, j], bins=num_bins)
        out[:, j] = np.digitize(c[:, j], edges[1:-1])
    return out


def entropy(labels) -> float:
    """``H(a) = -sum_a p(a) log p(a)`` (nats) of the empirical distribution of int ``[N]`` labels."""
    _, counts = np.unique(np.asarray(labels), return_counts=True)
    p = counts / counts.sum()
    return float(-np.sum(p * np.log(p)))


def mutual_information(a, b) -> float:
    """``I(a; b) = sum_{a,b} p(a,b) log p(a,b) / (p(a) p(b))`` (nats) of the empirical joint of
    two int ``[N]`` label arrays (a contingency table)."""
    a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
    if a.shape != b.shape:
        raise ValueError(f"mutual_information: arrays of different lengths {a.shape} and {b.shape}")
    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    joint = np.zeros((ai.max() + 1, bi.max() + 1))
    np.add.at(joint, (ai, bi), 1.0)
    joint /= joint.sum()
    pa, pb = joint.sum(1, keepdims=True), joint.sum(0, keepdims=True)
    nz = joint > 0
    return float(np.sum(joint[nz] * np.log(joint[nz] / (pa @ pb)[nz])))


def mutual_information_matrix(discrete_codes, factors) -> np.ndarray:
    """``I(z_j; v_k)`` ``[Z, K]`` (nats) between discretized codes ``[N, Z]`` and factors ``[N, K]``."""
    z = np.asarray(discrete_codes)
    f = _factors(factors, z.shape[0])
    return np.array([[mutual_information(z[:, j], f[:, k]) for k in range(f.shape[1])]
                     for j in range(z.shape[1])])


def mig(codes, factors, num_bins: int = 20) -> dict:
    """Mutual information gap (Chen et al. 2018, Eq. 6).

    ``MIG = 1/K sum_k (I(z_{j(k)}; v_k) - max_{j != j(k)} I(z_j; v_k)) / H(v_k)``, ``j(k) =
    argmax_j I(z_j; v_k)``, the mutual information of the codes discretized by
    :func:`discretize`. Args: ``codes`` float ``[N, Z]`` (Z >= 2), ``factors`` int ``[N, K]``.
    Returns ``{'mig': float, 'per_factor': [K], 'mi': [Z, K]}``; a constant factor
    (``H = 0``) is an error.
    """
    c = _codes(codes)
    if c.shape[1] < 2:
        raise ValueError(f"mig needs codes with at least 2 dimensions, got {c.shape}")
    f = _factors(factors, c.shape[0])
    mi = mutual_information_matrix(discretize(c, num_bins), f)
    h = np.array([entropy(f[:, k]) for k in range(f.shape[1])])
    if np.any(h <= 0):
        raise ValueError(f"mig: factor column(s) {np.flatnonzero(h <= 0).tolist()} are constant (zero entropy)")
    top2 = np.sort(mi, axis=0)[-2:]  # [2, K]
    gap = (top2[1] - top2[0]) / h
    return {"mig": float(np.mean(gap)), "per_factor": gap, "mi": mi}


# ------------------------------------------------------------------------------------------
# DCI.
# ------------------------------------------------------------------------------------------


def _entropy_rows(p: np.ndarray, base: int) -> np.ndarray:
    """``-sum_j p_ij log_base p_ij`` per row of a row-stochastic matrix."""
    logp = np.log(np.where(p > 0, p, 1.0)) / np.log(base)
    return -np.sum(p * logp, axis=1)


def dci_from_importance(importance) -> dict:
    """Disentanglement and completeness of an importance matrix ``R [Z, K]`` (``R_ij >= 0``, how
    much code dimension ``i`` matters for factor ``j``; Eastwood & Williams 2018, Sec. 3):

    * disentanglement (Sec. 3.1): ``P_ij = R_ij / sum_k R_ik``; ``D_i = 1 - H_K(P_i.)`` (entropy
      in base K); ``D = sum_i rho_i D_i`` with ``rho_i = sum_j R_ij / sum_ij R_ij``;
    * completeness (Sec. 3.2): ``P~_ij = R_ij / sum_k R_kj``; ``C_j = 1 - H_Z(P~_.j)`` (base Z);
      ``C = 1/K sum_j C_j``.
    """
    r = np.asarray(importance, np.float64)
    if r.ndim != 2 or np.any(r < 0) or r.sum() <= 0:
        raise ValueError(f"importance must be a non-negative [Z, K] matrix with a positive sum, got {r.shape}")
    z, k = r.shape
    rows = r.sum(1)
    p = r / np.where(rows > 0, rows, 1.0)[:, None]
    d_i = 1.0 - _entropy_rows(p, k) if k > 1 else np.ones(z)
    disentanglement = float(np.sum(rows / rows.sum() * d_i))
    cols = r.sum(0)
    pt = (r / np.where(cols > 0, cols, 1.0)[None]).T  # [K, Z]
    c_j = 1.0 - _entropy_rows(pt, z) if z > 1 else np.ones(k)
    return {"disentanglement": disentanglement, "completeness": float(np.mean(c_j)),
            "per_code": d_i, "per_factor": c_j}


def dci(codes, factors, codes_test=None, factors_test=None, *, test_fraction: float = 0.3,
        model: str = "gbt", n_estimators: int = 50, seed: int = 0) -> dict:
    """DCI (Eastwood & Williams 2018): one sklearn tree ensemble per factor predicts the factor
    from the code; their impurity importances form ``R [Z, K]`` (each column sums to 1) and give
    disentanglement and completeness (:func:`dci_from_importance`); informativeness is the mean
    held-out accuracy of those predictors (Eastwood & Williams report the error ``1 - acc``).

    Args:
      codes, factors: training codes float ``[N, Z]`` and factors int ``[N, K]``.
      codes_test, factors_test: the held-out set; without them a ``test_fraction`` of the rows
        (a seeded permutation) is held out.
      model: ``'gbt'`` (``GradientBoostingClassifier``, as Locatello et al. 2019) or
        ``'forest'`` (``RandomForestClassifier``, as Eastwood & Williams).
    Returns ``{'disentanglement', 'completeness', 'informativeness', 'train_accuracy',
    'importance' [Z, K], 'per_factor_accuracy' [K]}``.
    """
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier

    c = _codes(codes)
    f = _factors(factors, c.shape[0])
    if codes_test is None:
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
        perm = np.random.default_rng(seed).permutation(len(c))
        n_test = max(1, int(round(test_fraction * len(c))))
        te, tr = perm[:n_test], perm[n_test:]
        c, f, ct, ft = c[tr], f[tr], c[te], f[te]
    else:
        ct = _codes(codes_test, "codes_test")
        ft = _factors(factors_test, ct.shape[0], "factors_test")
        if ct.shape[1] != c.shape[1] or ft.shape[1] != f.shape[1]:
            raise ValueError(f"codes_test/factors_test {ct.shape}/{ft.shape} do not match codes/factors "
                             f"{c.shape}/{f.shape}")
    if model not in ("gbt", "forest"):
        raise ValueError(f"model must be 'gbt' or 'forest', got {model!r}")
    importance = np.zeros((c.shape[1], f.shape[1]))
    train_acc, test_acc = [], []
    for k in range(f.shape[1]):
        if model == "gbt":
            clf = GradientBoostingClassifier(n_estimators=n_estimators, random_state=seed)
        else:
            clf = RandomForestClassifier(n_estimators=n_estimators, random_state=seed, n_jobs=1)
        clf.fit(c, f[:, k])
        importance[:, k] = np.abs(clf.feature_importances_)
        train_acc.append(float(np.mean(clf.predict(c) == f[:, k])))
        test_acc.append(float(np.mean(clf.predict(ct) == ft[:, k])))
    out = dci_from_importance(importance)
    out.update(informativeness=float(np.mean(test_acc)), train_accuracy=float(np.mean(train_acc)),
               importance=importance, per_factor_accuracy=np.array(test_acc))
    return out


# ------------------------------------------------------------------------------------------
# Intervention-style scores.
# ------------------------------------------------------------------------------------------


def _encode(encode: Callable, x, where: str) -> np.ndarray:
    z = np.asarray(encode(x))
    if z.ndim != 2 or z.shape[0] != len(x):
        raise ValueError(f"{where}: encode(x) must return codes [N, Z] with N = {len(x)}, got shape {z.shape}")
    return _codes(z, f"{where}: encode(x)")


def _fixed_batch(source: FactorSource, rng, k: int, n: int, value=None) -> np.ndarray:
    """``n`` factor vectors sharing factor ``k`` (one value drawn from the data, or ``value``)."""
    if value is None:
        value = source.sample(rng, 1)[0, k]
    return source.sample_given(rng, k, np.full((n,), value, np.int64))


def beta_vae_score(encode: Callable, source: FactorSource, rng: np.random.Generator, *,
                   factors: Optional[Sequence[str]] = None, batch_size: int = 64, num_train: int = 500,
                   num_eval: int = 250) -> dict:
    """The beta-VAE disentanglement metric (Higgins et al. 2017, Sec. 3, App. A.4).

    One point: a factor ``k`` uniform over ``factors``; ``L = batch_size`` pairs
    ``(v_1^l, v_2^l)`` with ``[v_1^l]_k = [v_2^l]_k`` (the rest drawn given it); ``z_diff =
    1/L sum_l |z(x_1^l) - z(x_2^l)|`` ``[Z]``. A linear classifier (multinomial logistic
    regression) is fit on ``num_train`` points to predict ``k``; the score is its accuracy on
    ``num_eval`` fresh points. ``encode(x [n, ...]) -> codes [n, Z]``.
    Returns ``{'train_accuracy', 'eval_accuracy'}``.
    """
    from sklearn.linear_model import LogisticRegression

    idx = _select(source, factors)
    if len(idx) < 2:
        raise ValueError("beta_vae_score needs at least two factors to tell apart")

    def points(n):
        xs, ys = [], []
        for _ in range(n):
            k = idx[rng.integers(len(idx))]
            f1 = source.sample(rng, batch_size)
            f2 = source.sample_given(rng, k, f1[:, k])
            z1 = _encode(encode, source.observe(rng, f1), "beta_vae_score")
            z2 = _encode(encode, source.observe(rng, f2), "beta_vae_score")
            xs.append(np.mean(np.abs(z1 - z2), axis=0))
            ys.append(k)
        return np.stack(xs), np.array(ys)

    x_tr, y_tr = points(num_train)
    x_ev, y_ev = points(num_eval)
    clf = LogisticRegression(max_iter=2000)
    scale = x_tr.std(0) + 1e-12  # the classifier sees standardized features (scale-free score)
    clf.fit(x_tr / scale, y_tr)
    return {"train_accuracy": float(clf.score(x_tr / scale, y_tr)),
            "eval_accuracy": float(clf.score(x_ev / scale, y_ev))}


def factorvae_score(encode: Callable, source: FactorSource, rng: np.random.Generator, *,
                    factors: Optional[Sequence[str]] = None, batch_size: int = 64, num_train: int = 500,
                    num_eval: int = 250, num_variance: int = 5000, prune_below: float = 0.05) -> dict:
    """The FactorVAE disentanglement metric (Kim & Mnih 2018, Sec. 4).

    ``s_d``: the standard deviation of code dimension ``d`` over ``num_variance`` examples of
    the data; dimensions with variance below ``prune_below`` (collapsed to the prior) are left
    out. One vote: a factor ``k`` uniform over ``factors`` fixed at one value in a batch of
    ``L = batch_size`` examples; ``d* = argmin_d Var_batch(z_d / s_d)``; the vote is
    ``(d*, k)``. The majority-vote classifier maps each ``d`` to ``argmax_k V[d, k]`` over
    ``num_train`` votes; the score is its accuracy on ``num_eval`` fresh votes.
    Returns ``{'train_accuracy', 'eval_accuracy', 'active_dims', 'votes' [Z, K]}``
    (``eval_accuracy`` 0 when every dimension is collapsed).
    """
    idx = _select(source, factors)
    z_all = _encode(encode, source.observe(rng, source.sample(rng, num_variance)), "factorvae_score")
    var = z_all.var(0)
    active = var >= prune_below
    scale = np.sqrt(np.where(active, var, 1.0))
    if not active.any():
        return {"train_accuracy": 0.0, "eval_accuracy": 0.0, "active_dims": 0,
                "votes": np.zeros((len(var), len(idx)), np.int64)}

    def votes(n):
        v = np.zeros((len(var), len(idx)), np.int64)
        for _ in range(n):
            j = rng.integers(len(idx))
            z = _encode(encode, source.observe(rng, _fixed_batch(source, rng, idx[j], batch_size)),
                        "factorvae_score") / scale
            within = np.where(active, z.var(0), np.inf)
            v[np.argmin(within), j] += 1
        return v

    v_tr, v_ev = votes(num_train), votes(num_eval)
    pred = np.argmax(v_tr, axis=1)  # each dimension's majority factor
    rows = np.arange(len(var))
    return {"train_accuracy": float(v_tr[rows, pred].sum() / max(v_tr.sum(), 1)),
            "eval_accuracy": float(v_ev[rows, pred].sum() / max(v_ev.sum(), 1)),
            "active_dims": int(active.sum()), "votes": v_tr}
