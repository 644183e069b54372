"""Optimiser parameter groups of the downstream bundles: a linear probe, or fine-tuning with its own encoder rate."""

from __future__ import annotations

from typing import Any

from torch import nn

__all__ = [
    "encoder_parameter_groups",
]


def encoder_parameter_groups(
    network: nn.Module,
    learning_rate: float,
    encoder_learning_rate: float | None = None,
    weight_decay: float = 0.0,
) -> list[dict[str, Any]]:
    """Optimiser parameter groups: the head at ``learning_rate``, the encoder at its own rate when trained.

    Args:
        network: a downstream network with an ``encoder`` submodule (a DDP wrapper is unwrapped).
        learning_rate: learning rate of everything outside the encoder (the head, a decoder).
        encoder_learning_rate: learning rate of the encoder when fine-tuning (``None``: ``learning_rate``).
            Frozen encoder parameters (linear probe) are left out of the optimiser.
        weight_decay: weight decay of both groups.

    Returns:
        A list of ``{"params", "lr", "weight_decay", "name"}`` dicts for any ``torch.optim`` optimiser.

    Raises:
        ValueError: the network has no ``encoder`` or nothing to train.
    """
    module = getattr(network, "module", network)
    encoder = getattr(module, "encoder", None)
    if not isinstance(encoder, nn.Module):
        raise ValueError(f"{type(module).__name__} has no 'encoder' submodule")
    encoder_ids = {id(p) for p in encoder.parameters()}
    head = [p for p in module.parameters() if id(p) not in encoder_ids and p.requires_grad]
    trained_encoder = [p for p in encoder.parameters() if p.requires_grad]
    groups = []
    if head:
        groups.append({"params": head, "lr": float(learning_rate), "weight_decay": float(weight_decay), "name": "head"})
    if trained_encoder:
        lr = float(learning_rate if encoder_learning_rate is None else encoder_learning_rate)
        groups.append({"params": trained_encoder, "lr": lr, "weight_decay": float(weight_decay), "name": "encoder"})
    if not groups:
        raise ValueError("no trainable parameters")
    return groups
