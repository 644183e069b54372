"""Faults across the pretraining pipeline, each through real processes, real files and real bundle runs.

* ``kill -9`` mid-epoch, then ``resume_from``: the final weights equal an uninterrupted run's.
* ``kill -9`` during checkpoint writes: every checkpoint file present loads, none is partial.
* A damaged file in the persistent cache is detected and recomputed, not trained on.
* A non-finite loss stops the run naming the iteration and the terms (or is skipped when configured), and
  no NaN weights ever replace a good file.
* ``torchrun`` on CPU (gloo) with one process killed: the other exits with an error within seconds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from bundle_helpers import EPOCH_LINE, REPO_ROOT, as_cli, run_cli, tiny_pretrain_overrides
from ignite.engine import Engine, Events
from monai.bundle import ConfigParser
from monai.data import PersistentDataset

from sista_monai.data.cache import CHECKSUM_SUFFIX, VerifiedPersistentDataset
from sista_monai.data.demo import ensure_demo_data
from sista_monai.engines import finite_on_every_rank
from sista_monai.errors import NonFiniteWeightsError
from sista_monai.handlers import AtomicCheckpointSaver, BestModelSaver, load_checkpoint
from sista_monai.io import export_image_encoder, stale_temporary_files
from sista_monai.networks import ViTImageEncoder

TRAIN = "bundles/pretrain/configs/train.json"
MULTI_GPU = "bundles/pretrain/configs/multi_gpu_train.json"
VERIFIED_CACHE = {
    f"{split}#dataset#_target_": "sista_monai.data.cache.VerifiedPersistentDataset"
    for split in ("train", "validate", "test")
}
EPOCHS = 3
SLOW_ITERATIONS = (
    "$@train#trainer.add_event_handler(ignite.engine.Events.ITERATION_COMPLETED, lambda engine: time.sleep(0.4))"
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of ``tiny_demo`` (40 studies, 64 pixels, planted PHI) of this module's own: its persistent cache is
    damaged on purpose below, which must not reach the other modules' runs."""
    return ensure_demo_data(tmp_path_factory.mktemp("faults") / "demo", n=40, size=64, seed=0, plant_phi=True)


def _overrides(demo: Path, bundle_root: Path, **extra: Any) -> dict[str, Any]:
    return {
        "bundle_root": str(bundle_root),
        **tiny_pretrain_overrides(demo),
        "epochs": EPOCHS,
        "val_interval": 5,
        **VERIFIED_CACHE,
        **extra,
    }


def _layered(folder: Path, expressions: list[str], base: str = TRAIN) -> str:
    """A ``--config_file`` list: ``base`` plus a file appending ``expressions`` to its ``initialize``."""
    initialize = json.loads((REPO_ROOT / base).read_text())["initialize"]
    extra = folder / f"extra_{len(list(folder.glob('extra_*.json')))}.json"
    extra.write_text(json.dumps({"initialize": ["$import time", *initialize, *expressions]}))
    files = [TRAIN, base] if base != TRAIN else [TRAIN]
    return "[" + ",".join(f"'{f}'" for f in [*files, str(extra)]) + "]"


def _bundle_command(config_file: str, overrides: dict[str, Any]) -> list[str]:
    return ["python", "-m", "monai.bundle", "run", "--config_file", config_file, *as_cli(overrides)]


def _env() -> dict[str, str]:
    """The environment of ``bundle_helpers.run_cli`` (network-free, one thread)."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _popen(args: list[str], log: Path, **kwargs: Any) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, *args[1:]], cwd=REPO_ROOT, env=_env(), stdout=out, stderr=subprocess.STDOUT, **kwargs
        )


def _wait_for(condition: Callable[[], bool], process: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(
                f"the run ended ({process.returncode}) before the fault was injected:\n{log.read_text()[-3000:]}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting to inject the fault:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _kill_tree(process: subprocess.Popen) -> None:
    """SIGKILL a launcher still running and the workers it started (after a failed assertion)."""
    if process.poll() is None:
        for child in _children(process.pid):
            os.kill(child, signal.SIGKILL)
        process.kill()
        process.wait(timeout=30)


def _load(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def _assert_finite(state: dict[str, torch.Tensor], where: str) -> None:
    for key, value in state.items():
        if torch.is_tensor(value) and value.is_floating_point():
            assert torch.isfinite(value).all(), f"{where}: {key} is not finite"


def _assert_same_run(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a["trainer"]["iteration"] == b["trainer"]["iteration"] > 0
    assert a["trainer"]["iteration"] == EPOCHS * a["trainer"]["epoch_length"]
    assert a["network"].keys() == b["network"].keys()
    for key, value in a["network"].items():
        torch.testing.assert_close(b["network"][key], value, rtol=0, atol=0, msg=lambda m, k=key: f"network.{k}: {m}")
    for index, state in a["optimizer"]["state"].items():
        for name in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(b["optimizer"]["state"][index][name], state[name], rtol=0, atol=0)
    assert a["lr_scheduler"]["last_epoch"] == b["lr_scheduler"]["last_epoch"]


@pytest.fixture(scope="module")
def straight(demo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted 3-epoch run: the reference of the resume and cache tests."""
    bundle_root = tmp_path_factory.mktemp("straight")
    result = run_cli(_bundle_command(TRAIN, _overrides(demo, bundle_root)))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return bundle_root / "models" / "checkpoint_final.pt"


def test_kill_9_mid_epoch_then_resume_equals_an_uninterrupted_run(demo: Path, straight: Path, tmp_path: Path) -> None:
    bundle_root = tmp_path / "killed"
    models = bundle_root / "models"
    log = tmp_path / "killed.log"
    overrides = _overrides(demo, bundle_root, iteration_log=True)  # the documented per-iteration lines
    process = _popen(_bundle_command(_layered(tmp_path, [SLOW_ITERATIONS]), overrides), log)
    try:
        _wait_for(
            lambda: (models / "checkpoint_1.pt").is_file() and "Epoch: 2/3, Iter: 1/" in log.read_text(), process, log
        )
        os.kill(process.pid, signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
    console = log.read_text()
    # killed inside epoch 2: its first iteration logged, only epoch 1's epoch line
    assert "Epoch: 2/3, Iter: 1/" in console and [int(m.group(1)) for m in EPOCH_LINE.finditer(console)] == [1]
    assert sorted(p.name for p in models.glob("*.pt")) == ["checkpoint_1.pt"]
    trainer = _load(models / "checkpoint_1.pt")["trainer"]
    assert trainer["iteration"] == trainer["epoch_length"]

    overrides = _overrides(demo, bundle_root, resume_from=str(models / "checkpoint_1.pt"))
    resumed = run_cli(_bundle_command(TRAIN, overrides))
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout + resumed.stderr
    assert f"resuming from iteration {_iterations_per_epoch(demo)}, epoch 1 " in resumed.stdout + resumed.stderr
    _assert_same_run(_load(straight), _load(models / "checkpoint_final.pt"))
    assert (models / "image_encoder.pt").is_file()


WRITER = """
import os, sys
import torch
from ignite.engine import Engine
from sista_monai.handlers import AtomicCheckpointSaver

folder = sys.argv[1]
for line in sys.stdin:  # one forked writer per line; the parent only imports, so forking is safe
    pid = os.fork()
    if pid == 0:
        network = torch.nn.Linear(2048, 2048)  # 16 MiB of weights per checkpoint

        def step(engine, batch):
            with torch.no_grad():
                for parameter in network.parameters():
                    parameter.fill_(engine.state.epoch)

        engine = Engine(step)
        AtomicCheckpointSaver(folder, {"network": network, "trainer": engine}, save_interval=1, n_saved=2).attach(engine)
        engine.run([0], max_epochs=10**6)
        os._exit(0)
    print(pid, flush=True)
    _, status = os.waitpid(pid, 0)
    print(os.waitstatus_to_exitcode(status), flush=True)
"""


def _assert_every_checkpoint_complete(folder: Path) -> int:
    files = sorted(folder.glob("*.pt"))
    for path in files:
        state = torch.load(path, map_location="cpu", weights_only=True)
        epoch = state["trainer"]["iteration"] // state["trainer"]["epoch_length"]
        assert path.name == f"checkpoint_{epoch}.pt", path
        assert torch.all(state["network"]["weight"] == epoch) and torch.all(state["network"]["bias"] == epoch), path
    return len(files)


def test_kill_9_during_checkpoint_writes_leaves_only_complete_checkpoints(tmp_path: Path) -> None:
    """Writers forked from one process are SIGKILLed mid-write (as soon as a partial file shows) or at random.

    After every kill each checkpoint present loads with ``weights_only=True`` and holds exactly the epoch its
    name says; the next writer removes the partial file the killed one left.
    """
    folder = tmp_path / "models"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(folder)],
        cwd=REPO_ROOT,
        env=_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    rng = random.Random(0)
    kills_mid_write, partial_left = 0, []
    try:
        for round_ in range(6):
            started = time.time() - 1.0  # file times have coarse resolution on some file systems
            writer.stdin.write("go\n")
            writer.stdin.flush()
            pid = int(writer.stdout.readline())
            deadline = time.monotonic() + 120
            while not any(p.stat().st_mtime >= started for p in folder.glob("checkpoint_*.pt")):
                assert time.monotonic() < deadline, "the writer wrote no checkpoint"
                time.sleep(0.005)
            assert not any(p.exists() for p in partial_left), (
                "a new saver must remove the partial files of a killed one"
            )
            if round_ % 2 == 0:  # kill while a checkpoint is being written
                while not stale_temporary_files(folder, "*.pt"):
                    time.sleep(0.001)
            else:
                time.sleep(rng.uniform(0.0, 0.3))
            os.kill(pid, signal.SIGKILL)
            assert int(writer.stdout.readline()) == -signal.SIGKILL
            partial_left = stale_temporary_files(folder, "*.pt")
            kills_mid_write += bool(partial_left)
            assert 1 <= _assert_every_checkpoint_complete(folder) <= 3  # n_saved=2, plus the newest before rotation
            for path in folder.glob("checkpoint_*.pt"):  # the next writer starts again from epoch 1
                path.unlink()
    finally:
        writer.kill()
        writer.wait(timeout=30)
    assert kills_mid_write >= 1, "no kill landed during a write"


def _flip_tensor_bytes(cache_file: Path) -> None:
    """Invert 64 bytes in the middle of every tensor record of 1 KiB or more (a 48x48 uint8 image is 2.3 KiB; the
    all-zero masks of the compact cache are one byte); the file still unpickles."""
    data = bytearray(cache_file.read_bytes())
    with zipfile.ZipFile(cache_file) as archive:
        records = [info for info in archive.infolist() if "/data/" in info.filename and info.file_size >= 1024]
        assert records and all(info.compress_type == zipfile.ZIP_STORED for info in records)
        for info in records:
            start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + info.file_size // 2
            data[start : start + 64] = bytes(b ^ 0xFF for b in data[start : start + 64])
    cache_file.write_bytes(bytes(data))


def _eval_items(demo: Path) -> tuple[Any, list[dict[str, Any]]]:
    parser = ConfigParser()
    parser.read_config(str(REPO_ROOT / TRAIN))
    parser.update({**tiny_pretrain_overrides(demo), "dataset_dir": str(demo)})
    items = json.loads((demo / "datalist_pretrain.json").read_text())["validation"][:3]
    return parser.get_parsed_content("eval_transforms"), [{**i, "image": str(demo / i["image"])} for i in items]


def _same_item(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(torch.as_tensor(a[k]), torch.as_tensor(b[k])) for k in a)


def test_flipped_bytes_in_the_persistent_cache_are_detected_and_recomputed(
    demo: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """MONAI's PersistentDataset returns the flipped tensors; VerifiedPersistentDataset recomputes them."""
    transforms, items = _eval_items(demo)
    plain_dir, verified_dir = tmp_path / "plain", tmp_path / "verified"
    expected = [PersistentDataset(items, transforms, cache_dir=plain_dir)[i] for i in range(len(items))]
    first = [VerifiedPersistentDataset(items, transforms, cache_dir=verified_dir)[i] for i in range(len(items))]
    assert all(_same_item(a, b) for a, b in zip(expected, first, strict=True))
    cache_files = sorted(verified_dir.glob("*.pt"))
    assert len(cache_files) == len(items) and all(
        VerifiedPersistentDataset.checksum_file(f).is_file() for f in cache_files
    )
    intact = {f.name: f.read_bytes() for f in cache_files}
    for cache_file in [*plain_dir.glob("*.pt"), *cache_files]:
        _flip_tensor_bytes(cache_file)

    stale = PersistentDataset(items, transforms, cache_dir=plain_dir)
    assert not any(_same_item(stale[i], expected[i]) for i in range(len(items)))  # MONAI alone trains on them

    with caplog.at_level(logging.WARNING, logger="sista_monai.data.cache"):
        verified = VerifiedPersistentDataset(items, transforms, cache_dir=verified_dir)
        assert all(_same_item(verified[i], expected[i]) for i in range(len(items)))
    warned = [r.getMessage() for r in caplog.records if "corrupt cache file" in r.getMessage()]
    assert sorted(m.split()[3] for m in warned) == [str(f) + ":" for f in cache_files]
    assert all("SHA-256" in m and "recomputing" in m for m in warned)
    for cache_file in cache_files:  # rewritten with its checksum, as first computed
        assert cache_file.read_bytes() == intact[cache_file.name]
        assert (
            VerifiedPersistentDataset.checksum_file(cache_file).read_text().strip()
            == hashlib.sha256(intact[cache_file.name]).hexdigest()
        )

    caplog.clear()
    truncated = cache_files[0]
    truncated.write_bytes(truncated.read_bytes()[:100])  # MONAI itself stops on this one (a RuntimeError)
    with caplog.at_level(logging.WARNING, logger="sista_monai.data.cache"):
        again = VerifiedPersistentDataset(items, transforms, cache_dir=verified_dir)
        assert all(_same_item(again[i], expected[i]) for i in range(len(items)))
    assert any(truncated.name in r.getMessage() for r in caplog.records)


def test_a_bundle_run_on_a_damaged_cache_trains_as_on_a_clean_one(demo: Path, straight: Path, tmp_path: Path) -> None:
    """Every cache file of the data folder damaged: warned, recomputed, and the weights equal the clean run's."""
    cache_dir = demo / ".cache" / "pretrain_64"
    cache_files = sorted(cache_dir.glob("*.pt"))
    assert len(cache_files) >= _iterations_per_epoch(demo) * 8 and all(
        VerifiedPersistentDataset.checksum_file(f).is_file() for f in cache_files
    )
    for cache_file in cache_files:
        _flip_tensor_bytes(cache_file)
    result = run_cli(_bundle_command(TRAIN, _overrides(demo, tmp_path / "damaged")))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    console = result.stdout + result.stderr
    for cache_file in cache_files:
        assert f"corrupt cache file {cache_file}" in console
    _assert_same_run(_load(straight), _load(tmp_path / "damaged" / "models" / "checkpoint_final.pt"))
    assert not stale_temporary_files(cache_dir)
    for cache_file in cache_files:
        expected = hashlib.sha256(cache_file.read_bytes()).hexdigest()
        assert Path(f"{cache_file}{CHECKSUM_SUFFIX}").read_text().strip() == expected


POISON_WEIGHTS_IN_EPOCH_2 = (
    "$@train#trainer.add_event_handler(ignite.engine.Events.EPOCH_STARTED(once=2), "
    "lambda engine, network=@network: next(iter(network.parameters())).data.fill_(float('nan')))"
)


def _iterations_per_epoch(demo: Path) -> int:
    return (
        len(json.loads((demo / "datalist_pretrain.json").read_text())["training"])
        // tiny_pretrain_overrides(demo)["batch_size"]
    )


def test_nonfinite_loss_stops_naming_the_iteration_and_terms_and_keeps_the_good_checkpoint(
    demo: Path, tmp_path: Path
) -> None:
    bundle_root = tmp_path / "nan"
    result = run_cli(_bundle_command(_layered(tmp_path, [POISON_WEIGHTS_IN_EPOCH_2]), _overrides(demo, bundle_root)))
    console = result.stdout + result.stderr
    assert result.returncode != 0
    iteration = _iterations_per_epoch(demo) + 1
    assert f"NonFiniteLossError: non-finite SISTA loss at iteration {iteration} (epoch 2): " in console
    message = console[console.index("non-finite SISTA loss") :].splitlines()[0]
    for term in ("loss=nan", "loss_sia=", "loss_sta=", "temperature=", "false_negative_rate="):
        assert term in message, message
    models = bundle_root / "models"
    assert sorted(p.name for p in models.iterdir()) == ["checkpoint_1.pt"]  # no checkpoint, export or temp file after
    _assert_finite(_load(models / "checkpoint_1.pt")["network"], "checkpoint_1.pt")


def test_nonfinite_loss_is_skipped_when_configured_and_training_goes_on(demo: Path, tmp_path: Path) -> None:
    iteration = _iterations_per_epoch(demo) + 2
    poison_batch = (
        f"$@train#trainer.add_event_handler(ignite.engine.Events.ITERATION_STARTED(once={iteration}), "
        "lambda engine: engine.state.batch['image'].fill_(float('nan')))"
    )
    bundle_root = tmp_path / "skip"
    result = run_cli(
        _bundle_command(_layered(tmp_path, [poison_batch]), _overrides(demo, bundle_root, nonfinite_loss="skip"))
    )
    console = result.stdout + result.stderr
    assert result.returncode == 0, console[-3000:]
    assert (
        f"non-finite SISTA loss at iteration {iteration} (epoch 2): loss=nan" in console and "batch skipped" in console
    )
    assert console.count("batch skipped") == 1
    final = _load(bundle_root / "models" / "checkpoint_final.pt")
    assert final["trainer"]["iteration"] == EPOCHS * _iterations_per_epoch(demo)
    _assert_finite(final["network"], "checkpoint_final.pt")
    _assert_finite(_load(bundle_root / "models" / "image_encoder.pt"), "image_encoder.pt")


def test_nonfinite_weights_are_never_saved_over_a_good_checkpoint(tmp_path: Path) -> None:
    """Weights turning NaN in epoch 2 (what ``skip`` cannot undo): the epoch-2 and final checkpoints are refused
    with the run stopped, and epoch 1's checkpoint stays as it was."""
    network = torch.nn.Linear(3, 2)

    def step(engine: Engine, batch: Any) -> None:
        if engine.state.epoch == 2:
            network.bias.data[1] = float("nan")

    trainer = Engine(step)
    AtomicCheckpointSaver(tmp_path, {"network": network, "trainer": trainer}, save_interval=1).attach(trainer)
    with pytest.raises(NonFiniteWeightsError) as refused:
        trainer.run([0, 1], max_epochs=3)
    assert str(refused.value) == (
        f"refusing to write {tmp_path / 'checkpoint_2.pt'}: non-finite values in 1 tensor(s): network.bias (1 of 2 values); "
        "files already there are left as they are"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_1.pt"]
    _assert_finite(_load(tmp_path / "checkpoint_1.pt")["network"], "checkpoint_1.pt")


def _finite_vote(rank: int, init_file: str, out: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        one_nan = finite_on_every_rank(rank != 1, torch.device("cpu"))  # only rank 1 saw a NaN
        all_finite = finite_on_every_rank(True, torch.device("cpu"))
        Path(out, f"rank{rank}").write_text(f"{one_nan},{all_finite}")
    finally:
        torch.distributed.destroy_process_group()


def test_ranks_agree_on_a_nonfinite_loss_seen_by_one_of_them(tmp_path: Path) -> None:
    """Under DDP every rank must raise or skip together, or the others would wait in the gradient all-reduce."""
    context = multiprocessing.get_context("fork")
    ranks = [context.Process(target=_finite_vote, args=(r, str(tmp_path / "store"), str(tmp_path))) for r in (0, 1)]
    for process in ranks:
        process.start()
    for process in ranks:
        process.join(timeout=BOUND_S)
        assert process.exitcode == 0
    assert [(tmp_path / f"rank{r}").read_text() for r in (0, 1)] == ["False,True", "False,True"]


def test_best_model_and_encoder_export_refuse_nonfinite_weights(tmp_path: Path) -> None:
    network = torch.nn.Linear(3, 2)
    best = tmp_path / "model_best.pt"
    saver = BestModelSaver(network, best)
    evaluator = Engine(lambda engine, batch: None)
    evaluator.state.metrics = {"auc": 0.5}
    evaluator.state.key_metric_name = "auc"
    saver(evaluator)
    good = best.read_bytes()
    network.weight.data[0, 0] = float("inf")
    evaluator.state.metrics = {"auc": 0.9}
    with pytest.raises(
        NonFiniteWeightsError,
        match=r"refusing to write .*model_best\.pt: non-finite values in 1 tensor\(s\): weight \(1 of 6 values\)",
    ):
        saver(evaluator)
    assert best.read_bytes() == good and saver.best == 0.5 and not stale_temporary_files(tmp_path)

    encoder = ViTImageEncoder(img_size=32, patch_size=16, hidden_size=16, mlp_dim=32, num_layers=1, num_heads=2)
    next(iter(encoder.parameters())).data.fill_(float("nan"))
    with pytest.raises(NonFiniteWeightsError, match="image_encoder.pt"):
        export_image_encoder(encoder, tmp_path / "export")
    assert not (tmp_path / "export").exists() or not list((tmp_path / "export").iterdir())


def test_checkpoint_rotation_removes_the_oldest_after_writing_the_newest(tmp_path: Path) -> None:
    """n_saved=2: after epoch 3 the epoch-1 file goes, but only once checkpoint_3.pt is complete."""
    network = torch.nn.Linear(2, 2)
    seen: list[list[str]] = []
    engine = Engine(lambda engine, batch: None)
    saver = AtomicCheckpointSaver(tmp_path, {"network": network, "trainer": engine}, save_interval=1, n_saved=2)
    saver.attach(engine)
    engine.add_event_handler(
        Events.EPOCH_COMPLETED, lambda e: seen.append(sorted(p.name for p in tmp_path.glob("*.pt")))
    )
    engine.run([0], max_epochs=3)
    assert seen == [["checkpoint_1.pt"], ["checkpoint_1.pt", "checkpoint_2.pt"], ["checkpoint_2.pt", "checkpoint_3.pt"]]
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == [
        "checkpoint_2.pt",
        "checkpoint_3.pt",
        "checkpoint_final.pt",
    ]
    restored = Engine(lambda engine, batch: None)
    load_checkpoint(tmp_path / "checkpoint_2.pt", {"trainer": restored})
    assert restored.state.epoch == 2


def _torchrun_command(tmp_path: Path, demo: Path, bundle_root: Path, node: int, port: int) -> list[str]:
    layout = ["--nnodes", "2", "--node_rank", str(node), "--nproc_per_node", "1", "--master_addr", "127.0.0.1"]
    overrides = _overrides(demo, bundle_root, epochs=50, batch_size=4, iteration_log=True)
    return [
        "python",
        "-m",
        "torch.distributed.run",
        *layout,
        "--master_port",
        str(port),
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        _layered(tmp_path, [SLOW_ITERATIONS], base=MULTI_GPU),
        *as_cli(overrides),
    ]


BOUND_S = 60
"""Seconds within which the surviving rank must be gone; a hang would last gloo's 30-minute default timeout."""


def test_two_node_torchrun_peer_killed_the_survivor_fails_with_an_error(demo: Path, tmp_path: Path) -> None:
    """Two ``torchrun`` launchers (``--nnodes 2``, one process each), so that the survivor is not simply torn
    down by a shared launcher (which a single ``torchrun --nproc_per_node 2`` does within a second): the
    surviving rank itself must fail with gloo's error, within seconds, instead of waiting in its all-reduce."""
    logs = [tmp_path / "node0.log", tmp_path / "node1.log"]
    agents = [_popen(_torchrun_command(tmp_path, demo, tmp_path / "ddp", node, 29573), logs[node]) for node in (0, 1)]
    try:
        _wait_for(lambda: "Iter: 2/" in logs[0].read_text(), agents[0], logs[0])
        (survivor,), (worker,) = _children(agents[0].pid), _children(agents[1].pid)
        killed_at = time.monotonic()
        os.kill(worker, signal.SIGKILL)
        returncode = agents[0].wait(timeout=BOUND_S)
        elapsed = time.monotonic() - killed_at
        agents[1].wait(timeout=BOUND_S)
    finally:
        for agent in agents:
            _kill_tree(agent)
    assert returncode != 0 and elapsed < BOUND_S and not _alive(survivor)
    console = logs[0].read_text()
    assert "Connection closed by peer" in console and "Engine run is terminating due to exception" in console
    assert "exitcode  : 1 " in console  # the survivor failed by itself (not a signal from its launcher)
