"""Speed of the transformer LM train step against a PyTorch eager step of the same network.

    python -m experiments.benchmarks.transformer_step [--config image_transformer_digits] [--steps 30] [--repeats 5]

``--config`` is ``image_transformer_digits`` (3 pre-norm layers, d = 96, 4 heads, learned
positions, dropout 0.1, 64 tokens, batch 32) or ``char_lm_shapes`` (4 layers, d = 128, 4 heads,
RoPE, 49 tokens, batch 64); the network is gen_jax/nn/transformer.py (Vaswani et al. 2017 with
pre-LN, Xiong et al. 2020), the loss the mean token NLL of
gen_jax/autoregressive/transformer_lm.py, the optimizer the config's (AdamW, warmup + cosine,
global-norm clipping at 1).

* gen_jax: the library's compiled train step (``make_train_step``: loss, grads, clipping,
  AdamW, grad/param norms and the non-finite guard in one XLA program, donated state);
* PyTorch (if installed): the same architecture as a ``torch.nn.Module`` (separate q/k/v
  Linear layers, ``F.scaled_dot_product_attention(is_causal=True)``, tanh-GELU, LayerNorm eps
  1e-6, the same dropout sites), ``torch.optim.AdamW`` + ``clip_grad_norm_`` + the same LR
  schedule, eager; the weights are the gen_jax init copied over, the parameter counts printed
  and checked equal, and the logits (dropout off) checked to agree to 1e-4 before timing.

Both steps run on the same fixed batch, interleaved in one process (``--steps`` gen_jax steps,
``--steps`` torch steps, repeated ``--repeats`` times; medians). PyTorch runs on 1 thread or
all cores, whichever is faster for one step here (``fastest_threads``).

Measured 2026-12-02, ``image_transformer_digits``, the machine shared with a U-Net training run
(load average ~2.5): gen_jax 129.5 ms/step, PyTorch eager 93.7 ms/step (1 thread): 0.72x. The
step is ~4 GFLOP (6 x 345k params x 2048 tokens, plus attention), i.e. ~14 ms at the machine's
matmul rate: both sides are bound by per-op costs of a network this small, not by its matmuls
(the library's XLA option set made no difference to it: ``experiments.benchmarks.xla_cpu_options``,
73.3 vs 74.4 ms idle).
"""
from __future__ import annotations

import argparse
import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments.benchmarks.ddim_vs_torch import fastest_threads


def setup(config: str):
    """``(exp, parts, step, state, batch)``: the LM of ``config``, its compiled train step and
    initial state (library path, as in ``gen_jax.train.loop``), and a fixed train batch."""
    from experiments import common
    from gen_jax.autoregressive.transformer_lm import build_transformer_lm
    from gen_jax.train import sharding as shd
    from gen_jax.train.loop import init_state
    from gen_jax.train.step import make_train_step

    exp = common.load_experiment(config, {"mesh.num_devices": 1})
    info, model, mesh = common.setup(exp)
    if model.name != "transformer_lm":
        common.fail(f"--config {config}: not a transformer LM (model {model.name!r})")
    parts = build_transformer_lm(exp.model, info)
    stream = common.build_stream(exp, info, mesh)
    batch_sh = shd.batch_sharding(mesh)
    batch = stream.batch_at(0)
    phases, optimizers, _, state_sh, init_fn = init_state(exp, model, batch, mesh, batch_sh)
    step = make_train_step(phases, optimizers, state_sharding=state_sh, batch_sharding=batch_sh)
    return exp, parts, step, init_fn(batch), batch


def num_params(tree) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


# ----------------------------------------------------------------------------- torch side


def torch_lm(cfg, params):
    """The :class:`gen_jax.nn.transformer.Transformer` of ``cfg`` in PyTorch, with the Flax
    ``params`` copied in (DenseGeneral kernels ``[d, H, Dh]`` / ``[H, Dh, d]`` -> Linear
    ``[d, d]``)."""
    import torch
    import torch.nn.functional as F

    p = jax.tree.map(lambda a: np.array(a, np.float32), params)["params"]
    d, h = cfg.d_model, cfg.num_heads
    dh = d // h

    def linear(q, reshape_in=None):
        kern = q["kernel"].reshape(reshape_in, -1) if reshape_in else q["kernel"]
        lin = torch.nn.Linear(kern.shape[0], kern.shape[1])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(kern.T.copy()))
            lin.bias.copy_(torch.from_numpy(q["bias"].reshape(-1).copy()))
        return lin

    def layer_norm(q):
        ln = torch.nn.LayerNorm(d, eps=1e-6)
        with torch.no_grad():
            ln.weight.copy_(torch.from_numpy(q["scale"]))
            ln.bias.copy_(torch.from_numpy(q["bias"]))
        return ln

    def rotary(x, pos):  # x [B, H, L, Dh]; pairs (2i, 2i+1), Su et al. 2021, Eq. 34
        inv = cfg.rope_base ** (-torch.arange(0, dh, 2, dtype=torch.float64) / dh)
        ang = (pos.double()[:, None] * inv[None]).float()
        cos, sin = ang.cos(), ang.sin()
        x1, x2 = x[..., 0::2], x[..., 1::2]
        return torch.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1).flatten(-2)

    class Block(torch.nn.Module):
        def __init__(self, q):
            super().__init__()
            a = q["attn"]
            self.ln1, self.ln2 = layer_norm(q["ln1"]), layer_norm(q["ln2"])
            self.q, self.k, self.v = (linear(a[n], d) for n in ("query", "key", "value"))
            self.o = linear(a["out"], d)
            self.mlp_in, self.mlp_out = linear(q["mlp_in"]), linear(q["mlp_out"])
            self.drop = torch.nn.Dropout(cfg.dropout)

        def forward(self, x, pos):
            b, l, _ = x.shape
            y = self.ln1(x)
            q, k, v = (m(y).view(b, l, h, dh).transpose(1, 2) for m in (self.q, self.k, self.v))
            if cfg.positions == "rotary":
                q, k = rotary(q, pos), rotary(k, pos)
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.drop(self.o(a.transpose(1, 2).reshape(b, l, d)))
            return x + self.drop(self.mlp_out(F.gelu(self.mlp_in(self.ln2(x)), approximate="tanh")))

    class LM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.tok = torch.nn.Parameter(torch.from_numpy(p["tok_embed"].copy()))
            if cfg.positions == "learned":
                self.pos = torch.nn.Parameter(torch.from_numpy(p["pos_embed"].copy()))
            self.blocks = torch.nn.ModuleList(Block(p[f"block_{i}"]) for i in range(cfg.num_layers))
            self.ln_f, self.head = layer_norm(p["ln_f"]), linear(p["head"])
            self.drop = torch.nn.Dropout(cfg.dropout)

        def forward(self, tokens):
            pos = torch.arange(tokens.shape[1])
            x = self.tok[tokens]
            if cfg.positions == "learned":
                x = x + self.pos[:tokens.shape[1]]
            x = self.drop(x)
            for blk in self.blocks:
                x = blk(x, pos)
            return self.head(self.ln_f(x))

    return LM()


def torch_step(exp, lm, inputs, targets, mask):
    """One eager train step ``() -> loss``: masked mean token NLL, clip, AdamW, LR schedule."""
    import torch

    o = exp.optim
    opt = torch.optim.AdamW(lm.parameters(), lr=o.learning_rate, betas=(o.b1, o.b2), eps=o.eps,
                            weight_decay=o.weight_decay)
    total, warm = exp.train.steps, o.warmup_steps

    def lr_factor(s):
        if s < warm:
            return s / warm
        return 0.5 * (1 + math.cos(math.pi * min(s - warm, total - warm) / max(total - warm, 1)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    n = mask.sum().clamp(min=1.0)

    def step():
        opt.zero_grad(set_to_none=True)
        logits = lm(inputs)
        ll = torch.log_softmax(logits, -1).gather(-1, targets[..., None])[..., 0]
        loss = -(ll * mask).sum() / n
        loss.backward()
        if o.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(lm.parameters(), o.grad_clip)
        opt.step()
        sched.step()
        return loss

    return step


# ----------------------------------------------------------------------------- main


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="image_transformer_digits")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args(argv)
    exp, parts, step, state, batch = setup(a.config)
    cfg = parts.decoder.cfg
    layout = parts.layout
    y = layout.targets(batch, "benchmark")
    x = layout.inputs(layout.prefix(batch, y.shape[0], "benchmark"), y)
    n_jax = num_params(state.params)
    print(f"{a.config}: {cfg.num_layers} layers, d {cfg.d_model}, {cfg.num_heads} heads, "
          f"{cfg.positions} positions, batch {x.shape[0]} x {x.shape[1]} tokens, "
          f"{jax.devices()[0].platform}; {a.repeats} x {a.steps} steps interleaved, medians")
    try:
        import torch
    except ImportError:
        torch = None
    run = {}
    if torch is not None:
        lm = torch_lm(cfg, state.params)
        n_torch = sum(t.numel() for t in lm.parameters())
        lm.eval()
        with torch.no_grad():
            lt = lm(torch.from_numpy(np.array(x)).long()).numpy()
        lj = np.asarray(parts.decoder.apply(state.params, x))
        err = float(np.max(np.abs(lt - lj)))
        print(f"  params: gen_jax {n_jax}, torch {n_torch}; logits max |diff| {err:.1e}")
        assert n_torch == n_jax and err < 1e-4, (n_torch, n_jax, err)
        lm.train()
        t_step = torch_step(exp, lm, torch.from_numpy(np.array(x)).long(),
                            torch.from_numpy(np.array(y)).long(), torch.from_numpy(np.array(layout.mask(y))))
        threads = fastest_threads(t_step, trials=3)

        def run_torch(k):
            for _ in range(k):
                loss = t_step()
            float(loss.detach())

        run["torch"] = run_torch
    else:
        print(f"  params: gen_jax {n_jax}; PyTorch n/a")
    box = {"state": step(state, batch)[0]}

    def run_jax(k):
        s = box["state"]
        for _ in range(k):
            s, m = step(s, batch)
        jax.block_until_ready(m)
        box["state"] = s

    run = {"jax": run_jax, **run}
    for f in run.values():
        f(2)  # warm-up
    times = {k: [] for k in run}
    for _ in range(a.repeats):
        for k, f in run.items():
            t0 = time.perf_counter()
            f(a.steps)
            times[k].append((time.perf_counter() - t0) / a.steps * 1e3)
    ms = {k: float(np.median(v)) for k, v in times.items()}
    print(f"  gen_jax compiled step   {ms['jax']:8.2f} ms/step")
    if torch is None:
        print("  PyTorch eager                n/a")
    else:
        print(f"  PyTorch eager           {ms['torch']:8.2f} ms/step ({threads} threads)   "
              f"gen_jax / PyTorch speed = {ms['torch'] / ms['jax']:4.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
