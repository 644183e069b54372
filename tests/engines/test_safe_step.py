"""The shared safe optimiser step: a NaN seen by one rank stops or skips the step on both ranks, for every trainer;
and every trainer's output in the form MONAI's own handlers read (``--tracking mlflow``).

Each NaN case runs two processes in a gloo process group with the network wrapped in DistributedDataParallel as the
bundles' ``multi_gpu_train.json`` wrap it; only rank 1's second batch holds a NaN image. Without agreement, rank 0
would enter DDP's gradient all-reduce alone and wait forever (the join timeout turns that into a failure).
"""

from __future__ import annotations

import copy
import multiprocessing
import traceback
from pathlib import Path

import pytest
import torch
from ignite.engine import Events
from monai.bundle import ConfigParser
from monai.bundle.utils import DEFAULT_MLFLOW_SETTINGS
from monai.data import DataLoader, decollate_batch
from monai.data.utils import no_collation
from monai.losses import DiceCELoss
from tiny_models import TINY_BERT
from torch.nn.parallel import DistributedDataParallel

from sista_monai.engines import DetectionTrainer, SafeSupervisedTrainer, SISTATrainer
from sista_monai.engines.step import decollated_scalars
from sista_monai.errors import NonFiniteLossError
from sista_monai.handlers import loss_terms
from sista_monai.losses import SemanticInstanceAlignmentLoss, SISTALoss
from sista_monai.networks import (
    ChestXrayClassifier,
    HuggingFaceTextEncoder,
    SISTAModel,
    ViTImageEncoder,
    build_detector,
    detection_network,
    segmentation_network,
)

TRAINERS = ("sista", "classification", "segmentation", "detection")
BOUND_S = 120


def _vit(size: int) -> ViTImageEncoder:
    return ViTImageEncoder(img_size=size, patch_size=8, preset="tiny", num_layers=2)


def _image(rank: int, index: int, size: int) -> torch.Tensor:
    image = torch.randn(1, size, size, generator=torch.Generator().manual_seed(100 * rank + index))
    return torch.full_like(image, float("nan")) if (rank, index) in {(1, 2), (1, 3)} else image


def _trainer(kind: str, rank: int, nonfinite_loss: str, ddp: bool = True) -> tuple[object, torch.nn.Module]:
    """A trainer as the bundle builds it, on a DDP-wrapped tiny network (``ddp``); batches of 2, NaN in rank 1's 2nd."""

    def wrap(module: torch.nn.Module) -> torch.nn.Module:
        return DistributedDataParallel(module, find_unused_parameters=True) if ddp else module

    torch.manual_seed(0)  # the same initial weights on both ranks, as DDP expects
    common = {"device": torch.device("cpu"), "max_epochs": 1, "nonfinite_loss": nonfinite_loss}
    if kind == "sista":
        # a learnable SIA temperature in the model: DDP averages its gradient like any other weight's
        model = SISTAModel(_vit(16), HuggingFaceTextEncoder(config=TINY_BERT), embed_dim=8, learnable_temperature=True)
        items = []
        for index in range(6):
            ids = torch.randint(5, 40, (12,), generator=torch.Generator().manual_seed(index))
            ids[0], ids[9] = 2, 3
            mask = torch.ones(12, dtype=torch.long)
            items.append({"image": _image(rank, index, 16), "input_ids": ids, "attention_mask": mask})
        network = wrap(model)
        trainer = SISTATrainer(
            train_data_loader=DataLoader(items, batch_size=2),
            network=network,
            optimizer=torch.optim.SGD(network.parameters(), lr=0.01),
            loss_function=SISTALoss(sia=SemanticInstanceAlignmentLoss(threshold=0.9)),
            **common,
        )
        return trainer, network
    if kind == "detection":
        network = wrap(detection_network(_vit(64), fpn_channels=16))
        detector = build_detector(network)
        box = torch.tensor([[8.0, 8.0, 30.0, 40.0]])
        items = [{"image": _image(rank, i, 64), "box": box, "label": torch.tensor([0])} for i in range(6)]
        trainer = DetectionTrainer(
            train_data_loader=DataLoader(items, batch_size=2, collate_fn=no_collation),
            network=network,
            optimizer=torch.optim.SGD([p for p in network.parameters() if p.requires_grad], lr=1e-3),
            detector=detector,
            **common,
        )
        return trainer, network
    if kind == "classification":
        module = ChestXrayClassifier(_vit(16), num_classes=1)
        loss = torch.nn.BCEWithLogitsLoss()
        items = [{"image": _image(rank, i, 16), "label": torch.tensor([float(i % 2)])} for i in range(6)]
    else:
        encoder = ViTImageEncoder(img_size=32, patch_size=16, preset="tiny", hidden_size=16, mlp_dim=32, num_heads=2)
        module = segmentation_network(encoder, feature_size=4, norm_name="batch")
        loss = DiceCELoss(sigmoid=True)
        items = [{"image": _image(rank, i, 32), "label": (torch.rand(1, 32, 32) > 0.7).float()} for i in range(6)]
    network = wrap(module)
    trainer = SafeSupervisedTrainer(
        train_data_loader=DataLoader(items, batch_size=2),
        network=network,
        optimizer=torch.optim.SGD(network.parameters(), lr=0.01),
        loss_function=loss,
        **common,
    )
    return trainer, network


def _rank(kind: str, nonfinite_loss: str, rank: int, store: str, out: str) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        trainer, network = _trainer(kind, rank, nonfinite_loss)
        try:
            trainer.run()  # type: ignore[attr-defined]
            state = torch.cat([p.detach().flatten() for p in network.parameters()])
            result = f"completed skipped={trainer.state.skipped_iterations} finite={bool(torch.isfinite(state).all())}"  # type: ignore[attr-defined]
            torch.save(state, Path(out, f"params{rank}.pt"))
        except NonFiniteLossError as error:
            result = f"raised {str(error).split(':')[0]}"
        Path(out, f"rank{rank}").write_text(result)
    except BaseException:
        Path(out, f"rank{rank}").write_text("error " + traceback.format_exc())
    finally:
        torch.distributed.destroy_process_group()


def _run_two_ranks(kind: str, nonfinite_loss: str, folder: Path) -> list[str]:
    context = multiprocessing.get_context("fork")
    ranks = [
        context.Process(target=_rank, args=(kind, nonfinite_loss, r, str(folder / "store"), str(folder)))
        for r in (0, 1)
    ]
    for process in ranks:
        process.start()
    for process in ranks:
        process.join(timeout=BOUND_S)
    hung = [r for r, p in enumerate(ranks) if p.exitcode is None]
    for process in ranks:
        if process.exitcode is None:
            process.kill()
    assert not hung, f"rank(s) {hung} still running after {BOUND_S} s: the ranks did not agree"
    return [(folder / f"rank{r}").read_text() for r in (0, 1)]


@pytest.mark.slow
@pytest.mark.parametrize("kind", TRAINERS)
def test_a_nan_on_one_rank_stops_both(kind: str, tmp_path: Path) -> None:
    what = {"sista": "SISTA loss", "detection": "detection loss"}.get(kind, "loss")
    results = _run_two_ranks(kind, "raise", tmp_path)
    assert results == [
        f"raised non-finite {what} on another rank at iteration 2 (epoch 1)",
        f"raised non-finite {what} at iteration 2 (epoch 1)",
    ], results


@pytest.mark.slow
@pytest.mark.parametrize("kind", TRAINERS)
def test_a_nan_on_one_rank_is_skipped_by_both(kind: str, tmp_path: Path) -> None:
    results = _run_two_ranks(kind, "skip", tmp_path)
    assert results == ["completed skipped=1 finite=True"] * 2, results
    torch.testing.assert_close(torch.load(tmp_path / "params0.pt"), torch.load(tmp_path / "params1.pt"))


def test_detection_trainer_stops_on_a_non_finite_loss_naming_the_iteration() -> None:
    network = detection_network(_vit(64), fpn_channels=16)
    detector = build_detector(network)
    good = {"image": torch.randn(1, 64, 64), "box": torch.tensor([[8.0, 8.0, 30.0, 40.0]]), "label": torch.tensor([0])}
    bad = {**good, "image": torch.full((1, 64, 64), float("nan"))}
    loader = DataLoader([good, good, bad, good], batch_size=2, collate_fn=no_collation)
    trainer = DetectionTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=loader,
        network=network,
        optimizer=torch.optim.SGD([p for p in network.parameters() if p.requires_grad], lr=1e-3),
        detector=detector,
    )
    before = {k: v.clone() for k, v in network.state_dict().items()}
    with pytest.raises(NonFiniteLossError, match=r"iteration 2 \(epoch 1\)"):
        trainer.run()
    changed = [k for k, v in network.state_dict().items() if not torch.equal(v, before[k])]
    assert changed and all(torch.isfinite(v).all() for v in network.state_dict().values())  # the bad step was not taken


def test_decollated_scalars_equal_monais_decollation_of_the_batch_scalars() -> None:
    values = {
        "loss": torch.tensor(1.25),
        "loss_sia": torch.tensor([0.5], dtype=torch.float64),
        "rows_without_negatives": torch.tensor(3),
        "flag": torch.tensor(True),
        "lr": 1e-4,
        "attention": torch.rand(2, 5),
        "name": "not a number",
    }
    output = decollated_scalars(values, batch_size=2)
    reference = decollate_batch({**values, "per_sample": torch.zeros(2)}, detach=True)
    for item, expected in zip(output, reference, strict=True):
        expected = {k: expected[k] for k in ("loss", "rows_without_negatives", "flag", "lr")}
        assert {k: item[k] for k in expected} == expected
        assert type(item["rows_without_negatives"]) is int and type(item["flag"]) is bool
    assert [list(item) for item in output] == [["loss", "loss_sia", "rows_without_negatives", "flag", "lr"]] * 2
    assert output[0]["loss_sia"] == 0.5 and output[0] is not output[1]
    with pytest.raises(ValueError, match="batch_size must be at least 1, got 0"):
        decollated_scalars(values, batch_size=0)


@pytest.mark.slow
@pytest.mark.parametrize("kind", TRAINERS)
def test_monais_default_mlflow_handler_logs_every_trainers_loss(kind: str, tmp_path: Path) -> None:
    """The trainer handler ``--tracking mlflow`` adds (MONAI's own settings, ``from_engine(["loss"], first=True)``)
    logs the loss of every iteration, as the trainer computed it, into a local MLflow store."""
    from mlflow.tracking import MlflowClient

    trainer, _ = _trainer(kind, rank=0, nonfinite_loss="raise", ddp=False)
    parser = ConfigParser({**copy.deepcopy(DEFAULT_MLFLOW_SETTINGS["configs"]), "bundle_root": str(tmp_path)})
    parser["output_dir"] = str(tmp_path)
    parser["save_execute_config"] = None  # ``monai.bundle run`` puts the path of the config it saved here
    parser.get_parsed_content("trainer").attach(trainer)
    losses: list[float] = []
    trainer.add_event_handler(  # type: ignore[attr-defined]
        Events.ITERATION_COMPLETED, lambda engine: losses.append(loss_terms(engine.state.output)["loss"])
    )
    trainer.run()  # type: ignore[attr-defined]
    output = trainer.state.output  # type: ignore[attr-defined]
    assert isinstance(output, list) and len(output) == 2 and all(isinstance(item, dict) for item in output)
    client = MlflowClient(tracking_uri=parser.get_parsed_content("tracking_uri"))
    (run,) = client.search_runs([client.get_experiment_by_name("monai_experiment").experiment_id])
    history = sorted(client.get_metric_history(run.info.run_id, "train_loss"), key=lambda m: m.step)
    assert [m.step for m in history] == [1, 2, 3]
    assert [m.value for m in history] == pytest.approx(losses, rel=1e-6) and len(losses) == 3
