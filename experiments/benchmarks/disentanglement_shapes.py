"""Disentanglement of the VAE, beta-VAE and FactorVAE on shapes: one table of all four metrics.

    python -m experiments.benchmarks.disentanglement_shapes [--only vae,beta_vae,factorvae] [--out DIR]
        [--num_votes 300] [--seed 0]

Rows (each restored from its workdir, trained there first with its config when the workdir holds
no checkpoint):

* ``vae``: beta_vae_shapes at ``model.beta=1`` (runs/beta_vae_shapes_beta1), the plain VAE on the
  same network as the two others (vae_shapes' 32-d logistic-mixture VAE trains ~10x slower per
  step on 2 CPU cores; ``--only vae_shapes`` scores it when runs/vae_shapes holds a checkpoint);
* ``beta_vae``: beta_vae_shapes (beta = 4); ``factorvae``: factorvae_shapes (gamma = 10);
* sanity rows on the shapes factors themselves: ``identity`` (the 5 standardized factors plus 5
  unit-noise dimensions) and ``rotated`` (a random rotation of that 10-d code).

Columns (gen_jax.metrics.disentanglement; codes are the posterior means ``codec.encode``):
``beta_vae`` (Higgins et al. 2017; held-out accuracy of the linear classifier, votes of 64 pairs),
``factorvae`` (Kim & Mnih 2018; majority-vote accuracy on held-out votes, batches of 64),
both over images rendered with controlled factors (``shapes_source``: (shape, colour) from the
train combinations); ``mig`` (Chen et al. 2018, 20 bins) on 5000 train images; ``dci_d``,
``dci_c``, ``dci_i`` (Eastwood & Williams 2018; gradient-boosted trees fit on 3000 train codes,
informativeness = accuracy on the 2000 test codes); ``active``: code dimensions with variance
>= 0.05 (the FactorVAE score's pruning); ``kl``: the mean KL(q(z|x) || p(z)) over the test split
in nats. Prints the table and writes ``results.json`` to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile

import numpy as np

from experiments import common

ROWS = {  # row: (config, overrides, workdir)
    "vae": ("beta_vae_shapes", {"model.beta": "1.0"}, "runs/beta_vae_shapes_beta1"),
    "beta_vae": ("beta_vae_shapes", {}, "runs/beta_vae_shapes"),
    "factorvae": ("factorvae_shapes", {}, "runs/factorvae_shapes"),
    "vae_shapes": ("vae_shapes", {}, "runs/vae_shapes"),
}
DEFAULT = ("vae", "beta_vae", "factorvae")
COLUMNS = ("beta_vae", "factorvae", "mig", "dci_d", "dci_c", "dci_i", "active", "kl")


def _has_checkpoint(workdir: str) -> bool:
    d = os.path.join(workdir, "checkpoints")
    return os.path.isdir(d) and bool(os.listdir(d))


def batched(fn, batch_size: int = 500):
    """``fn(x)`` applied in fixed-size batches (one compiled shape; the last batch padded)."""
    def run(x):
        out = []
        for i in range(0, len(x), batch_size):
            chunk = x[i:i + batch_size]
            m = len(chunk)
            if m < batch_size:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - m, 0)])
            out.append(np.asarray(fn(chunk))[:m])
        return np.concatenate(out)
    return run


def restore(row: str):
    """``(model, params, exp, step)`` of a row, training it first when its workdir is empty."""
    from gen_jax.train.loop import eval_params, train

    config, overrides, workdir = ROWS[row]
    workdir = common.resolve_workdir(workdir)
    exp = common.load_experiment(config, overrides)
    info, model, mesh = common.setup(exp)
    if not _has_checkpoint(workdir):
        print(f"training {config} {overrides or ''} into {workdir}", flush=True)
        train(exp, model, workdir, common.build_stream(exp, info, mesh), info, progress=False, mesh=mesh)
    state, meta = common.restore_state(exp, model, workdir, info)
    return model, eval_params(state, model), exp, int(meta.get("step", state.step))


def score_code(encode, source, codes_train, factors_train, codes_test, factors_test, rng, num_votes: int) -> dict:
    """Every metric of one representation: ``encode`` maps ``source.observe`` outputs to codes."""
    from gen_jax.metrics import disentanglement as dm

    bv = dm.beta_vae_score(encode, source, rng, num_train=num_votes, num_eval=num_votes // 2)
    fv = dm.factorvae_score(encode, source, rng, num_train=num_votes, num_eval=num_votes // 2)
    mig = dm.mig(codes_train, factors_train)
    n_fit = min(3000, len(codes_train))
    dci = dm.dci(codes_train[:n_fit], factors_train[:n_fit], codes_test, factors_test)
    return {"beta_vae": bv["eval_accuracy"], "factorvae": fv["eval_accuracy"], "mig": mig["mig"],
            "mig_per_factor": mig["per_factor"].tolist(), "dci_d": dci["disentanglement"],
            "dci_c": dci["completeness"], "dci_i": dci["informativeness"],
            "dci_per_factor_accuracy": dci["per_factor_accuracy"].tolist(), "active": fv["active_dims"]}


def sanity_rows(train_f, test_f, rng, num_votes: int) -> dict:
    """The identity and rotated codes of the shapes factors (codes computed from the factors)."""
    from scipy.stats import special_ortho_group

    from gen_jax.metrics import disentanglement as dm

    shapes_src = dm.shapes_source()
    mean, std = train_f.mean(0), train_f.std(0)
    rotation = special_ortho_group.rvs(10, random_state=0)
    out = {}
    for name, mix in (("identity", np.eye(10)), ("rotated", rotation)):
        def code(f, r, mix=mix):
            return np.concatenate([(f - mean) / std, r.normal(size=(len(f), 5))], 1) @ mix.T

        source = dm.FactorSource(shapes_src.names, shapes_src.num_values, shapes_src.sample,
                                 shapes_src.sample_given, lambda r, f, code=code: code(f, r))
        out[name] = score_code(lambda z: z, source, code(train_f, rng), train_f, code(test_f, rng), test_f,
                               rng, num_votes)
    return out


def model_row(row: str, train, test, train_f, test_f, rng, num_votes: int) -> dict:
    import jax

    from gen_jax import distributions as dist
    from gen_jax.metrics import disentanglement as dm

    model, params, exp, step = restore(row)
    encode = batched(jax.jit(lambda x: model.codec.encode(params, x)))
    post = batched(jax.jit(lambda x: dist.kl_standard_normal(*model.codec.posterior(params, x))))
    to01 = lambda a: a.astype(np.float32) / 255.0
    codes_train, codes_test = encode(to01(train["image"])), encode(to01(test["image"]))
    out = score_code(encode, dm.shapes_source(), codes_train, train_f, codes_test, test_f, rng, num_votes)
    out.update(kl=float(np.mean(post(to01(test["image"])))), step=step, config=ROWS[row][0],
               overrides=ROWS[row][1], workdir=ROWS[row][2])
    return out


def format_table(rows: dict) -> str:
    head = f"{'model':<12}" + "".join(f"{c:>10}" for c in COLUMNS)
    lines = [head, "-" * len(head)]
    for name, r in rows.items():
        cells = []
        for c in COLUMNS:
            v = r.get(c)
            cells.append(f"{'-':>10}" if v is None else (f"{v:>10d}" if isinstance(v, int) else f"{v:>10.3f}"))
        lines.append(f"{name:<12}" + "".join(cells))
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default=",".join(DEFAULT), help=f"comma-separated rows of {sorted(ROWS)}")
    p.add_argument("--num_votes", type=int, default=300, help="training votes of the beta-VAE / FactorVAE scores")
    p.add_argument("--no_sanity", action="store_true", help="skip the identity / rotated rows")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "disentanglement_shapes"))
    p.add_argument("--reuse", action="store_true",
                   help="take the rows already in --out/results.json instead of scoring them again "
                        "(each row is scored with its own generator seeded by --seed, so the table is the same)")
    args = p.parse_args(argv)
    rows = [r for r in args.only.split(",") if r]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        p.error(f"--only: unknown rows {unknown}; known: {sorted(ROWS)}")

    from gen_jax.data.datasets import load_split
    from gen_jax.metrics import disentanglement as dm

    train = {k: v[:5000] for k, v in load_split("shapes", "train").items()}
    test = load_split("shapes", "test")
    train_f, test_f = dm.dataset_factors(train, "shapes"), dm.dataset_factors(test, "shapes")
    path = os.path.join(args.out, "results.json")
    previous = {}
    if args.reuse and os.path.exists(path):
        with open(path) as f:
            previous = json.load(f)
    results = {}
    for row in rows:
        if row in previous:
            results[row] = previous[row]
            continue
        results[row] = model_row(row, train, test, train_f, test_f, np.random.default_rng(args.seed), args.num_votes)
        print(f"{row}: {json.dumps({k: v for k, v in results[row].items() if k in COLUMNS})}", flush=True)
    if not args.no_sanity:
        if "identity" in previous and "rotated" in previous:
            results.update(identity=previous["identity"], rotated=previous["rotated"])
        else:
            results.update(sanity_rows(train_f, test_f, np.random.default_rng(args.seed), args.num_votes))
    print(f"\nfactors {list(dm.DATASET_FACTORS['shapes'])}; codes: posterior means\n")
    print(format_table(results))
    os.makedirs(args.out, exist_ok=True)
    with open(path, "w") as f:
        json.dump({**previous, **results}, f, indent=1)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
