"""Defaults every experiment config starts from; leaf configs override what differs."""
import ml_collections


def get_base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    # config.dataset.reader: 'memory' (load_split + BatchStream) or 'records' (gen_jax.data.records:
    # per-process streamed array_record reads, prefetch steps read ahead by a thread).
    c.dataset = ml_collections.ConfigDict(dict(name="digits", data_dir="", reader="memory", prefetch=2))
    c.model = ml_collections.ConfigDict(dict(name=""))
    c.optim = ml_collections.ConfigDict(dict(
        name="adam", learning_rate=1e-3, schedule="constant", warmup_steps=0,
        b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, grad_clip=0.0, momentum=0.9))
    c.train = ml_collections.ConfigDict(dict(
        steps=1000, batch_size=64, log_every=50, ckpt_every=500, sample_every=0,
        keep_checkpoints=3, ema_decay=0.0, grid_size=64, eval_every=0, eval_num=500, best_metric="",
        grad_accum=1))  # grad_accum: micro-batches per gradient update (gen_jax.train.step.Accumulation)
    # config.mesh (gen_jax.train.sharding): shape (data, model), () = all devices on data; preset
    # '' | 'dp' | 'fsdp' | 'tp' | 'fsdp_tp'; rules ((regex, tactic), ...) tried before the preset's.
    c.mesh = ml_collections.ConfigDict(dict(num_devices=0, shape=(), preset="", rules=(), fsdp_min_size=4096,
                                            tp_strict=False))
    c.eval = ml_collections.ConfigDict(dict(num_samples=1000, batch_size=250, feature_net="",
                                              rejection_steps=0))
    return c


def get_gan_config(model: dict, lr: float = 2e-4, b1: float = 0.5, b2: float = 0.999,
                   steps: int = 3000) -> ml_collections.ConfigDict:
    """A digits GAN (``gen_jax.gan.model``): ``model`` fields over the DCGAN sizes, Adam(lr, b1, b2)
    in both players' optimizer sections, batch 64, the generator's EMA 0.999; FID of 500 EMA samples
    against the train split every 1000 steps keeps the best checkpoint."""
    c = get_base_config()
    c.model = ml_collections.ConfigDict({**dict(name="gan", z_dim=64, g_base=64, d_base=64), **model})
    c.optim.learning_rate, c.optim.b1, c.optim.b2 = lr, b1, b2
    c.optim.gen = ml_collections.ConfigDict(dict(learning_rate=lr))
    c.optim.disc = ml_collections.ConfigDict(dict(learning_rate=lr))
    c.train.steps = steps
    c.train.batch_size = 64
    c.train.ema_decay = 0.999
    c.train.log_every = 100
    c.train.ckpt_every = 1000
    c.train.eval_every = 1000  # FID of the EMA generator against the train split (gen_jax.train.best)
    c.train.best_metric = "fid"  # evaluation and the bake-off use the best of those checkpoints
    return c


def get_points_gan_config(dataset: str, pack: int = 2) -> ml_collections.ConfigDict:
    """An MLP GAN on an embedded 2-D mixture (``ring2d``, ``grid2d``; PacGAN's benchmark):
    z (8) -> 4 x 200 ReLU -> 2, discriminator on packs of ``pack`` points -> 4 x 200
    LeakyReLU(0.2) -> logit, non-saturating loss, Adam(2e-4, 0.5, 0.999) with cosine decay over
    12000 steps, batch 256, the generator's EMA 0.999 samples; 2500 samples for evaluation, drawn
    through discriminator rejection sampling (``eval.rejection_steps``: a fresh unpacked
    discriminator fitted to the frozen generator; 0 turns it off); no image metrics, so the last
    checkpoint is kept."""
    c = get_gan_config(dict(arch="mlp", loss="nonsaturating", z_dim=8, pack=pack,
                            g_hidden=(200, 200, 200, 200), d_hidden=(200, 200, 200, 200)),
                       lr=2e-4, b1=0.5, b2=0.999, steps=12000)
    c.dataset.name = dataset
    c.optim.schedule = "cosine"
    c.train.batch_size = 256
    c.train.log_every = 500
    c.train.ckpt_every = 4000
    c.eval.num_samples = 2500
    c.eval.rejection_steps = 20000  # experiments.sample filters by DRS (experiments/rejection.py)
    c.train.eval_every, c.train.best_metric = 0, ""
    return c
