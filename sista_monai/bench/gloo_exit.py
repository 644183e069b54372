"""``python -m sista_monai.bench gloo_exit``: how often a two-process gloo run aborts at interpreter exit.

Each trial launches ``torchrun --standalone --nproc_per_node 2`` on a small DDP job (a few optimiser steps, an
all-reduce of a Python-owned tensor) that ends either with a plain ``dist.barrier()`` (the baseline) or with
:func:`sista_monai.distributed.finish_process_group` (what every ``multi_gpu_train.json`` ends with). The two
endings alternate within the run, so both see the same machine load. A trial is an *exit abort* when a rank
dies with ``terminate called without an active exception`` (the race described in
:mod:`sista_monai.distributed`); any other failure is counted and reported apart.

Not a timed benchmark: the figure is the abort count per ending over the same number of trials. The race is
timing-dependent, so an ending with zero aborts is bounded, not proven: with ``n`` clean trials and the
baseline's rate ``p``, the chance of seeing none by luck is ``(1 - p) ** n`` (printed).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Any

__all__ = ["main", "worker"]

ENDINGS = ("barrier", "finish")
ABORT = "terminate called without an active exception"


def worker(ending: str) -> None:
    """The job each rank runs under ``torchrun``."""
    import datetime

    import torch
    import torch.distributed as dist

    from sista_monai.distributed import finish_process_group

    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=120))
    torch.manual_seed(dist.get_rank())
    model = torch.nn.parallel.DistributedDataParallel(
        torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 8))
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(20):
        loss = model(torch.randn(16, 64)).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    total = torch.ones(1)
    dist.all_reduce(total)
    if ending == "barrier":
        dist.barrier()
    else:
        finish_process_group()


def _trial(ending: str) -> tuple[str, str]:
    """Run one two-process job; returns its outcome (``ok``, ``abort`` or ``other``) and the output's tail."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "sista_monai.bench.gloo_exit",
        "--worker",
        ending,
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)
    output = result.stdout + result.stderr
    if result.returncode == 0:
        return "ok", ""
    return ("abort" if ABORT in output else "other"), output[-2000:]


def main(argv: list[str] | None = None) -> int:
    """Alternate the two endings for ``--trials`` rounds; print the abort counts."""
    parser = argparse.ArgumentParser(prog="python -m sista_monai.bench gloo_exit", description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=40, help="trials per ending")
    parser.add_argument("--worker", choices=ENDINGS, help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker)
        return 0
    counts: dict[str, dict[str, int]] = {e: {"ok": 0, "abort": 0, "other": 0} for e in ENDINGS}
    others: list[str] = []
    for trial in range(args.trials):
        for ending in ENDINGS:
            outcome, tail = _trial(ending)
            counts[ending][outcome] += 1
            if outcome == "other":
                others.append(f"{ending}, trial {trial}:\n{tail}")
        if not args.json:
            sys.stdout.write(
                f"\rtrial {trial + 1}/{args.trials}: " + ", ".join(f"{e} {counts[e]['abort']} aborts" for e in ENDINGS)
            )
            sys.stdout.flush()
    baseline_rate = counts["barrier"]["abort"] / args.trials
    clean = counts["finish"]["ok"]
    result: dict[str, Any] = {
        "trials_per_ending": args.trials,
        "counts": counts,
        "baseline_abort_rate": baseline_rate,
        "chance_of_no_abort_by_luck": (1 - baseline_rate) ** clean if counts["finish"]["abort"] == 0 else None,
    }
    if args.json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
    else:
        sys.stdout.write("\n\n| ending | trials | exit aborts | other failures |\n|---|---|---|---|\n")
        for ending in ENDINGS:
            label = "dist.barrier() (baseline)" if ending == "barrier" else "finish_process_group()"
            sys.stdout.write(f"| {label} | {args.trials} | {counts[ending]['abort']} | {counts[ending]['other']} |\n")
        if result["chance_of_no_abort_by_luck"] is not None:
            sys.stdout.write(
                f"\nfinish_process_group() never aborted; at the baseline's rate ({baseline_rate:.3f}) "
                f"{clean} clean trials happen by luck with probability {result['chance_of_no_abort_by_luck']:.3g}\n"
            )
    for other in others:
        sys.stderr.write(other + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
