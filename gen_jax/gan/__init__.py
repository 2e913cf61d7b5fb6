"""GANs: objectives, networks, two-player models and latent tools."""
