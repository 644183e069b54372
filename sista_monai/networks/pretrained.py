"""ImageNet weights for the image encoders, offline by default: torchvision's ResNets and ViTs into MONAI's networks.

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

torchvision's ViTs (``vit_b_16`` at paper scale) map onto MONAI's ViT the same way: the patch projection is a
convolution (its kernel transposed, its RGB filters summed), and the patch tokens are permuted from torchvision's
row-major ``(H', W')`` grid to MONAI's ``(W', H')`` one. The position embeddings are permuted with them (and
first resized, bicubic as torchvision's ``interpolate_embeddings`` does, when ``img_size`` differs from the
weights'); torchvision adds a position embedding to its class token, MONAI does not, so that embedding is added to
the ``[CLS]`` token once. Attention and the MLPs act on each token alike, so the output tokens are torchvision's,
permuted; torchvision's LayerNorm epsilon (1e-6) is set on the encoder and recorded in its config.

Hugging Face ``transformers`` ViTs (``ViTModel``, and DeiT without a distillation token: a local folder, or a hub id
found in the local cache with ``local_files_only=True``, the default) are loaded by ``transformers`` itself, their
state dict renamed to torchvision's layout (``q``/``k``/``v`` stacked into one projection) and mapped the same way;
their LayerNorm epsilon (1e-12) is taken from their config.

``pretrained`` is a local weights file (a state dict saved by ``torch.save``, loaded with ``weights_only=True``) or
the name of a torchvision weights enum member (``"IMAGENET1K_V1"``/``"IMAGENET1K_V2"``), which torchvision reads from
its hub cache (``$TORCH_HOME/hub/checkpoints``) and downloads only when online.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from .image_encoders import ViTImageEncoder

__all__ = [
    "TORCHVISION_RESNETS",
    "torchvision_resnet_state",
    "load_torchvision_resnet",
    "torchvision_vit_state",
    "load_torchvision_vit",
    "hf_vit_as_torchvision",
    "vit_layer_norm_eps",
]

logger = logging.getLogger(__name__)

TORCHVISION_RESNETS = {18: "resnet18", 34: "resnet34", 50: "resnet50", 101: "resnet101"}
"""Depths with torchvision ImageNet weights → torchvision's builder name."""


def _hint(depth: int | str) -> str:
    name = depth if isinstance(depth, str) else TORCHVISION_RESNETS.get(depth, "resnet50")
    return (
        f"save torchvision's weights once where there is network access, e.g. python -c \"import torch, torchvision; "
        f"torch.save(torchvision.models.{name}(weights='IMAGENET1K_V2').state_dict(), '{name}_imagenet.pth')\", "
        f"then set pretrained to that file"
    )


def _read(pretrained: str | os.PathLike, depth: int | str) -> Mapping[str, torch.Tensor]:
    """A state dict from a file, or from torchvision's hub cache for a weights name of builder ``depth`` (an int:
    ``resnet<depth>``; a str: the builder name)."""
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
    builder = depth if isinstance(depth, str) else TORCHVISION_RESNETS.get(depth)
    if builder == "vit":  # a ViT size torchvision publishes no weights for: files only
        builder = None
    if builder is None or os.sep in name or name.endswith((".pt", ".pth")):
        raise FileNotFoundError(f"pretrained: no weights file at {path}; {_hint(depth)}")
    import torchvision

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


def _check_fit(state: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], network: str, hint: str) -> None:
    """Raise a ``ValueError`` listing missing and unexpected keys and wrong shapes of a mapped state."""
    missing = sorted(set(target) - set(state))
    unexpected = sorted(set(state) - set(target))
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(target[k].shape)}"
        for k in target
        if k in state and state[k].shape != target[k].shape
    ]
    if missing or unexpected or wrong:
        raise ValueError(
            f"the weights do not fit the configured {network}: missing {missing[:5]}, unexpected {unexpected[:5]}, "
            f"shapes {wrong[:5]} ({hint})"
        )


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
    _check_fit(state, target, "ResNet", "is depth the same as the weights'?")
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


def _grid(tokens: torch.Tensor, source: tuple[int, int], target: tuple[int, int]) -> torch.Tensor:
    """``(1, h*w, D)`` row-major torchvision position embeddings → ``(1, W'*H', D)`` in MONAI's ``(W', H')`` order,
    resized bicubic (as torchvision's ``interpolate_embeddings``) when the grid differs."""
    dim = tokens.shape[-1]
    grid = tokens.reshape(1, source[0], source[1], dim).permute(0, 3, 1, 2)  # (1, D, h, w)
    if source != target:
        grid = torch.nn.functional.interpolate(grid, size=target, mode="bicubic", align_corners=True)
    return grid.permute(0, 3, 2, 1).reshape(1, target[0] * target[1], dim)  # (1, w, h, D) flattened


def torchvision_vit_state(
    source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], grid: tuple[int, int], in_channels: int
) -> dict[str, torch.Tensor]:
    """Map a torchvision ``VisionTransformer`` state dict onto the keys of MONAI's ViT (see the module docstring).

    Args:
        source: the torchvision state dict (``heads.*`` is ignored).
        target: MONAI's ViT state dict (gives the keys and shapes; its unused cross-attention norms are kept).
        grid: the encoder's patch grid ``(W', H')`` in MONAI's order.
        in_channels: channels of the encoder's input (1: the RGB filters of the patch projection are summed).

    Raises:
        ValueError: keys missing on either side, or shapes that differ (the message lists them).
    """
    state: dict[str, torch.Tensor] = {}
    weight = source["conv_proj.weight"].detach().float()
    if in_channels != weight.shape[1]:
        if in_channels != 1:
            raise ValueError(
                f"conv_proj has {weight.shape[1]} input channels; only 1 or {weight.shape[1]} can be mapped"
            )
        weight = weight.sum(dim=1, keepdim=True)
    state["patch_embedding.patch_embeddings.weight"] = weight.transpose(-1, -2).contiguous()
    state["patch_embedding.patch_embeddings.bias"] = source["conv_proj.bias"].detach().float()
    positions = source["encoder.pos_embedding"].detach().float()
    side = int(round((positions.shape[1] - 1) ** 0.5))
    if side * side != positions.shape[1] - 1:
        raise ValueError(f"encoder.pos_embedding has {positions.shape[1] - 1} patch positions, not a square grid")
    height, width = grid[1], grid[0]
    state["patch_embedding.position_embeddings"] = _grid(positions[:, 1:], (side, side), (height, width))
    state["cls_token"] = source["class_token"].detach().float() + positions[:, :1]
    names = {
        "ln_1": "norm1",
        "ln_2": "norm2",
        "self_attention.in_proj_weight": "attn.qkv.weight",
        "self_attention.in_proj_bias": "attn.qkv.bias",
        "self_attention.out_proj": "attn.out_proj",
        "mlp.0": "mlp.linear1",
        "mlp.3": "mlp.linear2",
        "mlp.linear_1": "mlp.linear1",
        "mlp.linear_2": "mlp.linear2",
    }
    for key, value in source.items():
        if key.startswith("encoder.layers.encoder_layer_"):
            index, rest = key[len("encoder.layers.encoder_layer_") :].split(".", 1)
            for old, new in names.items():
                if rest.startswith(old):
                    state[f"blocks.{index}.{new}{rest[len(old) :]}"] = value.detach().float()
                    break
            else:
                state[f"blocks.{index}.{rest}"] = value.detach().float()
        elif key.startswith("encoder.ln."):
            state["norm." + key[len("encoder.ln.") :]] = value.detach().float()
    for key in target:
        if ".norm_cross_attn." in key and key not in state:
            state[key] = target[key]
    _check_fit(state, target, "ViT", "are hidden_size, num_layers, mlp_dim and patch_size the weights'?")
    return state


def load_torchvision_vit(
    encoder: ViTImageEncoder, pretrained: str | os.PathLike, local_files_only: bool = True
) -> None:
    """Load ImageNet ViT weights into a :class:`~sista_monai.networks.ViTImageEncoder`, in place: a torchvision
    state-dict file or ``vit_b_16`` weights name, or a Hugging Face ViT folder or hub id.

    Raises:
        FileNotFoundError: no such file, folder or cached hub id, or a weights name neither cached nor downloadable.
        ValueError: a file that is not a loadable state dict, or weights of another size.
    """
    config = encoder.config()
    if _is_hf(pretrained):
        source: Mapping[str, torch.Tensor] = hf_vit_as_torchvision(_hf_model(pretrained, local_files_only))
    else:
        builder = "vit_b_16" if config["preset"] == "base" and list(config["patch_size"]) == [16, 16] else "vit"
        source = _read(pretrained, builder)
    try:
        state = torchvision_vit_state(source, encoder.vit.state_dict(), encoder.patch_grid, config["in_channels"])
    except (ValueError, KeyError) as err:
        raise ValueError(f"pretrained {pretrained}: {err}; {_hint('vit_b_16')}") from None
    encoder.vit.load_state_dict(state, strict=True)
    logger.info("image encoder: ViT initialised from torchvision ImageNet weights %s", pretrained)


def _is_hf(pretrained: str | os.PathLike) -> bool:
    """A Hugging Face folder (``config.json`` inside) or hub id (``owner/name``), not a weights file or name."""
    path = Path(pretrained)
    if path.is_dir():
        return True
    return not path.exists() and "/" in str(pretrained) and not str(pretrained).endswith((".pt", ".pth"))


def _hf_model(pretrained: str | os.PathLike, local_files_only: bool) -> Any:
    from transformers import AutoModel

    try:
        return AutoModel.from_pretrained(os.fspath(pretrained), local_files_only=local_files_only)
    except OSError as err:
        raise FileNotFoundError(
            f"pretrained {pretrained}: no Hugging Face ViT there or in the local cache ({str(err).splitlines()[0][:200]}); "
            "save it once where there is network access (ViTModel.from_pretrained('google/vit-base-patch16-224')"
            ".save_pretrained(FOLDER)) and set pretrained to FOLDER"
        ) from err


def vit_layer_norm_eps(pretrained: str | os.PathLike, local_files_only: bool = True) -> float:
    """The LayerNorm epsilon of the ViT behind ``pretrained``: a Hugging Face config's, else torchvision's 1e-6."""
    if _is_hf(pretrained):
        from transformers import AutoConfig

        try:
            config = AutoConfig.from_pretrained(os.fspath(pretrained), local_files_only=local_files_only)
        except OSError:
            return 1e-12  # ViTConfig's default; loading the weights will say what is missing
        return float(getattr(config, "layer_norm_eps", 1e-12))
    return 1e-6


def hf_vit_as_torchvision(model: nn.Module) -> dict[str, torch.Tensor]:
    """A Hugging Face ``ViTModel``'s state dict under torchvision's ``VisionTransformer`` keys.

    Both current (``layers.N.attention.q_proj``) and older (``encoder.layer.N.attention.attention.query``)
    transformers names are read.

    Raises:
        ValueError: a model with a distillation token (DeiT distilled) or another layout.
    """
    state = {k.removeprefix("vit."): v for k, v in model.state_dict().items()}
    if "embeddings.distillation_token" in state:
        raise ValueError(
            "a distilled DeiT has two special tokens; MONAI's ViT has one ([CLS]): use a ViTModel or DeiT without distillation"
        )
    out = {
        "class_token": state["embeddings.cls_token"],
        "encoder.pos_embedding": state["embeddings.position_embeddings"],
        "conv_proj.weight": state["embeddings.patch_embeddings.projection.weight"],
        "conv_proj.bias": state["embeddings.patch_embeddings.projection.bias"],
        "encoder.ln.weight": state["layernorm.weight"],
        "encoder.ln.bias": state["layernorm.bias"],
    }
    layers = sorted(
        {int(k.split(".")[1]) for k in state if k.startswith("layers.")}
        | {int(k.split(".")[2]) for k in state if k.startswith("encoder.layer.")}
    )
    for i in layers:
        new, old = f"layers.{i}.", f"encoder.layer.{i}."
        names = {
            "q": (new + "attention.q_proj", old + "attention.attention.query"),
            "k": (new + "attention.k_proj", old + "attention.attention.key"),
            "v": (new + "attention.v_proj", old + "attention.attention.value"),
            "o": (new + "attention.o_proj", old + "attention.output.dense"),
            "ln_1": (new + "layernorm_before", old + "layernorm_before"),
            "ln_2": (new + "layernorm_after", old + "layernorm_after"),
            "fc1": (new + "mlp.fc1", old + "intermediate.dense"),
            "fc2": (new + "mlp.fc2", old + "output.dense"),
        }
        key = {n: (a if a + ".weight" in state else b) for n, (a, b) in names.items()}
        prefix = f"encoder.layers.encoder_layer_{i}."
        for part in ("weight", "bias"):
            out[prefix + f"self_attention.in_proj_{part}"] = torch.cat([state[f"{key[n]}.{part}"] for n in "qkv"])
            out[prefix + f"self_attention.out_proj.{part}"] = state[f"{key['o']}.{part}"]
            out[prefix + f"ln_1.{part}"] = state[f"{key['ln_1']}.{part}"]
            out[prefix + f"ln_2.{part}"] = state[f"{key['ln_2']}.{part}"]
            out[prefix + f"mlp.0.{part}"] = state[f"{key['fc1']}.{part}"]
            out[prefix + f"mlp.3.{part}"] = state[f"{key['fc2']}.{part}"]
    return out
