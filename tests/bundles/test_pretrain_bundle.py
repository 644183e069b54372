"""The pretraining bundle end to end: the README command, --bundle_root, torchrun on CPU, resume, privacy."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from bundle_helpers import (
    EPOCH_LINE,
    ITERATION_LINE,
    REPO_ROOT,
    as_cli,
    assert_metadata_verifies,
    assert_quiet_console,
    assert_short_console,
    bundle_command,
    console_lines,
    run_cli,
    tiny_pretrain_overrides,
)
from monai.bundle import run as bundle_run
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tracking import assert_mlflow_tracking

from sista_monai.io import load_network_weights
from sista_monai.metrics.pretraining import TARGETS
from sista_monai.networks import build_image_encoder

CONFIGS = REPO_ROOT / "bundles" / "pretrain" / "configs"
TRAIN = CONFIGS / "train.json"

pytestmark = pytest.mark.slow


def _outputs(bundle_root: Path) -> dict[str, Path]:
    return {
        "encoder": bundle_root / "models" / "image_encoder.pt",
        "sidecar": bundle_root / "models" / "image_encoder.json",
        "final": bundle_root / "models" / "checkpoint_final.pt",
        "best": bundle_root / "models" / "model_best.pt",
        "metrics": bundle_root / "eval" / "metrics.json",
    }


def _planted_phi(dataset: Path) -> list[str]:
    manifest = json.loads((dataset / "phi_manifest.json").read_text())
    strings = [s for s in manifest["strings"] + manifest.get("name_parts", []) if len(s) >= 5]
    assert strings, "the demo planted no PHI strings"
    return strings


def _assert_no_phi(folder: Path, text: str, strings: list[str]) -> int:
    scanned = 0
    for path in [p for p in folder.rglob("*") if p.is_file()]:
        data = path.read_bytes()
        scanned += 1
        for value in strings:
            assert value.encode() not in data, f"planted PHI {value!r} found in {path}"
            assert value.encode("utf-16-le") not in data, f"planted PHI {value!r} (UTF-16) found in {path}"
    for value in strings:
        assert value not in text, f"planted PHI {value!r} found in the console output"
    return scanned


def test_readme_command_end_to_end_without_phi(tiny_demo: Path, tmp_path: Path) -> None:
    """The README's command from the repository root (tiny overrides), then evaluate and inference configs."""
    bundle_root = tmp_path / "pretrain"
    args = ["python", "-m", "monai.bundle", "run", "--config_file", "bundles/pretrain/configs/train.json"]
    overrides = {"bundle_root": str(bundle_root), **tiny_pretrain_overrides(tiny_demo)}
    result = run_cli(args + as_cli(overrides))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    console = result.stdout + result.stderr
    assert_quiet_console(console, overrides, terms=("loss", "loss_sia", "loss_sta", "lr"))
    for name, path in _outputs(bundle_root).items():
        assert path.is_file(), f"{name} missing: {path}"

    metrics = json.loads(_outputs(bundle_root)["metrics"].read_text())
    assert metrics["n_pairs"] == len(json.loads((tiny_demo / "datalist_pretrain.json").read_text())["test"])
    assert metrics["retrieval"]["chance"]["R@5"] == pytest.approx(min(1.0, 5 / metrics["n_pairs"]))
    # chance levels and base rates recomputed here from the datalist's finding labels
    labels = [
        tuple(v > 0.5 for v in item["labels"])
        for item in json.loads((tiny_demo / "datalist_pretrain.json").read_text())["test"]
    ]
    n = len(labels)
    same = sum(a == b for a in labels for b in labels)
    assert metrics["retrieval"]["semantic"]["chance"] == pytest.approx(same / n**2)
    assert metrics["sia"]["base_rate"] == pytest.approx((same - n) / (n * (n - 1)))
    assert (
        metrics["sia"]["source"] == json.loads(TRAIN.read_text())["similarity_source"]
        and metrics["sia"]["threshold"] == json.loads(TRAIN.read_text())["sia_threshold"]
    )
    assert metrics["grounding"]["lesion"]["trials"] > 0 and metrics["grounding"]["zone"]["trials"] > 0
    lesion, counterfactual = metrics["grounding"]["lesion"], metrics["grounding"]["counterfactual"]
    assert 0.0 <= lesion["text_pointer"] <= 1.0 and 0.0 <= lesion["prior"] <= 1.0
    twins = json.loads((tiny_demo / "datalist_counterfactual.json").read_text())["test"]
    assert twins and counterfactual["trials"] >= len(twins)  # every twin's report names its finding at least once
    for key in ("follow_rate", "prior", "text_pointer"):
        assert 0.0 <= counterfactual[key] <= 1.0, key
    assert sum(f["trials"] for f in counterfactual["per_finding"].values()) == counterfactual["trials"]
    assert metrics["sta"]["contrast"] == json.loads(TRAIN.read_text())["sta_contrast"]
    assert "counterfactual grounding" in console
    assert set(metrics["targets"]) == set(metrics["targets_met"]) == set(TARGETS)
    for key, target in metrics["targets"].items():
        assert metrics["targets_met"][key] == (metrics["measured"][key] >= target)
    assert metrics["measured"]["lesion_grounding_over_prior"] == pytest.approx(
        metrics["grounding"]["lesion"]["accuracy"] / metrics["grounding"]["lesion"]["prior"]
    )
    assert "lesion grounding" in console and "loss_sia" in console and "loss_sta" in console
    assert "corrupt cache" not in console.lower()  # the cached items load with weights_only=True
    assert list((bundle_root / "eval" / "heatmaps").glob("pair00_*.png"))

    sidecar = json.loads(_outputs(bundle_root)["sidecar"].read_text())
    encoder = build_image_encoder(sidecar["architecture"])
    encoder.load_state_dict(torch.load(_outputs(bundle_root)["encoder"], weights_only=True))
    assert sidecar["input_size"] == [48, 48] and sidecar["normalization"] == {"mean": 0.5, "std": 0.25}

    scalars = set()
    for events in (bundle_root / "logs").glob("events.*"):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        scalars |= set(accumulator.Tags()["scalars"])
    assert {"loss", "loss_sia", "loss_sta", "false_negative_rate", "sparsity", "temperature", "lr"} <= scalars

    layered = "['bundles/pretrain/configs/train.json','bundles/pretrain/configs/evaluate.json']"
    evaluation = run_cli(
        ["python", "-m", "monai.bundle", "run", "--config_file", layered]
        + as_cli({"bundle_root": str(bundle_root), **tiny_pretrain_overrides(tiny_demo)})
    )
    assert evaluation.returncode == 0, evaluation.stderr[-3000:]
    assert json.loads(_outputs(bundle_root)["metrics"].read_text()) == metrics  # same weights, same numbers

    images = tmp_path / "inference_in"
    images.mkdir()
    item = json.loads((tiny_demo / "datalist_pretrain.json").read_text())["test"][0]
    shutil.copy(tiny_demo / item["image"], images / "study.dcm")
    (images / "study.txt").write_text(item["report"])
    inference = "['bundles/pretrain/configs/train.json','bundles/pretrain/configs/inference.json']"
    out = tmp_path / "inference_out"
    inferred = run_cli(
        ["python", "-m", "monai.bundle", "run", "--config_file", inference]
        + as_cli(
            {
                "bundle_root": str(bundle_root),
                **tiny_pretrain_overrides(images),
                "output_dir": str(out),
                "tokenizer": str(tiny_demo / "tokenizer"),
            }
        )
    )
    assert inferred.returncode == 0, inferred.stderr[-3000:]
    assert_short_console(inferred)
    embedding = json.loads((out / "study.json").read_text())["embedding"]
    assert len(embedding) == 16 and sum(v * v for v in embedding) == pytest.approx(1.0, abs=1e-4)
    alignment = json.loads((out / "study_alignment.json").read_text())
    assert alignment["patch_grid"] == [3, 3] and alignment["tokens"]
    for token in alignment["tokens"]:
        assert sum(sum(row) for row in token["weights"]) == pytest.approx(1.0, abs=1e-4)

    scanned = _assert_no_phi(bundle_root, console + evaluation.stdout + evaluation.stderr, _planted_phi(tiny_demo))
    assert scanned >= 8


def test_bundle_copied_elsewhere_runs_with_bundle_root(tiny_demo: Path, tmp_path: Path) -> None:
    copy = tmp_path / "somewhere" / "pretrain"
    shutil.copytree(REPO_ROOT / "bundles" / "pretrain", copy, ignore=shutil.ignore_patterns("models", "logs", "eval"))
    overrides = {**tiny_pretrain_overrides(tiny_demo), "epochs": 1}
    bundle_run(config_file=str(copy / "configs" / "train.json"), bundle_root=str(copy), **overrides)
    assert (copy / "models" / "image_encoder.pt").is_file() and (copy / "eval" / "metrics.json").is_file()


def test_iteration_log_true_prints_every_iteration(tiny_demo: Path, tmp_path: Path) -> None:
    """The documented override: ``--iteration_log true`` adds MONAI's per-iteration lines to the epoch line."""
    overrides = {"bundle_root": str(tmp_path / "pretrain"), **tiny_pretrain_overrides(tiny_demo), "epochs": 1}
    args = ["python", "-m", "monai.bundle", "run", "--config_file", "bundles/pretrain/configs/train.json"]
    result = run_cli(args + as_cli({**overrides, "iteration_log": True}))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = console_lines(result.stdout + result.stderr)
    (epoch_line,) = [line for line in lines if EPOCH_LINE.search(line)]
    iterations = int(EPOCH_LINE.search(epoch_line).group(3))
    per_iteration = [line for line in lines if ITERATION_LINE.search(line)]
    assert len(per_iteration) == iterations >= 2 and all("loss_sia" in line for line in per_iteration)


def test_tracking_mlflow_receives_every_loss_term_and_the_final_metrics(tiny_demo: Path, tmp_path: Path) -> None:
    """MONAI's own ``--tracking mlflow`` as it is (a local SQLite store in the bundle's ``output_dir``): the loss of
    every iteration, each loss term's epoch mean (``epoch_*``: the trainer's metrics at each epoch), the validation
    metrics of every epoch, and the test evaluator's metrics equal to ``eval/metrics.json``."""
    root = tmp_path / "pretrain"
    overrides = {"bundle_root": str(root), **tiny_pretrain_overrides(tiny_demo), "epochs": 2, "val_interval": 1}
    assert_mlflow_tracking(
        bundle_command("pretrain", "train.json"),
        overrides,
        epoch_terms={"loss", "loss_sia", "loss_sta", "lr"},
        validation={"val_recall_at_5", "semantic_precision_at_5"},
        test={
            "lesion_pointing_accuracy": ("grounding", "lesion", "accuracy"),
            "counterfactual_follow_rate": ("grounding", "counterfactual", "follow_rate"),
            "recall_at_5_image_to_report": ("retrieval", "image_to_report", "R@5"),
            "semantic_precision_at_5": ("retrieval", "semantic", "precision_at_5"),
            "sia_flag_precision": ("sia", "flag_precision"),
        },
    )


def test_metadata_verifies() -> None:
    assert_metadata_verifies(CONFIGS / "metadata.json")


def test_resume_equals_an_uninterrupted_run(tiny_demo: Path, tmp_path: Path) -> None:
    """2 epochs straight == 1 epoch, a stop, then ``resume_from`` the epoch-1 checkpoint for the second."""
    overrides = {**tiny_pretrain_overrides(tiny_demo), "val_interval": 5}
    straight = tmp_path / "straight"
    bundle_run(config_file=str(CONFIGS / "train.json"), bundle_root=str(straight), **overrides)

    interrupted = tmp_path / "interrupted"
    stop_after_one = [
        "$monai.utils.set_determinism(seed=@seed)",
        "$@checkpointer.attach(@train#trainer)",
        "$@train#trainer.add_event_handler(ignite.engine.Events.EPOCH_COMPLETED(once=1), lambda e: e.terminate())",
    ]
    bundle_run(
        config_file=str(CONFIGS / "train.json"),
        bundle_root=str(interrupted),
        initialize=stop_after_one,
        finalize=[],
        **overrides,
    )
    checkpoint = interrupted / "models" / "checkpoint_1.pt"
    assert checkpoint.is_file()
    bundle_run(
        config_file=str(CONFIGS / "train.json"), bundle_root=str(interrupted), resume_from=str(checkpoint), **overrides
    )

    a = torch.load(straight / "models" / "checkpoint_final.pt", weights_only=True)
    b = torch.load(interrupted / "models" / "checkpoint_final.pt", weights_only=True)
    assert a["trainer"]["iteration"] == b["trainer"]["iteration"] > 0
    for key, value in a["network"].items():
        torch.testing.assert_close(b["network"][key], value, rtol=0, atol=0, msg=lambda m, k=key: f"{k}: {m}")
    for group_a, group_b in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True):
        torch.testing.assert_close(group_b["exp_avg"], group_a["exp_avg"], rtol=0, atol=0)


def test_torchrun_two_processes_on_cpu(tiny_demo: Path, tmp_path: Path) -> None:
    bundle_root = tmp_path / "ddp"
    layered = "['bundles/pretrain/configs/train.json','bundles/pretrain/configs/multi_gpu_train.json']"
    overrides = {"bundle_root": str(bundle_root), **tiny_pretrain_overrides(tiny_demo), "batch_size": 4}
    result = run_cli(
        [
            "python",
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            "29533",
            "-m",
            "monai.bundle",
            "run",
            "--config_file",
            layered,
        ]
        + as_cli(overrides),
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    metrics = json.loads((bundle_root / "eval" / "metrics.json").read_text())
    assert metrics["n_pairs"] >= 1
    # rank 0 alone writes TensorBoard events (file names end with <pid>.<n>)
    writers = {p.name.split(".")[-2] for p in (bundle_root / "logs").glob("events.*")}
    assert len(writers) == 1, writers
    state = torch.load(bundle_root / "models" / "checkpoint_final.pt", weights_only=True)
    assert not any(k.startswith("module.") for k in state["network"])  # Ignite saves the unwrapped model
    network = build_image_encoder(
        json.loads((bundle_root / "models" / "image_encoder.json").read_text())["architecture"]
    )
    network.load_state_dict(torch.load(bundle_root / "models" / "image_encoder.pt", weights_only=True))


def test_load_network_weights_refuses_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "w.pt"
    torch.save({"network": {"nope": torch.zeros(1)}}, path)
    with pytest.raises(ValueError, match="do not fit"):
        load_network_weights(path, torch.nn.Linear(2, 2))


@pytest.mark.parametrize("layer", ["paper.json", "paper_resnet50.json"])
def test_paper_layers_start_the_image_encoder_from_imagenet_weights(layer: str, tmp_path: Path) -> None:
    """``imagenet_weights`` reaches the encoder of the paper layers (a small torchvision model saved locally stands in
    for the ImageNet file, the encoder shrunk to match it): the loaded encoder holds those weights."""
    import torchvision
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(
        [str(CONFIGS / "train.json"), str(CONFIGS / "paper.json"), *([str(CONFIGS / layer)] * (layer != "paper.json"))]
    )
    torch.manual_seed(0)
    if layer == "paper.json":
        source = torchvision.models.VisionTransformer(
            image_size=224, patch_size=16, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32
        )
        parser.update(
            {
                "image_encoder#preset": "tiny",
                "image_encoder#hidden_size": 16,
                "image_encoder#mlp_dim": 32,
                "image_encoder#num_layers": 1,
                "image_encoder#num_heads": 2,
            }
        )
    else:
        source = torchvision.models.resnet18(weights=None)
        parser["image_encoder#depth"] = 18
    torch.save(source.state_dict(), tmp_path / "imagenet.pth")
    parser["imagenet_weights"] = str(tmp_path / "imagenet.pth")
    encoder = parser.get_parsed_content("image_encoder")
    state = source.state_dict()
    if layer == "paper.json":
        expected = state["class_token"] + state["encoder.pos_embedding"][:, :1]
        torch.testing.assert_close(encoder.vit.cls_token.detach(), expected)
        assert encoder.config()["layer_norm_eps"] == 1e-6
    else:
        torch.testing.assert_close(
            encoder.resnet.layer1[0].conv1.weight.detach(), state["layer1.0.conv1.weight"].transpose(-1, -2)
        )
