"""Data: TFDS builders for the embedded datasets and the deterministic, sharded input pipeline."""
