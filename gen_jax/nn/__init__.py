"""Shared Flax (linen) building blocks reused across model families."""
