"""Model names used in configs -> the factory that builds the model bundle.

The only registry of models (configs name models; library code imports explicitly).
A factory is ``make_x(model_cfg: ConfigDict, info: DatasetInfo) -> GenerativeModel``.
"""
from __future__ import annotations

import importlib
from typing import Callable

from gen_jax.config import ConfigError

MODELS: dict[str, str] = {
    "gmm": "gen_jax.latent.gmm:make_gmm",
    "autoencoder": "gen_jax.latent.autoencoder:make_autoencoder",
    "vae": "gen_jax.latent.vae:make_vae",
    "ddpm": "gen_jax.diffusion.model:make_ddpm",
    "latent_diffusion": "gen_jax.diffusion.latent:make_latent_diffusion",
    "classifier": "gen_jax.metrics.classifier:make_classifier",
    "noisy_classifier": "gen_jax.diffusion.noisy_classifier:make_noisy_classifier",
    "realnvp": "gen_jax.flows.realnvp:make_realnvp",
    "glow": "gen_jax.flows.glow:make_glow",
    "maf": "gen_jax.flows.maf:make_maf",
    "pixelcnn": "gen_jax.autoregressive.image_model:make_pixelcnn",
    "gated_pixelcnn": "gen_jax.autoregressive.image_model:make_gated_pixelcnn",
    "pixelrnn": "gen_jax.autoregressive.image_model:make_pixelrnn",
    "pixelcnnpp": "gen_jax.autoregressive.pixelcnnpp_model:make_pixelcnnpp",
    "transformer_lm": "gen_jax.autoregressive.transformer_lm:make_transformer_lm",
    "wavenet": "gen_jax.autoregressive.wavenet_model:make_wavenet",
}


def get_factory(name: str) -> Callable:
    if name not in MODELS:
        raise ConfigError(f"config.model.name: unknown model {name!r} (known: {', '.join(sorted(MODELS))})")
    module, attr = MODELS[name].split(":")
    return getattr(importlib.import_module(module), attr)
