"""Frozen (gen_jax.autoregressive.frozen) on tiny nets: the frozen LM stays bit-identical under the
train step while the encoder learns; greedy / top-1 / few-shot decoding (KV cache, one scan) against
the argmax of the step-by-step uncached forward pass; the embedding path against the LM's own
forward; the prefix changes the logits; the refusals."""
import dataclasses
import hashlib
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from gen_jax.autoregressive import frozen as F
from gen_jax.autoregressive.transformer_lm import build_transformer_lm
from gen_jax.config import ConfigError
from gen_jax.data.datasets import get_info, load_split
from gen_jax.model import Stage, full_params
from gen_jax.train.step import create_train_state, make_train_step

LM = dict(name="transformer_lm", tokens="caption_tokens", num_layers=1, d_model=32, num_heads=2)
CFG = dict(name="frozen", prefix_len=2, widths=(8,), blocks=1, readout_pool=4, max_shots=1)


def lm_stage(info, model=LM, head_scale=30.0, zeros=False):
    """An (untrained) caption LM stage; its head scaled so that argmax ties are implausible
    (``zeros``: params of the right shapes only, for the refusals)."""
    parts = build_transformer_lm(ml_collections.ConfigDict(model), info)
    if zeros:
        params = jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), jax.eval_shape(parts.decoder.init,
                                                                                  jax.random.PRNGKey(1)))
    else:
        params = jax.jit(parts.decoder.init)(jax.random.PRNGKey(1))
        params = jax.tree_util.tree_map_with_path(
            lambda p, a: a * head_scale if "head" in jax.tree_util.keystr(p) and "kernel" in jax.tree_util.keystr(p)
            else a, params)
        params = jax.tree.map(np.asarray, params)
    config = types.SimpleNamespace(model=ml_collections.ConfigDict(model), model_name=model["name"])
    return Stage(model=parts.model, params=params, config=config, workdir="<test>", step=0)


def digest(tree) -> str:
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(tree):
        h.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def setup():
    info = get_info("shapes")
    parts = F.build_frozen(ml_collections.ConfigDict(CFG), info, {"lm": lm_stage(info)})
    arrays = load_split("shapes", "test")
    batch = {"image": jnp.asarray(arrays["image"][:8], jnp.float32) / 255.0,
             "caption_tokens": jnp.asarray(arrays["caption_tokens"][:8])}
    trained = parts.model.training.init(jax.random.PRNGKey(0), batch)
    params = full_params(parts.model, trained)
    ref = Reference(jax.jit(parts.lm_logits), np.asarray(parts.lm.decoder.embed_table(params["lm"])),
                    np.asarray(jax.jit(parts.prefix)(params, batch["image"])), parts.lm.decoder.cfg.max_len)
    return info, parts, batch, trained, params, ref


class Reference:
    """The uncached full forward pass (one compiled program over a fixed buffer of ``max_len``
    input embeddings; causal, so positions after the read one do not matter)."""

    def __init__(self, forward, table, prefix, max_len):
        self.forward, self.table, self.prefix, self.LEN = forward, table, prefix, max_len

    def logits_at(self, params, seq, t):
        buf = np.zeros((seq.shape[0], self.LEN, seq.shape[2]), np.float32)
        buf[:, :seq.shape[1]] = seq
        return np.asarray(self.forward(params, jnp.asarray(buf))[:, t])

    def greedy(self, params, prompt, steps):
        """Greedy decoding: argmax of the logits at the last position of the growing sequence."""
        done, out, x = np.zeros(prompt.shape[0], bool), [], np.asarray(prompt)
        for _ in range(steps):
            tok = np.where(done, 0, np.argmax(self.logits_at(params, x, x.shape[1] - 1), -1))
            done |= tok == 3
            out.append(tok)
            x = np.concatenate([x, self.table[tok][:, None]], 1)
        return np.stack(out, 1)

    def prompt(self, rows):
        return np.concatenate([self.prefix[rows], self.table[np.full((len(rows), 1), 2)]], 1)


def test_train_step_updates_encoder_only(setup):
    _, parts, batch, trained, _, _ = setup
    model = parts.model
    assert parts.stage.params is model.training.frozen["lm"]
    frozen = dict(model.training.frozen)
    before = digest(frozen)
    lm_copy = jax.tree.map(np.copy, frozen["lm"])
    assert set(trained) == {"encoder"}
    step = make_train_step(model.training.phases, {"encoder": optax.adam(1e-2)})
    state = create_train_state(trained, {"encoder": optax.adam(1e-2)}, jax.random.PRNGKey(2),
                               phases=model.training.phases, use_ema=False)
    enc0 = jax.tree.map(np.asarray, state.params["encoder"])
    losses = []
    for _ in range(4):
        state, m = step(state, (batch,), frozen)
        losses.append(float(m["loss"]))
    assert set(state.params) == {"encoder"}
    assert digest(model.training.frozen) == before == digest(frozen)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(lm_copy), jax.tree.leaves(frozen["lm"])))
    moved = [not np.array_equal(a, np.asarray(b)) for a, b in zip(jax.tree.leaves(enc0),
                                                                  jax.tree.leaves(state.params["encoder"]))]
    assert all(moved)
    assert losses[-1] < losses[0]


def test_embedding_path_is_the_lms_forward(setup):
    _, parts, batch, _, params, _ = setup
    ids = jnp.concatenate([jnp.full((8, 1), 2, jnp.int32), batch["caption_tokens"][:, 1:]], 1)
    want = jax.jit(parts.lm.decoder.apply)(params["lm"], ids)
    got = jax.jit(lambda p, i: parts.lm_logits(p, parts.token_embeds(p, i)))(params, ids)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_likelihood_is_the_chain_rule_given_the_prefix(setup):
    _, parts, batch, _, params, ref = setup
    model = parts.model
    lp = np.asarray(jax.jit(model.likelihood.log_prob)(params, batch, None))
    caps = np.asarray(batch["caption_tokens"])   # [<bos>, y_1 .. <eos>, 0 ..]
    seq = np.concatenate([ref.prefix, ref.table[caps[:, :-1]]], 1)   # [prefix, <bos>, y_1 .. y_8]
    logp = np.asarray(jax.nn.log_softmax(ref.forward(params, jnp.asarray(seq)), -1))
    n_scored = np.argmax(caps == 3, 1)   # y_1 .. <eos>
    want = [sum(logp[i, 2 + t - 1, caps[i, t]] for t in range(1, n_scored[i] + 1)) for i in range(8)]
    np.testing.assert_allclose(lp, want, rtol=1e-4, atol=1e-3)
    np.testing.assert_array_equal(np.asarray(model.likelihood.count(batch)), n_scored)


def test_greedy_and_top1_equal_uncached_argmax(setup):
    _, parts, batch, _, params, ref = setup
    x = batch["image"]
    got = np.asarray(parts.model.sampler.sample(params, jax.random.PRNGKey(3), 8, {"image": x}))
    assert got.shape == (8, 10) and got.dtype == np.int32 and (got[:, 0] == 2).all()
    np.testing.assert_array_equal(got[:, 1:], ref.greedy(params, ref.prompt(np.arange(8)), 9))
    top1 = parts.make_sampler(temperature=1.0, top_k=1)(params, jax.random.PRNGKey(4), 8, {"image": x})
    np.testing.assert_array_equal(np.asarray(top1), got)
    assert len(parts.model.sampler.describe(got)) == 8


def test_sampled_tokens_lie_in_the_top_k(setup):
    _, parts, batch, _, params, ref = setup
    got = np.asarray(parts.make_sampler(temperature=2.0, top_k=3)(params, jax.random.PRNGKey(5), 8,
                                                                   {"image": batch["image"]}))
    seq = np.concatenate([ref.prompt(np.arange(8)), ref.table[got[:, 1:]]], 1)
    logits = np.asarray(ref.forward(params, jnp.asarray(seq)))
    for t in range(1, got.shape[1]):
        top3 = np.argsort(-logits[:, 2 + t - 1], 1)[:, :3]
        live = ~np.any(got[:, 1:t] == 3, 1)
        assert all(got[i, t] in top3[i] for i in np.flatnonzero(live))
    assert len({tuple(r) for r in got}) > 1


def test_few_shot_prompt_interleaves_images_and_captions(setup):
    _, parts, batch, _, params, ref = setup
    sup_x, sup_c, q = batch["image"][:1], np.asarray(batch["caption_tokens"][:1]), batch["image"][1:5]
    got = np.asarray(parts.few_shot(params, jax.random.PRNGKey(0), sup_x, sup_c, q))
    end = int(np.argmax(sup_c[0] == 3))
    support = np.concatenate([ref.prefix[0], ref.table[sup_c[0, :end + 1]]], 0)   # <bos> .. <eos>, no padding
    prompt = np.concatenate([np.broadcast_to(support, (4,) + support.shape), ref.prompt(np.arange(1, 5))], 1)
    np.testing.assert_array_equal(got[:, 1:], ref.greedy(params, prompt, 9))
    zero = parts.model.sampler.sample(params, jax.random.PRNGKey(0), 8, {"image": batch["image"]})[1:5]
    assert not np.array_equal(got, np.asarray(zero))
    with pytest.raises(ValueError, match="max_shots = 1"):
        parts.few_shot(params, jax.random.PRNGKey(0), batch["image"][:2], np.asarray(batch["caption_tokens"][:2]), q)


def test_prefix_changes_the_logits(setup):
    _, parts, batch, _, params, _ = setup
    caption_logits = jax.jit(parts.caption_logits)
    logits, y, mask = caption_logits(params, batch["image"], batch["caption_tokens"])
    other, _, _ = caption_logits(params, batch["image"][::-1], batch["caption_tokens"])
    plain = jax.jit(parts.lm.decoder.apply)(params["lm"], jnp.concatenate([jnp.full((8, 1), 2, jnp.int32), y[:, :-1]], 1))
    assert logits.shape == (8, 9, 28)
    assert float(jnp.max(jnp.abs(logits - other))) > 1e-2
    assert float(jnp.max(jnp.abs(logits - plain))) > 1e-2


def test_sample_refuses_bad_images(setup):
    _, parts, batch, _, params, _ = setup
    sample = parts.model.sampler.sample
    with pytest.raises(ValueError, match=r"cond=\{'image'"):
        sample(params, jax.random.PRNGKey(0), 2)
    with pytest.raises(ValueError, match=r"cond\['image'\] must be \[B, 32, 32, 3\]"):
        sample(params, jax.random.PRNGKey(0), 2, {"image": jnp.zeros((2, 16, 16, 3))})
    with pytest.raises(ValueError, match="float32"):
        sample(params, jax.random.PRNGKey(0), 2, {"image": jnp.zeros((2, 32, 32, 3), jnp.uint8)})
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\].*255"):
        sample(params, jax.random.PRNGKey(0), 2, {"image": batch["image"][:2] * 255.0})
    with pytest.raises(ValueError, match=r"batch\['image'\] is missing"):
        parts.model.likelihood.log_prob(params, {"caption_tokens": batch["caption_tokens"]}, None)
    with pytest.raises(ValueError, match="2 rows for num = 3"):
        sample(params, jax.random.PRNGKey(0), 3, {"image": batch["image"][:2]})


def test_conditioning_draws_float_images(setup):
    parts = setup[1]
    cond = parts.model.conditioning
    assert cond.keys == ("image",)
    arrays = {"image": np.full((3, 32, 32, 3), 255, np.uint8)}
    x = cond.draw(5, arrays)["image"]
    assert x.dtype == np.float32 and x.shape == (5, 32, 32, 3) and x.max() == 1.0


def test_refuses_stages_that_are_not_caption_lms(setup):
    info = setup[0]
    cfg = ml_collections.ConfigDict(CFG)
    with pytest.raises(ConfigError, match="config.stages.lm: Frozen needs"):
        F.build_frozen(cfg, info, {})
    with pytest.raises(ConfigError, match="not a token language model"):
        F.build_frozen(cfg, info, {"lm": lm_stage(info, {**LM, "tokens": "image"}, zeros=True)})
    small = dataclasses.replace(info, vocab_size=20)
    with pytest.raises(ConfigError, match=r"token embedding table is \(20, 32\).*\[28, 32\]"):
        F.build_frozen(cfg, info, {"lm": lm_stage(small, zeros=True)})
    with pytest.raises(ConfigError, match="learned positions for 9 tokens"):
        F.build_frozen(cfg, info, {"lm": lm_stage(info, {**LM, "positions": "learned"}, zeros=True)})
    with pytest.raises(ConfigError, match="config.model.prefix_len"):
        F.build_frozen(ml_collections.ConfigDict({**CFG, "prefix_len": 0}), info, {"lm": setup[1].stage})


def test_a_prompt_trained_lm_reads_the_prefix_in_its_prompts_place(setup):
    info, _, batch, _, _, _ = setup
    stage = lm_stage(info, {**LM, "condition": "caption_tokens"}, zeros=True)   # input vocabulary 28 + 28
    parts = F.build_frozen(ml_collections.ConfigDict({**CFG, "prefix_len": 10}), info, {"lm": stage})
    params = full_params(parts.model, jax.eval_shape(parts.model.training.init, jax.random.PRNGKey(0), batch))
    out = jax.eval_shape(lambda p: parts.model.sampler.sample(p, jax.random.PRNGKey(0), 8, {"image": batch["image"]}),
                         params)
    assert out.shape == (8, 10) and out.dtype == jnp.int32
    assert stage.params["params"]["tok_embed"].shape == (56, 32)

