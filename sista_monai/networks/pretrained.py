"""ImageNet weights for the image encoders, offline by default: torchvision's ResNets into MONAI's 2-D ResNet.

MGCA, whose protocol SISTA follows, starts its ResNet-50 from torchvision's ImageNet weights. The bundles use MONAI's
ResNet (the detection FPN and the segmentation decoder need it), whose state-dict keys are torchvision's except
that

* MONAI's downsampling convolutions have a bias (torchvision's have none): it is set to zero;
* torchvision's ``fc`` head is dropped (the encoder returns features);
* the first convolution sees ``in_channels`` channels: with one channel its RGB filters are summed, the standard
  way (a grey image copied into R, G and B gives the same response);
* every 2-D convolution kernel is transposed in its two spatial axes. MONAI arrays are ``(W, H)`` (x = column
  first) while torchvision expects ``(H, W)``; a convolution of the transposed image with the transposed kernel
  is the transpose of the original response, and batch norm, ReLU, the square max-pool and the global average pool
  commute with transposition. So the encoder fed MONAI's ``(W, H)`` image computes exactly what torchvision computes
  on the upright ``(H, W)`` radiograph: the ImageNet filters see the image upright, not mirrored across the diagonal.

``pretrained`` is a local weights file (a state dict saved by ``torch.save``, loaded with ``weights_only=True``) or
the name of a torchvision weights enum member (``"IMAGENET1K_V1"``/``"IMAGENET1K_V2"``), which torchvision reads from
its hub cache (``$TORCH_HOME/hub/checkpoints``) and downloads only when online.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

__all__ = ["TORCHVISION_RESNETS", "torchvision_resnet_state", "load_torchvision_resnet"]

logger = logging.getLogger(__name__)

TORCHVISION_RESNETS = {18: "resnet18", 34: "resnet34", 50: "resnet50", 101: "resnet101"}
"""Depths with torchvision ImageNet weights → torchvision's builder name."""


def _hint(depth: int) -> str:
    name = TORCHVISION_RESNETS.get(depth, "resnet50")
    return (
        f"save torchvision's weights once where there is network access, e.g. python -c \"import torch, torchvision; "
        f"torch.save(torchvision.models.{name}(weights='IMAGENET1K_V2').state_dict(), '{name}_imagenet.pth')\", "
        f"then set pretrained to that file"
    )


def _read(pretrained: str | os.PathLike, depth: int) -> Mapping[str, torch.Tensor]:
    from sista_monai.io.weights import load_weights_only

    path = Path(pretrained)
    if path.is_file():
        state = load_weights_only(path, what="ImageNet weights")
        if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
            state = state["state_dict"]
        if not isinstance(state, Mapping):
            raise ValueError(f"{path}: not a state dict ({type(state).__name__}); {_hint(depth)}")
        return state
    name = str(pretrained)
    if depth not in TORCHVISION_RESNETS or os.sep in name or name.endswith((".pt", ".pth")):
        raise FileNotFoundError(f"pretrained: no weights file at {path}; {_hint(depth)}")
    import torchvision

    builder = TORCHVISION_RESNETS[depth]
    weights_enum = torchvision.models.get_model_weights(builder)
    try:
        weights = weights_enum[name]
    except KeyError:
        known = ", ".join(w.name for w in weights_enum)
        raise ValueError(
            f"pretrained {name!r} is neither a file nor a torchvision {builder} weight ({known})"
        ) from None
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except Exception as err:  # noqa: BLE001 - offline, a missing cache entry surfaces as a connection error
        raise FileNotFoundError(
            f"pretrained {name!r}: torchvision's {builder} weights are not in the torch hub cache and cannot be "
            f"downloaded here ({type(err).__name__}); {_hint(depth)}"
        ) from err


def torchvision_resnet_state(
    source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], in_channels: int
) -> dict[str, torch.Tensor]:
    """Map a torchvision ResNet state dict onto MONAI 2-D ResNet keys (see the module docstring).

    Args:
        source: the torchvision state dict.
        target: the MONAI ResNet's own state dict (gives the keys and shapes to fill).
        in_channels: channels of the encoder's input (1: the RGB filters of ``conv1`` are summed).

    Raises:
        ValueError: keys missing on either side, or shapes that differ (the message lists them).
    """
    state: dict[str, torch.Tensor] = {}
    for key, value in source.items():
        if key.startswith("fc."):
            continue
        tensor = value.detach().float() if value.is_floating_point() else value.detach()
        if key == "conv1.weight" and in_channels != tensor.shape[1]:
            if in_channels != 1:
                raise ValueError(
                    f"conv1 has {tensor.shape[1]} input channels; only 1 or {tensor.shape[1]} can be mapped"
                )
            tensor = tensor.sum(dim=1, keepdim=True)
        if tensor.ndim == 4:
            tensor = tensor.transpose(-1, -2)
        state[key] = tensor.contiguous()
    for key in target:
        if key.endswith("downsample.0.bias") and key not in state:
            state[key] = torch.zeros_like(target[key])
    missing = sorted(set(target) - set(state))
    unexpected = sorted(set(state) - set(target))
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(target[k].shape)}"
        for k in target
        if k in state and state[k].shape != target[k].shape
    ]
    if missing or unexpected or wrong:
        raise ValueError(
            f"the weights do not fit the configured ResNet: missing {missing[:5]}, unexpected {unexpected[:5]}, "
            f"shapes {wrong[:5]} (is depth the same as the weights'?)"
        )
    return state


def load_torchvision_resnet(resnet: nn.Module, pretrained: str | os.PathLike, depth: int, in_channels: int) -> None:
    """Load torchvision ImageNet weights (a file or a weights name) into a MONAI 2-D ResNet, in place.

    Raises:
        FileNotFoundError: no such file, or a weights name that is neither cached nor downloadable (the message says
            how to obtain the file).
        ValueError: a file that is not a loadable state dict, or weights of another depth (the message names what
            differs).
    """
    source = _read(pretrained, depth)
    try:
        state = torchvision_resnet_state(source, resnet.state_dict(), in_channels)
    except ValueError as err:
        raise ValueError(f"pretrained {pretrained}: {err}; {_hint(depth)}") from None
    resnet.load_state_dict(state, strict=True)
    logger.info("image encoder: ResNet-%d initialised from torchvision ImageNet weights %s", depth, pretrained)
