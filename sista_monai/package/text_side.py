"""The packaged pretraining bundle's text side: ``models/sista.pt`` (the whole SISTA model), the tokenizer, and the
zero-shot, retrieval and grounding configs that load them (checked to load into the packaged ``train.json``)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from sista_monai.package.configs import _fail

__all__ = ["DEMO_TOKENIZER", "PACKAGED_SISTA", "PACKAGED_TOKENIZER", "TEXT_CONFIGS"]

DEMO_TOKENIZER = "data/demo/tokenizer"
"""The demo pretraining's tokenizer folder, relative to the project root (the default of ``--tokenizer``)."""


TEXT_CONFIGS = ("zero_shot.json", "retrieval.json", "grounding.json")
"""The pretraining bundle's configs that need the text side (layered on ``train.json``)."""


PACKAGED_SISTA = "$@bundle_root + '/models/sista.pt'"
PACKAGED_TOKENIZER = "$@bundle_root + '/models/tokenizer'"


def _write_pretraining_text_model(bundle: Path, out: Path, tokenizer: Path) -> None:
    """``models/sista.pt`` (the whole SISTA model's weights, from ``models/checkpoint_final.pt``: image and text
    encoders, projection heads) and ``models/tokenizer/`` (the tokenizer the text encoder was trained with)."""
    from sista_monai.io import atomic_write_bytes, load_weights_only, move_loss_temperature, state_bytes
    from sista_monai.io.weights import nonfinite_entries

    checkpoint = bundle / "models" / "checkpoint_final.pt"
    if not checkpoint.is_file():
        raise _fail(checkpoint, "missing: train the pretraining bundle first (the text side is packaged from it)")
    try:
        state = load_weights_only(checkpoint, what="the SISTA checkpoint")
    except ValueError as err:
        raise _fail(checkpoint, str(err)) from err
    if isinstance(state, dict) and isinstance(state.get("network"), dict):
        state = move_loss_temperature(state)["network"]
    if not isinstance(state, dict) or not state:
        raise _fail(checkpoint, "holds no network weights")
    bad = nonfinite_entries(state)
    if bad:
        raise _fail(checkpoint, f"non-finite weights in {bad[:3]}")
    atomic_write_bytes(out / "models" / "sista.pt", state_bytes(state))
    if not (tokenizer / "tokenizer_config.json").is_file():
        raise _fail(tokenizer, "not a tokenizer folder (no tokenizer_config.json); pass the run's with --tokenizer")
    shutil.copytree(tokenizer, out / "models" / "tokenizer")


def _text_config(config: dict[str, Any]) -> dict[str, Any]:
    """A text-side config of the package: the packaged weights and tokenizer, no demo text-encoder pretraining."""
    return {**config, "checkpoint": PACKAGED_SISTA, "tokenizer": PACKAGED_TOKENIZER, "text_pretrained": None}


def _check_text_model_fits(out: Path) -> None:
    """``models/sista.pt`` loads into the network of the packaged ``train.json`` + ``zero_shot.json``."""
    from monai.bundle import ConfigParser

    from sista_monai.io import load_network_weights

    parser = ConfigParser()
    parser.read_config([str(out / "configs" / "train.json"), str(out / "configs" / "zero_shot.json")])
    parser.update({"bundle_root": str(out), "device": "$torch.device('cpu')"})
    try:
        load_network_weights(out / "models" / "sista.pt", parser.get_parsed_content("network_def"))
    except ValueError as err:
        raise _fail(
            out / "models" / "sista.pt",
            f"does not fit the packaged train.json (trained with an override file? pass it with --layer): {err}",
        ) from err
