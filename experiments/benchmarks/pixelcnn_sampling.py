"""PixelCNN-family sampling speed: the cached samplers (the library's) vs re-running the network.

    python -m experiments.benchmarks.pixelcnn_sampling [--configs pixelcnn_digits,gated_pixelcnn_digits,pixelcnnpp_digits] [--num 16] [--repeats 3]

For each config, the network of the config (its sizes, on its dataset's image shape; parameters
drawn at random with the init's structure, scaled so that every output depends on its
context) is sampled two ways, each compiled once with ``jax.jit`` and timed after compilation
(median of ``--repeats``, interleaved):

* **cached** (the model's sampler, ``model.sampler.sample``): the activation caches of fast
  PixelCNN++ generation (Ramachandran et al. 2017, Sec. 3; gen_jax/autoregressive/
  cached_sampling.py): every activation computed once;
* **re-running** (``parts.sample_naive``): the whole network re-run over the image for every
  sub-pixel (van den Oord et al. 2016's raster-order sampling, ``H W C`` forward passes).

It prints seconds per batch of ``--num`` images for both, the speedup, and whether both drew
the same images from the same key (they must: the cached sampler is exact).

Measured 2026-12-02 (2 cores shared with a training run; ``--num 16 --repeats 3``)::

    config                       image  cached s  re-run s  speedup  same images
    pixelcnn_digits              8x8x1     0.010     0.090     9.5x  True
    gated_pixelcnn_digits        8x8x1     0.014     0.303    21.6x  True
    pixelcnnpp_digits            8x8x1     0.062     0.678    11.0x  True
"""
from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

def _parts(config: str):
    from experiments import common
    from gen_jax.autoregressive import image_model as im
    from gen_jax.autoregressive.pixelcnnpp_model import build_pixelcnnpp
    from gen_jax.data.datasets import get_info

    exp = common.load_experiment(config)
    info = get_info(exp.dataset.name, common.data_dir(exp))
    builders = {"pixelcnn": im.build_pixelcnn, "gated_pixelcnn": im.build_gated_pixelcnn,
                "pixelcnnpp": build_pixelcnnpp}
    if exp.model_name not in builders:
        common.fail(f"--configs {config}: model {exp.model_name!r} is not a PixelCNN-family model "
                    f"({', '.join(builders)})")
    return builders[exp.model_name](exp.model, info), info


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", default="pixelcnn_digits,gated_pixelcnn_digits,pixelcnnpp_digits")
    p.add_argument("--num", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args(argv)
    print(f"PixelCNN-family sampling of {a.num} images, {jax.devices()[0].platform}, median of {a.repeats} "
          "after compilation", flush=True)
    print(f"  {'config':24s} {'image':>9s} {'cached s':>9s} {'re-run s':>9s} {'speedup':>8s}  same images", flush=True)
    for config in a.configs.split(","):
        parts, info = _parts(config)
        shape = tuple(info.image_shape)
        batch = {"image": jnp.zeros((2,) + shape)}
        abstract = jax.eval_shape(parts.model.training.init, jax.random.PRNGKey(0), batch)
        rng = np.random.default_rng(0)
        params = jax.tree.map(lambda s: jnp.asarray(rng.normal(0.0, 0.1, s.shape), s.dtype), abstract)
        fns = {"cached": jax.jit(lambda prm, k: parts.model.sampler.sample(prm, k, a.num)),
               "naive": jax.jit(lambda prm, k: parts.sample_naive(prm, k, a.num))}
        key = jax.random.PRNGKey(1)
        draws = {k: np.asarray(f(params, key)) for k, f in fns.items()}  # compiles
        times = {k: [] for k in fns}
        for r in range(a.repeats):
            for k, f in fns.items():
                t0 = time.perf_counter()
                jax.block_until_ready(f(params, jax.random.PRNGKey(100 + r)))
                times[k].append(time.perf_counter() - t0)
        s = {k: statistics.median(v) for k, v in times.items()}
        same = bool(np.array_equal(draws["cached"], draws["naive"]))
        print(f"  {config:24s} {'x'.join(map(str, shape)):>9s} {s['cached']:9.3f} {s['naive']:9.3f} "
              f"{s['naive'] / s['cached']:7.1f}x  {same}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
