"""Model names used in configs -> the factory that builds the model.

The only registry of models (configs name models; library code imports explicitly). A
factory is ``make_x(model_cfg: ConfigDict, info: DatasetInfo) -> Model``; a model that composes
trained stages lists their names, and its factory takes them as a third argument,
``make_x(model_cfg, info, stages: {name: gen_jax.model.Stage})`` (loaded from
``config.stages.<name>`` by :func:`experiments.common.load_stage`).
"""
from __future__ import annotations

import difflib
import importlib
from typing import Callable, NamedTuple

from gen_jax.config import ConfigError


class Entry(NamedTuple):
    """``path``: ``'module:function'`` of the factory; ``stages``: the trained stages it takes."""

    path: str
    stages: tuple[str, ...] = ()

    def factory(self) -> Callable:
        module, attr = self.path.split(":")
        return getattr(importlib.import_module(module), attr)


MODELS: dict[str, Entry] = {
    "gmm": Entry("gen_jax.latent.gmm:make_gmm"),
    "autoencoder": Entry("gen_jax.latent.autoencoder:make_autoencoder"),
    "vae": Entry("gen_jax.latent.vae:make_vae"),
    "ddpm": Entry("gen_jax.diffusion.model:make_ddpm"),
    "latent_diffusion": Entry("gen_jax.diffusion.latent:make_latent_diffusion", stages=("stage1",)),
    "classifier": Entry("gen_jax.metrics.classifier:make_classifier"),
    "noisy_classifier": Entry("gen_jax.diffusion.noisy_classifier:make_noisy_classifier"),
    "realnvp": Entry("gen_jax.flows.realnvp:make_realnvp"),
    "glow": Entry("gen_jax.flows.glow:make_glow"),
    "maf": Entry("gen_jax.flows.maf:make_maf"),
    "pixelcnn": Entry("gen_jax.autoregressive.image_model:make_pixelcnn"),
    "gated_pixelcnn": Entry("gen_jax.autoregressive.image_model:make_gated_pixelcnn"),
    "pixelrnn": Entry("gen_jax.autoregressive.image_model:make_pixelrnn"),
    "pixelcnnpp": Entry("gen_jax.autoregressive.pixelcnnpp_model:make_pixelcnnpp"),
    "transformer_lm": Entry("gen_jax.autoregressive.transformer_lm:make_transformer_lm"),
    "wavenet": Entry("gen_jax.autoregressive.wavenet_model:make_wavenet"),
    "gan": Entry("gen_jax.gan.model:make_gan"),
    "cyclegan": Entry("gen_jax.gan.cyclegan:make_cyclegan"),
    "pix2pix": Entry("gen_jax.gan.pix2pix:make_pix2pix"),
    "began": Entry("gen_jax.gan.began:make_began"),
    "vqvae": Entry("gen_jax.latent.vqvae:make_vqvae"),
    "dalle": Entry("gen_jax.autoregressive.text_to_image:make_text_to_image", stages=("stage1",)),
    "vqgan": Entry("gen_jax.latent.vqgan:make_vqgan", stages=("features",)),
    "dvae": Entry("gen_jax.latent.dvae:make_dvae"),
    "clip": Entry("gen_jax.multimodal.clip:make_clip"),
    "factorvae": Entry("gen_jax.latent.factorvae:make_factorvae"),
    "categorical_vae": Entry("gen_jax.latent.categorical_vae:make_categorical_vae"),
    "mvae": Entry("gen_jax.latent.multimodal_vae:make_mvae"),
    "mmvae": Entry("gen_jax.latent.multimodal_vae:make_mmvae"),
    "unclip": Entry("gen_jax.diffusion.unclip:make_unclip", stages=("clip", "stage1")),
    "text_ldm": Entry("gen_jax.diffusion.text_latent:make_text_latent_diffusion", stages=("stage1", "text")),
    "frozen": Entry("gen_jax.autoregressive.frozen:make_frozen", stages=("lm",)),
}


def get_entry(name: str) -> Entry:
    if name not in MODELS:
        close = difflib.get_close_matches(name, MODELS, n=3)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ConfigError(f"config.model.name: unknown model {name!r}{hint} (known: {', '.join(sorted(MODELS))})")
    return MODELS[name]


def get_factory(name: str) -> Callable:
    """The factory of model ``name`` (a ``ConfigError`` naming ``config.model.name`` if unknown)."""
    return get_entry(name).factory()
