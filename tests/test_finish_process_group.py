"""sista_monai.distributed.finish_process_group: the last step of every multi-GPU bundle run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sista_monai import distributed


def test_no_op_without_a_process_group() -> None:
    assert not dist.is_initialized()
    before = len(distributed._FINAL_WORKS)
    assert distributed.finish_process_group() is False
    assert len(distributed._FINAL_WORKS) == before


def _rank(rank: int, store: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    total = torch.tensor([float(rank + 1)])
    dist.all_reduce(total)
    ran = distributed.finish_process_group()
    works = distributed._FINAL_WORKS
    record = {
        "ran": ran,
        "total": total.item(),
        "initialized": dist.is_initialized(),
        "works": len(works),
        "completed": bool(works and works[-1].is_completed()),
    }
    (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps(record))


def test_two_gloo_ranks_keep_the_final_barrier_work(tmp_path: Path) -> None:
    mp.spawn(_rank, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)  # raises if a rank fails
    for rank in range(2):
        record = json.loads((tmp_path / f"rank{rank}.json").read_text())
        # the barrier ran after the all-reduce (1 + 2); gloo's group is left to interpreter exit, and the
        # completed barrier work stays referenced from Python so gloo's worker thread never frees it last
        assert record == {"ran": True, "total": 3.0, "initialized": True, "works": 1, "completed": True}


@pytest.mark.slow
def test_gloo_exit_benchmark_runs_both_endings() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sista_monai.bench", "gloo_exit", "--trials", "1", "--json"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    counts = json.loads(result.stdout)["counts"]
    assert all(sum(c.values()) == 1 for c in counts.values())
    assert counts["finish"] == {"ok": 1, "abort": 0, "other": 0}
    assert counts["barrier"]["other"] == 0  # the baseline may abort at exit (the race), never fail otherwise
