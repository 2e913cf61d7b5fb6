"""Multimodal models: tokenizers, CLIP-style contrastive encoders, text-to-image models."""
