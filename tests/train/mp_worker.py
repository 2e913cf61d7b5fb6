"""Worker for tests/train/test_multiprocess.py: one process of a (possibly multi-process) data
parallel run of a small softmax-regression model on digits; prints its losses as JSON."""
import json
import sys


def main(process_id: int, num_processes: int, port: int) -> None:
    import jax

    if num_processes > 1:
        jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=num_processes,
                                   process_id=process_id, initialization_timeout=60)
    import jax.numpy as jnp
    import optax

    from gen_jax.data.datasets import get_info, load_split
    from gen_jax.data.pipeline import BatchStream
    from gen_jax.model import Phase
    from gen_jax.train import sharding as shd
    from gen_jax.train.step import create_train_state, make_train_step

    info = get_info("digits")
    mesh = shd.make_mesh()
    stream = BatchStream(load_split("digits", "train"), info, 32, seed=3, sharding=shd.batch_sharding(mesh))

    def loss(p, batch, key):
        x = batch["image"].reshape(batch["image"].shape[0], -1)
        logits = x @ p["w"] + p["b"]
        nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), batch["label"][:, None], 1)[:, 0]
        return jnp.mean(nll), {"nll": nll}

    phases = (Phase(None, loss),)
    tx = {"__all__": optax.adam(0.05)}
    params = {"w": jnp.zeros((64, 10)), "b": jnp.zeros(10)}
    state = create_train_state(params, tx, jax.random.PRNGKey(0), phases=phases, use_ema=False)
    state_sh = shd.state_shardings(jax.eval_shape(lambda: state), mesh)
    state = jax.device_put(state, state_sh)
    step = make_train_step(phases, tx, state_sharding=state_sh, batch_sharding=shd.batch_sharding(mesh))
    losses = []
    for s in range(6):
        state, m = step(state, stream.batch_at(s))
        losses.append(float(m["loss"]))
    w = jax.experimental.multihost_utils.process_allgather(state.params["w"], tiled=True) \
        if num_processes > 1 else state.params["w"]
    print(json.dumps({"process": process_id, "devices": len(jax.devices()), "losses": losses,
                      "w_sum": float(jnp.sum(jnp.abs(jnp.asarray(w))))}), flush=True)


if __name__ == "__main__":
    import jax.experimental.multihost_utils  # noqa: F401

    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
