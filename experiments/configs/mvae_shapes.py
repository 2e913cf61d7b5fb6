"""MVAE on shapes (image, caption): product of Gaussian experts with a prior expert (Wu & Goodman 2018).

    python -m experiments.train --config experiments/configs/mvae_shapes.py --workdir runs/mvae_shapes
    python -m experiments.benchmarks.multimodal_vae_shapes --only mvae_shapes

Conv image expert/decoder (32 -> 16 -> 8 -> 4, widths 16/32, dense 128) with a discretized
logistic mixture (2 components) on the 256 levels; caption expert (word + position embeddings,
MLP) and a GRU caption decoder conditioned on z; shared latent 32. Trained with the
sub-sampled objective ELBO(image, caption) + ELBO(image) + ELBO(caption), caption terms
weighted by lambda = caption_weight (the image term is thousands of nats, a caption tens).

Measured (``python -m experiments.benchmarks.multimodal_vae_shapes``, 500 rows per split, 1200
steps, 798 s on the shared 2-core CPU; caption_weight 50). The targets are MISSED:

  task (test / heldout)                 shape  colour size   x     y
  caption -> image (feature network)    0.224  0.208  0.556  0.790 0.838  /  0.218 0.212 0.624 0.800 0.874
  image -> caption (parse_caption)      0.196  0.178  0.810  0.986 0.990  /  0.198 0.152 0.730 0.974 0.998
  joint samples: image vs own caption   0.138  0.062  0.280  0.412 0.360  (51% well-formed captions)

  joint ELBO 15235.1 / 15250.1 nats per example (image 15273.2, caption -0.11, KL 38.0 on test);
  image-only bound 0.846 / 0.840 bits/dim.

Shape and colour are at chance both ways: with lambda = 50 the caption expert's precision dominates
the product in the joint ELBO (caption reconstruction -0.1 nats), so the image expert and the caption
expert never agree on where shape and colour live; position (which the pixel likelihood forces into
the image expert) transfers. The product of experts is known to under-train the unimodal posteriors
for cross-modal generation (Shi et al. 2019, Sec. 2); mmvae_shapes is the cross-modal model here.
"""
import ml_collections

from experiments.configs.base import get_base_config


def get_config():
    c = get_base_config()
    c.dataset.name = "shapes"
    c.model = ml_collections.ConfigDict(dict(
        name="mvae", modalities=("image", "caption_tokens"), latent_dim=32, private_dim=0,
        conv_features=(16, 32), hidden=(128,), activation="gelu", likelihood="logistic_mixture",
        num_mixtures=2, gaussian_scale=0.0, text_dim=64, text_hidden=128, image_weight=1.0,
        caption_weight=50.0, label_weight=50.0, beta=1.0, num_samples=1, iwae_k=1, sample_mean=True))
    c.optim.learning_rate = 1e-3
    c.optim.grad_clip = 100.0
    c.train.steps = 1200
    c.train.batch_size = 64
    c.train.log_every = 100
    c.train.ckpt_every = 400
    c.train.sample_every = 0
    return c
