"""gen_jax: generative models as pure JAX/Flax functions."""

__version__ = "0.1.0"
