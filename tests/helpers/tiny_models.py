"""Tiny model settings shared by the unit tests (importable: ``tests/helpers`` is on pytest's ``pythonpath``)."""

from __future__ import annotations

TINY_BERT = {
    "vocab_size": 40,
    "hidden_size": 16,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 32,
    "max_position_embeddings": 32,
}
"""A one-layer BERT configuration for ``HuggingFaceTextEncoder(config=TINY_BERT)``: built in milliseconds, no files."""

TINY_ENCODER = {"hidden_size": 32, "mlp_dim": 64, "num_layers": 1, "num_heads": 2}
"""The tiny ViT image encoder sizes the bundle tests train and package at (``image_encoder#<key>`` overrides)."""
