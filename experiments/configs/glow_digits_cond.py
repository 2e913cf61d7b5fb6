"""Class-conditional Glow on digits: the label sets the top prior's mean / log-scale and enters
every coupling network (Kingma & Dhariwal 2018, "ycond"); otherwise as glow_digits.py.

    python -m experiments.train --config experiments/configs/glow_digits_cond.py --workdir runs/glow_digits_cond
    python -m experiments.evaluate --config experiments/configs/glow_digits_cond.py --workdir runs/glow_digits_cond

Exact bits/dim of p(x | label) on the test split (labels from the split); samples are drawn
for labels cycling 0..9. Not tuned separately from glow_digits.py. Measured here (2 shared CPU
cores, load ~5): 189 s of training (1000 steps, compile included), test bits/dim 2.027 of
p(x | label) (unconditional glow_digits: 2.105), FID 2.6 (precision 0.91, recall 0.81,
Inception Score 9.7 on the digits classifier).
"""
from experiments.configs.glow_digits import get_config as glow_digits_config


def get_config():
    c = glow_digits_config()
    c.model.update(dict(conditioning="label", cond_coupling=True))
    return c
