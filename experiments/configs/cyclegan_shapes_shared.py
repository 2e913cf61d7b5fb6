"""CycleGAN on shapes, circles <-> squares of the colours both occur in (red, green, magenta, cyan).

    python -m experiments.train --config experiments/configs/cyclegan_shapes_shared.py --workdir runs/cyclegan_shapes_shared
    python -m experiments.benchmarks.cyclegan_shapes --config cyclegan_shapes_shared --workdir runs/cyclegan_shapes_shared

``cyclegan_shapes`` with both domains restricted by ``batch['factors']`` to the colours of
:data:`gen_jax.data.image_pairs.SHARED_COLOURS_0_1`: the shapes dataset holds out blue circles
and yellow squares, so on the full domains a translation that matches the target domain must
recolour a fifth of each (cyclegan_shapes keeps 79% of colours, every shared one). Here the
two domains have the same colour distribution and keeping the colour is what the adversarial
loss allows. Batches of 36 (4.6 expected rows per domain), up to 6 rows of each.

Measured 2026-12-02, 1500 steps, 9 min 49 s of training (compile 34 s) on the shared 2-core CPU
(load 3-5), by the benchmark's analytic factor check over the test split's 321 circles / 290
squares of the shared colours: A -> B squares 100%, colour, size, x, y kept 100% (all five at
once 100%); B -> A likewise 100%; cycle L1 0.0058 both ways, on [0, 1].
"""
from experiments.configs.cyclegan_shapes import get_config as full_config
from gen_jax.data.image_pairs import SHARED_COLOURS_0_1


def get_config():
    c = full_config()
    c.model.keep_factor = "colour"
    c.model.keep_values = SHARED_COLOURS_0_1
    c.model.task = "circle_to_square_shared_colours"
    c.train.batch_size = 36
    c.mesh.num_devices = 1  # the batch is sized for the domain capacity, not a device count; on N devices use a multiple of N
    return c
