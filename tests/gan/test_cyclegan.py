"""gen_jax.gan.cyclegan: the losses against numpy references and closed forms, the history pool
against a numpy re-implementation and its statistics, the refusals, and a few steps of the real
trainer (with the evaluation library on the trained model)."""
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from gen_jax.config import ConfigError
from gen_jax.data import shapes as S
from gen_jax.data.pipeline import BatchStream
from gen_jax.evaluation.evaluate import evaluate_params
from gen_jax.gan import objectives as obj
from gen_jax.gan.cyclegan import (DISC, GEN, build_cyclegan, domain_rows, l1_rows, lsgan_d_loss, lsgan_g_loss,
                                  pool_apply, pool_draws, pool_init, pool_query)
from gen_jax.gan.image_networks import PatchDiscriminator
from gen_jax.metrics.features import FeatureExtractor
from gen_jax.train import sharding as shd
from gen_jax.train.experiment import parse_config
from gen_jax.train.loop import eval_params, train

INFO = types.SimpleNamespace(image_shape=(16, 16, 3), num_levels=256, num_classes=5)
SMALL = dict(name="cyclegan", g_base=4, g_res=1, g_upsample="resize", d_base=4, d_layers=1,
             rows_per_domain=5, pool_size=3)


def _arrays(n, seed=0):
    """Shapes images subsampled to 16x16 (integer levels, so on the data's grid)."""
    d = S.generate_shapes(n, seed)
    return {"image": d["image"][:, ::2, ::2], "label": d["shape"].astype(np.int32)}


def _config(steps):
    return ml_collections.ConfigDict({
        "seed": 0, "dataset": {"name": "shapes"}, "model": dict(SMALL),
        "optim": {"name": "adam", "learning_rate": 2e-4, "b1": 0.5,
                  "gen": {"learning_rate": 2e-4}, "disc": {"learning_rate": 2e-4}},
        "train": {"steps": steps, "batch_size": 12, "log_every": 1, "ckpt_every": 100},
    })


# ------------------------------------------------------------------------------------------ losses


def test_lsgan_losses_at_known_values_and_against_the_objectives():
    ones, zeros = jnp.ones((3, 2, 2)), jnp.zeros((3, 2, 2))
    w = jnp.ones(3)
    assert float(lsgan_d_loss(ones, zeros, w, w)) == 0.0  # the optimal discriminator's outputs
    np.testing.assert_allclose(float(lsgan_d_loss(zeros, ones, w, w)), 1.0)  # 0.5 (1 + 1)
    np.testing.assert_allclose(float(lsgan_g_loss(zeros, w)), 1.0)
    np.testing.assert_allclose(float(lsgan_g_loss(jnp.full((3, 2, 2), 3.0), w)), 4.0)
    rng = np.random.default_rng(0)
    r, f = (jnp.asarray(rng.normal(size=(4, 3, 3)), jnp.float32) for _ in range(2))
    w4 = jnp.ones(4)
    np.testing.assert_allclose(float(lsgan_d_loss(r, f, w4, w4)), float(obj.d_least_squares(r.ravel(), f.ravel())),
                               rtol=1e-6)
    np.testing.assert_allclose(float(lsgan_g_loss(f, w4)), 2 * float(obj.g_least_squares(f.ravel())), rtol=1e-6)
    # weights: a weighted mean over rows of the per-row patch means (numpy reference)
    wr, wf = jnp.array([1.0, 0.0, 1.0, 1.0]), jnp.array([0.0, 1.0, 1.0, 0.0])
    rn, fn = np.asarray(r), np.asarray(f)
    ref = 0.5 * (((rn - 1) ** 2).mean((1, 2))[[0, 2, 3]].mean() + (fn ** 2).mean((1, 2))[[1, 2]].mean())
    np.testing.assert_allclose(float(lsgan_d_loss(r, f, wr, wf)), ref, rtol=1e-6)
    assert float(lsgan_g_loss(f, jnp.zeros(4))) == 0.0  # no row of the domain: no term


def test_domain_rows_keep_batch_order_and_mark_the_domain():
    labels = jnp.array([2, 1, 0, 0, 3, 1, 0, 4])
    idx, valid = domain_rows(labels, 0, 4)
    np.testing.assert_array_equal(np.asarray(idx)[:3], [2, 3, 6])
    np.testing.assert_array_equal(np.asarray(valid), [1, 1, 1, 0])
    idx, valid = domain_rows(labels, 1, 1)  # over capacity: the first in batch order
    assert list(np.asarray(idx)) == [1] and list(np.asarray(valid)) == [1.0]


def test_domains_restricted_by_a_factor():
    labels = jnp.array([0, 0, 1, 0, 1, 1])
    keep = jnp.array([True, False, True, True, False, True])
    idx, valid = domain_rows(labels, 0, 3, keep)
    np.testing.assert_array_equal(np.asarray(idx)[:2], [0, 3])
    np.testing.assert_array_equal(np.asarray(valid), [1, 1, 0])
    d = S.generate_shapes(40, 2)
    split = {"image": d["image"], "label": d["shape"].astype(np.int32), "colour": d["colour"]}
    model, _ = build_cyclegan({**SMALL, "keep_factor": "colour", "keep_values": (0, 4)},
                              types.SimpleNamespace(image_shape=(32, 32, 3), num_levels=256, num_classes=5))
    rows = np.flatnonzero((d["shape"] == 0) & np.isin(d["colour"], [0, 4]))
    src = model.conditioning.draw(len(rows) + 1, split)["source"]
    np.testing.assert_allclose(src, d["image"][np.r_[rows, rows[:1]]] / 255.0, atol=1e-7)
    # the stream's form of the factors (batch['factors'] [B, 5]) selects the same rows
    stacked = {"image": d["image"], "label": split["label"], "factors": np.stack([d[f] for f in S.FACTORS], 1)}
    np.testing.assert_array_equal(model.conditioning.draw(3, stacked)["source"], src[:3])
    x = jnp.asarray(d["image"][:4] / 255.0, jnp.float32)
    with pytest.raises(ValueError, match=r"keep_factor needs batch\['factors'\]"):
        model.training.phases[0].loss({}, {}, {"image": x, "label": jnp.zeros(4, jnp.int32)}, jax.random.PRNGKey(0))


@pytest.fixture(scope="module")
def small():
    model, fns = build_cyclegan(SMALL, INFO)
    arr = _arrays(12, seed=3)
    batch = {"image": jnp.asarray(arr["image"] / 255.0, jnp.float32), "label": jnp.asarray(arr["label"])}
    params = jax.jit(model.training.init)(jax.random.PRNGKey(0), batch)
    rng = np.random.default_rng(1)  # generators far from the identity, so every term matters
    params = {GEN: jax.tree.map(lambda p: p + 0.3 * jnp.asarray(rng.normal(size=p.shape), p.dtype), params[GEN]),
              DISC: params[DISC]}
    state = jax.jit(model.training.init_model_state)(jax.random.PRNGKey(0), batch)
    return model, fns, params, state, batch


def test_generator_loss_against_a_numpy_reference(small):
    model, fns, params, state, batch = small
    g_phase = model.training.phases[0]
    loss, (m, new) = jax.jit(g_phase.loss)(params, state, batch, jax.random.PRNGKey(2))
    lab = np.asarray(batch["label"])
    ra, rb = np.flatnonzero(lab == 0)[:5], np.flatnonzero(lab == 1)[:5]
    assert len(ra) and len(rb)
    x = np.asarray(batch["image"])
    a, b = x[ra], x[rb]
    disc = PatchDiscriminator(base=4, n_layers=1, norm="instance", conditional=False)

    @jax.jit
    def nets(params, a, b):  # every network output the losses use, in one program
        G, F = (lambda v: fns.translate_ab(params, v)), (lambda v: fns.translate_ba(params, v))
        D = lambda name, v: disc.apply({"params": params[DISC][name]}, v)
        return dict(ga=G(a), fga=F(G(a)), fb=F(b), gfb=G(F(b)), gb=G(b), fa=F(a), dbga=D("d_b", G(a)),
                    dafb=D("d_a", F(b)))

    o = {k: np.asarray(v) for k, v in nets(params, a, b).items()}
    l1 = lambda u, v: 2 * np.abs(u - v).mean()  # on the [-1, 1] scale
    cyc = l1(o["fga"], a) + l1(o["gfb"], b)
    idt = l1(o["gb"], b) + l1(o["fa"], a)
    adv = ((o["dbga"] - 1) ** 2).mean() + ((o["dafb"] - 1) ** 2).mean()
    np.testing.assert_allclose(float(m["cycle"]), cyc, rtol=1e-4)
    np.testing.assert_allclose(float(m["identity"]), idt, rtol=1e-4)
    np.testing.assert_allclose(float(m["g_adv"]), adv, rtol=1e-4)
    np.testing.assert_allclose(float(loss), adv + 10 * cyc + 5 * idt, rtol=1e-4)
    assert float(m["rows_a"]) == len(ra) and float(m["rows_b"]) == len(rb)
    # the phase hands its generated images, with their validity, to the discriminators' phase
    np.testing.assert_allclose(np.asarray(new["fake_b"])[: len(ra)], o["ga"], atol=1e-5)
    np.testing.assert_array_equal(np.asarray(new["valid_b"]), (np.arange(5) < len(ra)).astype(np.float32))


# ------------------------------------------------------------------------------------------ history pool


def _numpy_pool(buf, count, images, valid, swap, slot):
    buf, out = buf.copy(), []
    for img, ok, sw, sl in zip(images, valid, swap, slot):
        if not ok:
            out.append(img)
        elif count < len(buf):
            buf[count] = img
            count += 1
            out.append(img)
        elif sw:
            out.append(buf[sl].copy())
            buf[sl] = img
        else:
            out.append(img)
    return buf, count, np.stack(out)


def test_history_pool_matches_a_numpy_reimplementation():
    pool = pool_init(4, (2, 2, 1))
    buf, count = np.zeros((4, 2, 2, 1), np.float32), 0
    rng = np.random.default_rng(0)
    apply = jax.jit(pool_apply)
    for step in range(6):
        images = rng.normal(size=(3, 2, 2, 1)).astype(np.float32)
        valid = np.array([1.0, float(step % 2), 1.0], np.float32)
        swap, slot = pool_draws(jax.random.PRNGKey(step), 3, 4)
        pool, out = apply(pool, jnp.asarray(images), jnp.asarray(valid), swap, slot)
        buf, count, ref = _numpy_pool(buf, count, images, valid, np.asarray(swap), np.asarray(slot))
        np.testing.assert_array_equal(np.asarray(out), ref)
        np.testing.assert_array_equal(np.asarray(pool["images"]), buf)
        assert int(pool["count"]) == count
    assert count == 4  # full after the first 4 valid images, then never more


def test_history_pool_statistics():
    """Once full, half the queries return a stored image, from uniformly chosen slots."""
    size, n = 8, 4000
    pool = pool_init(size, (1, 1, 1))
    ids = jnp.arange(1, n + 1, dtype=jnp.float32).reshape(n, 1, 1, 1)  # image i holds the value i
    pool, out = jax.jit(pool_query)(pool, ids, jnp.ones(n), jax.random.PRNGKey(0))
    out = np.asarray(out).ravel()
    ids = np.asarray(ids).ravel()
    np.testing.assert_array_equal(out[:size], ids[:size])  # filling: each image comes back itself
    old = out[size:] != ids[size:]
    frac = old.mean()
    assert abs(frac - 0.5) < 4 * np.sqrt(0.25 / (n - size))
    assert np.all(out[size:][old] < ids[size:][old])  # a stored image is an earlier one
    assert sorted(np.asarray(pool["images"]).ravel()) == sorted(set(np.asarray(pool["images"]).ravel()))


# ------------------------------------------------------------------------------------------ refusals


def test_refusals_name_the_field():
    with pytest.raises(ConfigError, match=r"config\.model\.domain_b.*different"):
        build_cyclegan({**SMALL, "domain_a": 2, "domain_b": 2}, INFO)
    with pytest.raises(ConfigError, match=r"config\.model\.domain_a.*outside.*\[0, 5\)"):
        build_cyclegan({**SMALL, "domain_a": 5}, INFO)
    with pytest.raises(ConfigError, match=r"config\.model\.domain_b"):
        build_cyclegan({**SMALL, "domain_b": -1}, INFO)
    with pytest.raises(ConfigError, match=r"config\.model\.domain_b.*\(8, 8, 3\).*one image shape"):
        build_cyclegan(SMALL, INFO, shape_b=(8, 8, 3))
    with pytest.raises(ConfigError, match=r"config\.model\.domain_a.*no labels"):
        build_cyclegan(SMALL, types.SimpleNamespace(image_shape=(16, 16, 3), num_levels=256, num_classes=0))
    with pytest.raises(ConfigError, match="image_shape"):
        build_cyclegan(SMALL, types.SimpleNamespace(image_shape=(18, 18, 3), num_levels=256, num_classes=5))
    with pytest.raises(ConfigError, match=r"config\.model\.pool_size"):
        build_cyclegan({**SMALL, "pool_size": -1}, INFO)
    with pytest.raises(ConfigError, match=r"config\.model\.keep_factor.*colour"):
        build_cyclegan({**SMALL, "keep_factor": "hue", "keep_values": (1,)}, INFO)
    with pytest.raises(ConfigError, match=r"config\.model\.keep_values"):
        build_cyclegan({**SMALL, "keep_factor": "colour"}, INFO)
    with pytest.raises(ConfigError, match=r"config\.model\.task.*paired"):
        build_cyclegan({**SMALL, "task": "outline"}, INFO)
    with pytest.raises(ValueError, match=r"config\.model\.task.*unknown"):
        build_cyclegan({**SMALL, "task": "nonsense"}, INFO)


def test_the_bakeoff_task_judges_the_rows_the_sampler_draws():
    """The shapes table's 'circle_to_square' rows are the inputs the model's conditioning draws,
    and their target factors are those rows' factors with the shape set to square."""
    from gen_jax.data import image_pairs

    d = S.generate_shapes(30, 7)
    split = {"image": d["image"], "label": d["shape"].astype(np.int32), **{f: d[f] for f in S.FACTORS}}
    model, _ = build_cyclegan({**SMALL, "task": "circle_to_square"},
                              types.SimpleNamespace(image_shape=(32, 32, 3), num_levels=256, num_classes=5))
    task = image_pairs.get_task("circle_to_square")
    rows = task.rows(split, 13)
    np.testing.assert_allclose(model.conditioning.draw(13, split)["source"], split["image"][rows] / 255.0, atol=1e-7)
    f = task.factors(split, rows)
    assert np.all(f[:, 0] == 1) and np.all(d["shape"][rows] == 0)
    np.testing.assert_array_equal(f[:, 1:], np.stack([d[k][rows] for k in S.FACTORS[1:]], 1))


def test_bad_inputs_are_refused(small):
    model, fns, params, state, batch = small
    with pytest.raises(ValueError, match=r"cond\['source'\] must be \[2, 16, 16, 3\]"):
        model.sampler.sample(params, jax.random.PRNGKey(0), 2, {"source": jnp.zeros((2, 8, 8, 3))})
    with pytest.raises(ValueError, match="source"):
        model.sampler.sample(params, jax.random.PRNGKey(0), 2, None)
    with pytest.raises(ValueError, match=r"batch\['label'\]"):
        model.training.phases[0].loss(params, state, {"image": batch["image"]}, jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"translate_ba: x must be \[B, 16, 16, 3\]"):
        fns.translate_ba(params, jnp.zeros((2, 32, 32, 3)))


# ------------------------------------------------------------------------------------------ the trainer


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    exp = parse_config(_config(2))
    model, fns = build_cyclegan(exp.model, INFO)
    mesh = shd.make_mesh(1)
    arrays = _arrays(60)
    stream = BatchStream(arrays, INFO, exp.train.batch_size, exp.seed, sharding=shd.batch_sharding(mesh))
    init = jax.jit(model.training.init)(jax.random.split(jax.random.PRNGKey(0))[0], stream.batch_at(0))
    result = train(exp, model, str(tmp_path_factory.mktemp("cyclegan")), stream, INFO, progress=False, mesh=mesh)
    return model, fns, result, stream, init


def test_trainer_updates_four_networks_and_fills_the_pools(trained):
    model, _, result, stream, init = trained
    s = result.state
    assert [p.group for p in model.training.phases] == [GEN, DISC]
    assert set(s.params[GEN]) == {"g_ab", "g_ba"} and set(s.params[DISC]) == {"d_a", "d_b"}
    for group, nets in init.items():
        for net, p in nets.items():
            moved = jax.tree.leaves(jax.tree.map(lambda u, v: float(jnp.max(jnp.abs(u - v))), s.params[group][net], p))
            assert max(moved) > 0, (group, net)
    # pools: every valid generated image of the 2 steps was offered; a pool holds at most 3
    per_step = [np.asarray(stream.batch_at(i)["label"]) for i in range(2)]
    for pool, cls in (("pool_a", 1), ("pool_b", 0)):  # pool_a holds F(b): one per square seen
        seen = sum(min(int(np.sum(lab == cls)), 5) for lab in per_step)
        assert int(s.model_state[pool]["count"]) == min(3, seen)
    assert np.isfinite(result.last_metrics["g/loss"])
    assert {"g/cycle_l1", "g/identity", "d/d_a", "d/d_b"} <= set(result.last_metrics)


def test_sampler_translates_and_evaluation_runs(trained):
    model, fns, result, stream, _ = trained
    params = eval_params(result.state, model)
    cond = model.conditioning.draw(6, stream.arrays)
    src = cond["source"]
    circles = stream.arrays["image"][stream.arrays["label"] == 0][:6] / 255.0
    np.testing.assert_allclose(src, circles, atol=1e-7)
    x = np.asarray(model.sampler.sample(params, jax.random.PRNGKey(0), 6, cond))
    assert x.shape == (6, 16, 16, 3) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    np.testing.assert_allclose(x, np.asarray(fns.translate_ab(params, src)), atol=1e-6)
    # instance norm: an image's translation does not depend on the others of its batch
    np.testing.assert_allclose(x[:3], np.asarray(fns.translate_ab(params, src[:3])), atol=1e-5)
    net = FeatureExtractor(apply=jax.jit(lambda p, v: (v.mean((1, 2)), v.reshape(v.shape[0], -1)[:, :16])),
                           params={}, batch_size=8)
    ev = evaluate_params(model, params, INFO, _arrays(40, seed=5), net, num_samples=10, batch_size=5)
    assert ev.samples.shape == (10, 16, 16, 3) and ev.labels is None and np.isfinite(ev.metrics["fid"])
