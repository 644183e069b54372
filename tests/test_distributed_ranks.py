"""Who this process is, before a process group exists: torchrun's variables for writers and configs, (0, 1) for
collectives (which cannot gather from ranks without a group)."""

from __future__ import annotations

import pytest

from sista_monai.distributed import is_distributed, is_main_process, local_rank, rank, world_info, world_size


def test_before_the_process_group_writers_read_torchrun_and_collectives_see_one_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert not is_distributed()
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert (rank(), world_size(), local_rank()) == (3, 4, 1) and not is_main_process()
    assert world_info() == (0, 1)


def test_without_torchrun_this_is_the_only_process(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert (rank(), world_size(), local_rank(), world_info()) == (0, 1, 0, (0, 1)) and is_main_process()
