"""Weights files: refusing non-finite states, saving atomically, loading with ``torch.load(weights_only=True)``.

Every weights file the project writes (best model, final model, the exported image encoder, checkpoints) goes
through :func:`refuse_nonfinite` first, so a diverged model never replaces a good file, and is written with
:func:`~sista_monai.io.files.write_atomically`. Every weights file it reads goes through
:func:`load_weights_only`, which refuses pickled objects and names the file and the reason on failure.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from sista_monai.errors import NonFiniteWeightsError

from .files import atomic_write_bytes

__all__ = [
    "NonFiniteWeightsError",
    "nonfinite_entries",
    "refuse_nonfinite",
    "state_bytes",
    "save_weights",
    "load_weights_only",
    "load_failure_reason",
    "load_network_weights",
    "move_loss_temperature",
    "quiet_transformers",
]

logger = logging.getLogger(__name__)


def nonfinite_entries(state: Any, prefix: str = "") -> list[str]:
    """Dotted names (with counts) of the floating-point tensors in a nested state holding NaN or infinity.

    ``state`` is a state dict or a checkpoint of several (dicts, lists and tuples are walked); integer tensors
    and non-tensor values are ignored.
    """
    found: list[str] = []
    if torch.is_tensor(state):
        if state.is_floating_point() or state.is_complex():
            bad = int((~torch.isfinite(state.detach())).sum())
            if bad:
                found.append(f"{prefix or 'tensor'} ({bad} of {state.numel()} values)")
        return found
    if isinstance(state, Mapping):
        for key, value in state.items():
            found += nonfinite_entries(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(state, (list, tuple)):
        for index, value in enumerate(state):
            found += nonfinite_entries(value, f"{prefix}[{index}]")
    return found


def refuse_nonfinite(state: Any, path: str | os.PathLike, log: logging.Logger | None = None) -> None:
    """Raise :class:`NonFiniteWeightsError` (after an ERROR log line) if ``state`` holds NaN or infinity.

    Called before any weights file is written, so that a diverged model never replaces a good file.
    """
    bad = nonfinite_entries(state)
    if bad:
        message = (
            f"refusing to write {path}: non-finite values in {len(bad)} tensor(s): {', '.join(bad[:5])}"
            f"{' ...' if len(bad) > 5 else ''}; files already there are left as they are"
        )
        (log or logger).error(message)
        raise NonFiniteWeightsError(message)


def load_weights_only(path: str | os.PathLike, map_location: Any = "cpu", what: str = "checkpoint") -> Any:
    """``torch.load(path, weights_only=True)`` with errors that name the file and the reason.

    A file carrying arbitrary pickled objects (code that would run on load) is refused, as is a damaged one.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not loadable as weights only.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no {what} at {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - pickle refusals and corrupt archives both mean "not loadable"
        raise ValueError(f"{path}: {load_failure_reason(err, what)}") from err


def load_failure_reason(err: BaseException, what: str = "checkpoint") -> str:
    """Why ``torch.load(weights_only=True)`` failed, in one line: refused pickled objects, or a damaged file."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err))
    refused = re.search(r"WeightsUnpickler error:\s*([^\n]*?)(?: Please use|$)", text, flags=re.MULTILINE)
    if isinstance(err, pickle.UnpicklingError) or refused:
        detail = refused.group(1).strip() if refused else text.strip().splitlines()[0][:300]
        return f"refused: the {what} holds pickled objects other than weights, which could run code on load ({detail})"
    first_line = text.strip().splitlines()[0] if text.strip() else ""
    return f"not a loadable weights-only {what}: damaged, truncated or not a PyTorch file ({type(err).__name__}: {first_line[:300]})"


LEGACY_TEMPERATURE_KEY = "log_temperature"
"""The key of the learnable SIA temperature in the ``"loss"`` entry of checkpoints written before it moved."""

MODEL_TEMPERATURE_KEY = "temperature.log_temperature"
"""Its key in :class:`~sista_monai.networks.SISTAModel`'s state dict since it lives in the model."""


def move_loss_temperature(checkpoint: Mapping[str, Any]) -> Mapping[str, Any]:
    """Bring a checkpoint written when the SIA loss held the learnable temperature into today's layout.

    Such a checkpoint keeps ``log(tau)`` as ``checkpoint["loss"]["log_temperature"]``; today it is the model's
    ``temperature.log_temperature``. The value is moved into ``checkpoint["network"]`` (a new mapping; the input is
    not modified) and the ``"loss"`` entry, left without state, is dropped. The optimiser state needs no change:
    the temperature was the last optimised parameter then and is the model's last trainable parameter now. Any
    other checkpoint (no ``"loss"`` temperature, or a ``"network"`` entry that already has one) is returned as is.

    Args:
        checkpoint: a full training checkpoint (``{"network": ..., "optimizer": ..., "loss": ..., ...}``).

    Returns:
        The checkpoint in today's layout.
    """
    loss_state = checkpoint.get("loss")
    network_state = checkpoint.get("network")
    if not (isinstance(loss_state, Mapping) and LEGACY_TEMPERATURE_KEY in loss_state):
        return checkpoint
    if not isinstance(network_state, Mapping) or MODEL_TEMPERATURE_KEY in network_state:
        return checkpoint
    moved = {key: value for key, value in checkpoint.items() if key != "loss"}
    moved["network"] = {**network_state, MODEL_TEMPERATURE_KEY: loss_state[LEGACY_TEMPERATURE_KEY]}
    rest = {key: value for key, value in loss_state.items() if key != LEGACY_TEMPERATURE_KEY}
    if rest:
        moved["loss"] = rest
    return moved


def load_network_weights(
    path: str | os.PathLike, network: torch.nn.Module, map_location: Any = "cpu"
) -> torch.nn.Module:
    """Load model weights from a full training checkpoint (its ``"network"`` entry) or a plain state dict.

    Loaded with ``torch.load(weights_only=True)``; a DDP wrapper is unwrapped. A checkpoint written when the SIA
    loss held the learnable temperature has it moved into the network first (:func:`move_loss_temperature`).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a weights-only file, or the weights do not fit the network (the message lists the
            first mismatching keys).
    """
    path = Path(path)
    state = load_weights_only(path, map_location, what="model weights")
    if isinstance(state, Mapping) and "network" in state and isinstance(state["network"], Mapping):
        state = move_loss_temperature(state)["network"]
    target = getattr(network, "module", network)
    result = target.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        if MODEL_TEMPERATURE_KEY in {*result.missing_keys, *result.unexpected_keys}:
            trained = "with" if MODEL_TEMPERATURE_KEY in result.unexpected_keys else "without"
            raise ValueError(
                f"{path}: the model was trained {trained} a learnable SIA temperature and the configured network "
                f"{'has none' if trained == 'with' else 'has one'}: set sia_learnable_temperature (the network's "
                "learnable_temperature) as in training"
            )
        raise ValueError(
            f"{path}: weights do not fit the configured network; missing {list(result.missing_keys)[:5]}, "
            f"unexpected {list(result.unexpected_keys)[:5]}"
        )
    return network


def state_bytes(state: Mapping[str, Any]) -> bytes:
    """``torch.save(state)`` into memory: the bytes of a weights file (hashed before writing by the encoder export)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def save_weights(
    module_or_state: torch.nn.Module | Mapping[str, Any], path: str | os.PathLike, log: logging.Logger | None = None
) -> Path:
    """Write a network's state dict (a DDP wrapper is unwrapped) or a ready state atomically to ``path``.

    The tensors are copied to the CPU and refused (:class:`NonFiniteWeightsError`, logged) when any holds NaN or
    infinity; nothing is written then and a previous file stays.
    """
    if isinstance(module_or_state, torch.nn.Module):
        network = getattr(module_or_state, "module", module_or_state)
        state = {k: v.detach().cpu() for k, v in network.state_dict().items()}
    else:
        state = dict(module_or_state)
    refuse_nonfinite(state, path, log)
    return atomic_write_bytes(path, state_bytes(state))


@contextmanager
def quiet_transformers(report: bool = False) -> Iterator[None]:
    """Hugging Face transformers' console chatter off inside the block; the previous settings back after it.

    transformers 5 draws tqdm bars when it loads or saves weights ("Loading weights", "Writing model shards"),
    which through a pipe or into a log file become lines of their own, and prints a load report at WARNING. Here
    the bars are off; with ``report=False`` the load report is too (verbosity ERROR). Keep ``report=True`` where
    the report is the only word on missing weights (a user's pretrained model); turn it off where the caller
    compares the state dicts itself and raises on a mismatch.
    """
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    if not report:
        hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
