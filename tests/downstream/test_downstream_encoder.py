"""Loading the pretrained encoder: refusals with messages that say what differs, label fractions, groups."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sista_monai.config import as_flag
from sista_monai.data.tasks import label_fraction_key
from sista_monai.engines import encoder_parameter_groups
from sista_monai.errors import EncoderMismatchError
from sista_monai.io import encoder_source, export_image_encoder, load_pretrained_encoder
from sista_monai.losses import positive_class_weight
from sista_monai.networks import ChestXrayClassifier, ResNetImageEncoder, ViTImageEncoder

PREPROCESSING = {
    "normalization": {"mean": 0.5, "std": 0.25},
    "preprocessing": {"resize_longest": 40, "pad_square": 40, "crop": 32},
}


def _vit(**kwargs) -> ViTImageEncoder:
    config = {
        "img_size": 32,
        "patch_size": 16,
        "preset": "tiny",
        "hidden_size": 16,
        "mlp_dim": 32,
        "num_layers": 1,
        "num_heads": 2,
    }
    return ViTImageEncoder(**{**config, **kwargs})


@pytest.fixture
def exported(tmp_path: Path) -> tuple[Path, ViTImageEncoder]:
    torch.manual_seed(1)
    encoder = _vit()
    weights, _ = export_image_encoder(
        encoder,
        tmp_path,
        normalization=PREPROCESSING["normalization"],
        extra={"preprocessing": PREPROCESSING["preprocessing"]},
    )
    return weights, encoder


def test_matching_file_loads_the_exported_weights(exported: tuple[Path, ViTImageEncoder]) -> None:
    weights, source = exported
    torch.manual_seed(2)
    target = _vit()
    assert not torch.equal(target.vit.cls_token, source.vit.cls_token)
    assert load_pretrained_encoder(target, weights, PREPROCESSING) is target
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key
    assert encoder_source(weights)["sha256"] == json.loads(weights.with_suffix(".json").read_text())["sha256"]


@pytest.mark.parametrize("value", [None, "null", "None", ""])
def test_null_keeps_the_random_initialisation(value: str | None) -> None:
    torch.manual_seed(3)
    encoder = _vit()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    load_pretrained_encoder(encoder, value)
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())
    assert encoder_source(value) == {"pretrained_encoder": None, "initialisation": "random"}


def test_architecture_mismatch_is_refused_naming_every_difference(exported: tuple[Path, ViTImageEncoder]) -> None:
    weights, _ = exported
    with pytest.raises(EncoderMismatchError) as error:
        load_pretrained_encoder(_vit(hidden_size=32, num_layers=2), weights)
    message = str(error.value)
    assert "architecture hidden_size: file 16, configured 32" in message
    assert "architecture num_layers: file 1, configured 2" in message
    assert "mlp_dim" not in message and "input size" not in message


def test_other_architecture_family_is_refused(exported: tuple[Path, ViTImageEncoder]) -> None:
    weights, _ = exported
    with pytest.raises(EncoderMismatchError, match="architecture arch: file 'vit', configured 'resnet'"):
        load_pretrained_encoder(ResNetImageEncoder(depth=10, img_size=32), weights)


def test_input_size_mismatch_is_refused(exported: tuple[Path, ViTImageEncoder]) -> None:
    weights, _ = exported
    with pytest.raises(
        EncoderMismatchError, match=r"input size: the file was trained at \[32, 32\], the bundle configures \[48, 48\]"
    ):
        load_pretrained_encoder(_vit(img_size=48), weights)


def test_preprocessing_mismatch_is_refused(exported: tuple[Path, ViTImageEncoder]) -> None:
    weights, _ = exported
    wrong = {
        "normalization": {"mean": 0.45, "std": 0.25},
        "preprocessing": {"resize_longest": 40, "pad_square": 40, "crop": 36},
    }
    with pytest.raises(EncoderMismatchError) as error:
        load_pretrained_encoder(_vit(), weights, wrong)
    assert "normalization mean: the encoder was pretrained with 0.5, the bundle uses 0.45" in str(error.value)
    assert "preprocessing crop: the encoder was pretrained with 32, the bundle uses 36" in str(error.value)


def test_checksum_mismatch_is_refused(exported: tuple[Path, ViTImageEncoder]) -> None:
    weights, _ = exported
    sidecar = json.loads(weights.with_suffix(".json").read_text())
    sidecar["sha256"] = "0" * 64
    weights.with_suffix(".json").write_text(json.dumps(sidecar))
    with pytest.raises(EncoderMismatchError, match="SHA-256 .* differs from 0{64}"):
        load_pretrained_encoder(_vit(), weights)


def test_replaced_weights_are_refused(exported: tuple[Path, ViTImageEncoder]) -> None:
    weights, _ = exported
    torch.save({k: v + 1 for k, v in _vit().state_dict().items()}, weights)
    with pytest.raises(EncoderMismatchError, match="damaged or replaced"):
        load_pretrained_encoder(_vit(), weights)


def test_missing_files_say_what_to_do(tmp_path: Path, exported: tuple[Path, ViTImageEncoder]) -> None:
    with pytest.raises(FileNotFoundError, match="train the pretraining bundle first"):
        load_pretrained_encoder(_vit(), tmp_path / "absent.pt")
    weights, _ = exported
    weights.with_suffix(".json").unlink()
    with pytest.raises(FileNotFoundError, match="has no sidecar image_encoder.json"):
        load_pretrained_encoder(_vit(), weights)


def test_foreign_sidecar_format_is_refused(exported: tuple[Path, ViTImageEncoder]) -> None:
    weights, _ = exported
    weights.with_suffix(".json").write_text(json.dumps({"format": "something-else/2"}))
    with pytest.raises(EncoderMismatchError, match="sidecar format 'something-else/2'"):
        load_pretrained_encoder(_vit(), weights)


@pytest.mark.parametrize(
    ("fraction", "key"),
    [(1, "training_1"), (10, "training_10"), (100, "training"), ("10", "training_10"), (1.0, "training_1")],
)
def test_label_fraction_keys(fraction: int | str | float, key: str) -> None:
    assert label_fraction_key(fraction) == key


@pytest.mark.parametrize("fraction", [5, 0, "all", None])
def test_unknown_label_fraction_is_refused(fraction: object) -> None:
    with pytest.raises(ValueError, match="label_fraction must be one of"):
        label_fraction_key(fraction)


def test_linear_probe_optimises_the_head_only() -> None:
    network = ChestXrayClassifier(_vit(), freeze_encoder=True)
    groups = encoder_parameter_groups(network, learning_rate=0.01, encoder_learning_rate=1e-4, weight_decay=1e-6)
    assert [g["name"] for g in groups] == ["head"]
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in network.head.parameters()}
    assert not any(p.requires_grad for p in network.encoder.parameters())


def test_fine_tuning_gives_the_encoder_its_own_learning_rate() -> None:
    network = ChestXrayClassifier(_vit(), freeze_encoder=False)
    wrapper = torch.nn.Module()
    wrapper.module = network  # the attribute DistributedDataParallel wraps the network under
    groups = encoder_parameter_groups(wrapper, 0.01, 1e-4)
    by_name = {g["name"]: g for g in groups}
    assert by_name["head"]["lr"] == 0.01 and by_name["encoder"]["lr"] == 1e-4
    trainable = {id(p) for p in network.parameters() if p.requires_grad}
    assert {id(p) for g in groups for p in g["params"]} == trainable
    optimizer = torch.optim.AdamW(groups, lr=0.01)
    assert [g["lr"] for g in optimizer.param_groups] == [0.01, 1e-4]


def test_positive_class_weight_balances_the_classes() -> None:
    items = [{"label": 0}] * 6 + [{"label": 1}] * 2
    assert positive_class_weight(items).tolist() == [3.0]
    with pytest.raises(ValueError, match="both classes are needed"):
        positive_class_weight([{"label": 0}] * 3)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(True, True), (False, False), ("false", False), ("True", True), ("no", False), (1, True), (0, False)],
)
def test_flags_as_typed_on_the_command_line(value: object, expected: bool) -> None:
    assert as_flag(value) is expected


@pytest.mark.parametrize("value", ["maybe", 2, None, 0.5])
def test_non_flags_are_refused(value: object) -> None:
    with pytest.raises(ValueError, match="freeze_encoder must be true or false"):
        as_flag(value, "freeze_encoder")


def test_fine_tuning_spelled_false_on_the_command_line() -> None:
    network = ChestXrayClassifier(_vit(), freeze_encoder="false")  # `--freeze_encoder false` arrives as a string
    assert not network.freeze_encoder and all(p.requires_grad for p in network.head.parameters())
    assert any(p.requires_grad for p in network.encoder.parameters())
