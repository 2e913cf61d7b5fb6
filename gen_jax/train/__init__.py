"""Training machinery shared by every family: state, step, sharding, checkpoints, loop."""
