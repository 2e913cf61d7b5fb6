"""Class-conditional Glow on digits: the label sets the top prior's mean / log-scale and enters
every coupling network (Kingma & Dhariwal 2018, "ycond"); otherwise as glow_digits.py.

    python -m experiments.train --config experiments/configs/glow_digits_cond.py --workdir runs/glow_digits_cond
    python -m experiments.evaluate --config experiments/configs/glow_digits_cond.py --workdir runs/glow_digits_cond

Exact bits/dim of p(x | label) on the test split (labels from the split); samples are drawn
for labels cycling 0..9. Not tuned separately from glow_digits.py.
"""
from experiments.configs.glow_digits import get_config as glow_digits_config


def get_config():
    c = glow_digits_config()
    c.model.update(dict(conditioning="label", cond_coupling=True))
    return c
