"""The packaged network: ``models/model.pt`` written (the pretraining bundle's image-only network) and checked to
load strictly into the packaged ``network_def``; MONAI's ``ckpt_export`` (``models/model.ts``) and
``verify_net_in_out`` run on the packaged copy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sista_monai.package.configs import _fail

__all__: list[str] = []


def _parsed_network(folder: Path) -> Any:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(folder / "configs" / "inference.json"))
    parser.update({"bundle_root": str(folder), "device": "$torch.device('cpu')"})
    return parser.get_parsed_content("network_def")


def _write_pretraining_model(bundle: Path, out: Path) -> dict[str, Any]:
    """``models/model.pt`` of the image-only network from ``models/image_encoder.pt`` (sidecar checked)."""
    from sista_monai.errors import EncoderMismatchError, NonFiniteWeightsError
    from sista_monai.io import load_pretrained_encoder, read_encoder_sidecar, save_weights
    from sista_monai.networks import GlobalImageFeatures, build_image_encoder

    weights = bundle / "models" / "image_encoder.pt"
    try:
        sidecar = read_encoder_sidecar(weights)
        encoder = build_image_encoder(dict(sidecar["architecture"]))
        load_pretrained_encoder(encoder, weights)
        save_weights(GlobalImageFeatures(encoder), out / "models" / "model.pt")
    except (FileNotFoundError, EncoderMismatchError, NonFiniteWeightsError) as err:
        raise _fail(weights, str(err)) from err
    if "out_channels" not in sidecar or "preprocessing" not in sidecar:
        raise _fail(weights.with_suffix(".json"), "the sidecar records no out_channels or preprocessing")
    return sidecar


def _check_model_fits(out: Path, source: Path) -> None:
    """The packaged ``model.pt`` loads strictly into the packaged ``network_def``."""
    import torch

    from sista_monai.io import load_weights_only

    try:
        state = load_weights_only(out / "models" / "model.pt", what="model weights")
    except ValueError as err:
        raise _fail(source, str(err)) from err
    network = _parsed_network(out)
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        raise _fail(
            source,
            "does not fit the network_def of configs/inference.json (were the weights trained with an override "
            f"file? pass it with --layer): {' '.join(line.strip() for line in first[:3])}",
        ) from err
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise _fail(source, "not a plain state dict of tensors")


def _export_torchscript(out: Path) -> str | None:
    """MONAI's ``ckpt_export`` on the packaged copy; ``None`` when it worked, else the reason."""
    from monai.bundle import ckpt_export

    try:
        ckpt_export(
            net_id="network_def",
            filepath=str(out / "models" / "model.ts"),
            ckpt_file=str(out / "models" / "model.pt"),
            meta_file=str(out / "configs" / "metadata.json"),
            config_file=str(out / "configs" / "inference.json"),
            bundle_root=str(out),
        )
    except Exception as err:  # noqa: BLE001 - any failure of the export means "TorchScript does not apply"
        (out / "models" / "model.ts").unlink(missing_ok=True)
        return f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
    return None


def _verify_net_in_out(out: Path) -> str | None:
    """MONAI's ``verify_net_in_out`` on the packaged copy; ``None`` when it passed, else the reason."""
    from monai.bundle import verify_net_in_out

    try:
        verify_net_in_out(
            net_id="network_def",
            meta_file=str(out / "configs" / "metadata.json"),
            config_file=str(out / "configs" / "inference.json"),
            device="cpu",
            bundle_root=str(out),
        )
    except Exception as err:  # noqa: BLE001 - any failure means the check does not apply to this network
        return f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
    return None
