"""Class-conditional DDPM on digits with classifier-free guidance (Ho & Salimans 2022).

    python -m experiments.train --config experiments/configs/ddpm_digits_cfg.py --workdir runs/ddpm_digits_cfg

The ddpm_digits model with a label embedding; the label is dropped to the null class with
probability 0.1 at training, and sampling uses eps = (1 + w) eps(x, y) - w eps(x, null) with
w = ``guidance_scale`` (``cond['negative_label']`` replaces the null class: negative prompts).
"""
from experiments.configs.ddpm_digits import get_config as ddpm_config


def get_config():
    c = ddpm_config()
    c.model.conditioning = "label"
    c.model.cond_drop_prob = 0.1
    c.model.guidance_scale = 1.0
    return c
