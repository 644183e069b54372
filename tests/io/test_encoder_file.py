"""The exported encoder file: loading it, and refusals with messages that say what differs."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from sista_monai.errors import EncoderMismatchError
from sista_monai.io import encoder_source, export_image_encoder, load_pretrained_encoder
from sista_monai.networks import ResNetImageEncoder, ViTImageEncoder

PREPROCESSING = {
    "normalization": {"mean": 0.5, "std": 0.25},
    "preprocessing": {"resize_longest": 40, "pad_square": 40, "crop": 32},
}


@pytest.fixture
def exported(tmp_path: Path, tiny_vit: Callable[..., ViTImageEncoder]) -> tuple[Path, ViTImageEncoder]:
    torch.manual_seed(1)
    encoder = tiny_vit()
    weights, _ = export_image_encoder(
        encoder,
        tmp_path,
        normalization=PREPROCESSING["normalization"],
        extra={"preprocessing": PREPROCESSING["preprocessing"]},
    )
    return weights, encoder


def test_matching_file_loads_the_exported_weights(
    exported: tuple[Path, ViTImageEncoder], tiny_vit: Callable[..., ViTImageEncoder]
) -> None:
    weights, source = exported
    torch.manual_seed(2)
    target = tiny_vit()
    assert not torch.equal(target.vit.cls_token, source.vit.cls_token)
    assert load_pretrained_encoder(target, weights, PREPROCESSING) is target
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key
    assert encoder_source(weights)["sha256"] == json.loads(weights.with_suffix(".json").read_text())["sha256"]


@pytest.mark.parametrize("value", [None, "null", "None", ""])
def test_null_keeps_the_random_initialisation(value: str | None, tiny_vit: Callable[..., ViTImageEncoder]) -> None:
    torch.manual_seed(3)
    encoder = tiny_vit()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    load_pretrained_encoder(encoder, value)
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())
    assert encoder_source(value) == {"pretrained_encoder": None, "initialisation": "random"}


def test_architecture_mismatch_is_refused_naming_every_difference(
    exported: tuple[Path, ViTImageEncoder], tiny_vit: Callable[..., ViTImageEncoder]
) -> None:
    weights, _ = exported
    with pytest.raises(EncoderMismatchError) as error:
        load_pretrained_encoder(tiny_vit(hidden_size=32, num_layers=2), weights)
    message = str(error.value)
    assert "architecture hidden_size: file 16, configured 32" in message
    assert "architecture num_layers: file 1, configured 2" in message
    assert "mlp_dim" not in message and "input size" not in message


def test_other_architecture_family_is_refused(exported: tuple[Path, ViTImageEncoder]) -> None:
    weights, _ = exported
    with pytest.raises(EncoderMismatchError, match="architecture arch: file 'vit', configured 'resnet'"):
        load_pretrained_encoder(ResNetImageEncoder(depth=10, img_size=32), weights)


def test_input_size_mismatch_is_refused(
    exported: tuple[Path, ViTImageEncoder], tiny_vit: Callable[..., ViTImageEncoder]
) -> None:
    weights, _ = exported
    with pytest.raises(
        EncoderMismatchError, match=r"input size: the file was trained at \[32, 32\], the bundle configures \[48, 48\]"
    ):
        load_pretrained_encoder(tiny_vit(img_size=48), weights)


def test_preprocessing_mismatch_is_refused(
    exported: tuple[Path, ViTImageEncoder], tiny_vit: Callable[..., ViTImageEncoder]
) -> None:
    weights, _ = exported
    wrong = {
        "normalization": {"mean": 0.45, "std": 0.25},
        "preprocessing": {"resize_longest": 40, "pad_square": 40, "crop": 36},
    }
    with pytest.raises(EncoderMismatchError) as error:
        load_pretrained_encoder(tiny_vit(), weights, wrong)
    assert "normalization mean: the encoder was pretrained with 0.5, the bundle uses 0.45" in str(error.value)
    assert "preprocessing crop: the encoder was pretrained with 32, the bundle uses 36" in str(error.value)


def test_checksum_mismatch_is_refused(
    exported: tuple[Path, ViTImageEncoder], tiny_vit: Callable[..., ViTImageEncoder]
) -> None:
    weights, _ = exported
    sidecar = json.loads(weights.with_suffix(".json").read_text())
    sidecar["sha256"] = "0" * 64
    weights.with_suffix(".json").write_text(json.dumps(sidecar))
    with pytest.raises(EncoderMismatchError, match="SHA-256 .* differs from 0{64}"):
        load_pretrained_encoder(tiny_vit(), weights)


def test_replaced_weights_are_refused(
    exported: tuple[Path, ViTImageEncoder], tiny_vit: Callable[..., ViTImageEncoder]
) -> None:
    weights, _ = exported
    torch.save({k: v + 1 for k, v in tiny_vit().state_dict().items()}, weights)
    with pytest.raises(EncoderMismatchError, match="damaged or replaced"):
        load_pretrained_encoder(tiny_vit(), weights)


def test_missing_files_say_what_to_do(
    tmp_path: Path, exported: tuple[Path, ViTImageEncoder], tiny_vit: Callable[..., ViTImageEncoder]
) -> None:
    with pytest.raises(FileNotFoundError, match="train the pretraining bundle first"):
        load_pretrained_encoder(tiny_vit(), tmp_path / "absent.pt")
    weights, _ = exported
    weights.with_suffix(".json").unlink()
    with pytest.raises(FileNotFoundError, match="has no sidecar image_encoder.json"):
        load_pretrained_encoder(tiny_vit(), weights)


def test_foreign_sidecar_format_is_refused(
    exported: tuple[Path, ViTImageEncoder], tiny_vit: Callable[..., ViTImageEncoder]
) -> None:
    weights, _ = exported
    weights.with_suffix(".json").write_text(json.dumps({"format": "something-else/2"}))
    with pytest.raises(EncoderMismatchError, match="sidecar format 'something-else/2'"):
        load_pretrained_encoder(tiny_vit(), weights)
