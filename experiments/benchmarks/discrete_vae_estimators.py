"""REINFORCE (NVIL) against the Gumbel-softmax relaxation for the categorical VAE on digits.

    python -m experiments.benchmarks.discrete_vae_estimators [--steps 3000] [--seed 0] \
        [--workdir_prefix runs/categorical_vae_digits] [--only reinforce,reinforce_loo4,gumbel] \
        [--grad_draws 200] [--out DIR]

Workdirs: ``<prefix>`` (reinforce), ``<prefix>_loo4``, ``<prefix>_gumbel``.

Trains ``experiments/configs/categorical_vae_digits.py`` with the same steps, seed and data
stream once per estimator (each into its workdir, unless a checkpoint is there already):
``reinforce`` (NVIL: baseline MLP, moving-average centring, variance normalisation; one draw
of ``z`` per example), ``reinforce_loo4`` (``reinforce_samples=4``: four draws per example and
the leave-one-out baseline) and ``gumbel`` (the relaxation), each also with the KL weight
warmed up from 0 to 1 over the first 1500 steps (``*_warmup``, ``model.kl_warmup_steps``), and
prints for each:

* the test ELBO of the *discrete* model (``likelihood.log_prob``: one-hot ``z``, 16 draws per
  image, exact KL to the uniform prior) over the 360 test images, in nats per image and in
  bits/dim (the README's Conventions), with the KL term;
* the variance of the encoder's gradient estimate: over ``--grad_draws`` draws of the latent
  noise on one fixed batch of 64 test images, the total variance ``E||g - E g||^2`` summed
  over the encoder's parameters, the squared norm of the mean ``||E g||^2`` and their ratio
  (signal-to-noise, higher is better), at the shared initial params (same seed: identical
  encoder and decoder) and at the trained params. The REINFORCE gradient is the surrogate's
  (score function with NVIL's baseline, plus the exact KL gradient); the Gumbel one is the
  pathwise gradient of the relaxed ELBO (biased: it estimates the relaxed objective's
  gradient).

Writes ``results.json`` to ``--out`` (default: a temporary directory).

Measured here (2 shared CPU cores; 3000 steps of batch 64 each, 35-85 s of training per row):
the table in ``experiments/configs/categorical_vae_digits.py`` (REINFORCE's posterior
collapses in all its variants; Gumbel-softmax reaches 2.107 bits/dim).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments import common
from gen_jax.latent import gumbel

CONFIG = "categorical_vae_digits"


def _has_checkpoint(workdir: str) -> bool:
    d = os.path.join(workdir, "checkpoints")
    return os.path.isdir(d) and bool(os.listdir(d))


def test_elbo(model, params, images: np.ndarray, seed: int, batch_size: int = 120) -> dict:
    """Mean test ELBO (nats per image, bits/dim) of ``likelihood.log_prob``."""
    from gen_jax.distributions.bpd import bits_per_dim

    fn = jax.jit(model.likelihood.log_prob)
    out = []
    for i in range(0, len(images), batch_size):
        out.append(np.asarray(fn(params, {"image": jnp.asarray(images[i:i + batch_size])},
                                 jax.random.PRNGKey(seed + i))))
    lp = np.concatenate(out)
    d = int(np.prod(images.shape[1:]))
    num_levels = int(model.data.num_levels)
    return {"elbo_nats": float(np.mean(lp - d * np.log(num_levels))),  # log P(levels) bound (nats/image)
            "bits_per_dim": float(np.mean(bits_per_dim(lp, d, num_levels)))}


def encoder_gradient_variance(model, params, model_state, batch, draws: int, seed: int) -> dict:
    """Variance over the latent noise of the training loss's encoder gradient on ``batch``."""
    loss = model.training.phases[0].loss
    params = {k: v for k, v in params.items() if k != "model_state"}

    @jax.jit
    def grads(key):
        g = jax.grad(lambda p: loss(p, model_state, batch, key)[0])(params)["encoder"]
        return jnp.concatenate([x.reshape(-1) for x in jax.tree.leaves(g)])

    g = np.stack([np.asarray(grads(jax.random.PRNGKey(seed + i))) for i in range(draws)]).astype(np.float64)
    mean = g.mean(0)
    total_var = float(np.sum(g.var(0, ddof=1)))
    return {"total_var": total_var, "mean_sq_norm": float(np.sum(mean ** 2)),
            "snr": float(np.sum(mean ** 2) / total_var)}


VARIANTS = {"reinforce": ("", {"model.estimator": "reinforce"}),
            "reinforce_loo4": ("_loo4", {"model.estimator": "reinforce", "model.reinforce_samples": "4"}),
            "gumbel": ("_gumbel", {"model.estimator": "gumbel"}),
            "reinforce_warmup": ("_warmup", {"model.estimator": "reinforce", "model.kl_warmup_steps": "1500"}),
            "reinforce_loo4_warmup": ("_loo4_warmup", {"model.estimator": "reinforce", "model.reinforce_samples": "4",
                                                       "model.kl_warmup_steps": "1500"}),
            "gumbel_warmup": ("_gumbel_warmup", {"model.estimator": "gumbel", "model.kl_warmup_steps": "1500"})}


def run_one(variant: str, workdir: str, steps: int, seed: int, draws: int, test: np.ndarray) -> dict:
    from gen_jax.model import MODEL_STATE
    from gen_jax.train.loop import eval_params, train

    exp = common.load_experiment(CONFIG, {**VARIANTS[variant][1], "train.steps": str(steps),
                                          "train.ckpt_every": str(steps), "train.sample_every": "0",
                                          "seed": str(seed)})
    info, model, mesh = common.setup(exp)
    seconds = None
    if not _has_checkpoint(workdir):
        print(f"training {CONFIG} ({variant}, {steps} steps) into {workdir}", flush=True)
        t0 = time.time()
        train(exp, model, workdir, common.build_stream(exp, info, mesh), info, progress=False, mesh=mesh)
        seconds = round(time.time() - t0, 1)
    state, meta = common.restore_state(exp, model, workdir, info)
    params = eval_params(state, model)
    batch = {"image": jnp.asarray(test[:64])}
    init_params = model.training.init(jax.random.PRNGKey(seed), batch)
    init_state = model.training.init_model_state(jax.random.PRNGKey(seed), batch)
    row = {"estimator": variant, "workdir": workdir, "step": int(meta.get("step", state.step)),
           "train_seconds": seconds, **test_elbo(model, params, test, seed)}
    kl = jax.jit(lambda p, x: jnp.sum(gumbel.kl_to_uniform(model_logits(exp, info, p, x)), -1))
    row["kl_nats"] = float(np.mean(np.asarray(kl(params, jnp.asarray(test)))))
    row["grad_init"] = encoder_gradient_variance(model, init_params, init_state, batch, draws, seed)
    row["grad_trained"] = encoder_gradient_variance(model, params, params[MODEL_STATE], batch, draws, seed)
    return row


def model_logits(exp, info, params, x):
    """The encoder's logits ``[B, N, K]`` (the KL column)."""
    from gen_jax.config import typed
    from gen_jax.latent import categorical_vae as cv
    from gen_jax.latent.objectives import PixelLikelihood

    cfg = typed(cv.CategoricalVAEConfig, exp.model, "config.model")
    shape = tuple(info.image_shape)
    lik = PixelLikelihood(cfg.likelihood, shape, int(info.num_levels), cfg.num_mixtures)
    net = cv.CategoricalVAENet(cfg, shape, lik.out_features)
    return net.apply({"params": {k: v for k, v in params.items() if k != "model_state"}}, x,
                     method=cv.CategoricalVAENet.logits)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir_prefix", default="runs/categorical_vae_digits")
    ap.add_argument("--only", default=",".join(VARIANTS))
    ap.add_argument("--grad_draws", type=int, default=200)
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    from gen_jax.data.datasets import get_info, load_split

    info = get_info("digits")
    test = (load_split("digits", "test")["image"].astype(np.float32) / (info.num_levels - 1)).astype(np.float32)
    only = [v for v in args.only.split(",") if v]
    unknown = sorted(set(only) - set(VARIANTS))
    if unknown:
        ap.error(f"--only: unknown variants {unknown} (known: {', '.join(VARIANTS)})")
    rows = [run_one(v, common.resolve_workdir(args.workdir_prefix + VARIANTS[v][0]), args.steps, args.seed,
                    args.grad_draws, test) for v in only]
    print(f"\ncategorical VAE on digits, {CONFIG}: 20 latents x 10 classes, {args.steps} steps, seed {args.seed}; "
          f"encoder-gradient variance over {args.grad_draws} noise draws on 64 test images")
    print(f"{'estimator':>22} {'step':>5} {'train s':>8} {'test ELBO nats':>15} {'bits/dim':>9} {'KL nats':>8} "
          f"{'var@init':>10} {'snr@init':>9} {'var@trained':>12} {'snr@trained':>12}")
    for r in rows:
        gi, gt = r["grad_init"], r["grad_trained"]
        print(f"{r['estimator']:>22} {r['step']:5d} {str(r['train_seconds']):>8} {r['elbo_nats']:15.2f} "
              f"{r['bits_per_dim']:9.3f} {r['kl_nats']:8.2f} {gi['total_var']:10.4g} {gi['snr']:9.3g} "
              f"{gt['total_var']:12.4g} {gt['snr']:12.3g}")
    out = args.out or tempfile.mkdtemp(prefix="discrete_vae_estimators_")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(rows, f, indent=1)
    print(f"wrote {os.path.join(out, 'results.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
