"""Two CPU processes (gloo) holding half a batch each must reproduce the single-process losses and gradients.

Convention checked here (see ``sista_monai.losses.distributed``): the per-rank loss is normalised by the local
batch, so the *mean* of the per-rank losses equals the single-process loss; the gradient each rank gets for its
own embeddings is the gradient of the *sum* of the per-rank losses, so DDP's 1/world averaging of parameter
gradients gives the single-process gradient. Replicated parameters (a learnable temperature) get per-rank
gradients whose mean is the single-process gradient.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn import functional as F

from sista_monai.distributed import world_info
from sista_monai.losses import (
    SIA_MODES,
    ReportSimilarity,
    SemanticInstanceAlignmentLoss,
    SISTALoss,
    SparseTokenAlignmentLoss,
    finding_label_agreement,
    gather_no_grad,
    gather_with_grad,
)

WORLD = 2
LOCAL_BATCH = 3
THRESHOLD = 0.8


def global_inputs() -> dict[str, torch.Tensor]:
    """A global batch of 6 pairs in double precision with flagged pairs inside and across the two halves."""
    generator = torch.Generator().manual_seed(0)
    batch = WORLD * LOCAL_BATCH

    def unit(*shape: int) -> torch.Tensor:
        return F.normalize(torch.randn(*shape, generator=generator, dtype=torch.float64), dim=-1)

    reports = unit(batch, 4)
    reports[2] = F.normalize(reports[0] + 0.1 * unit(4), dim=0)  # same rank
    reports[4] = F.normalize(reports[1] + 0.1 * unit(4), dim=0)  # across ranks
    reports[5] = F.normalize(reports[1] + 0.2 * unit(4), dim=0)
    labels = torch.tensor([[1, 0], [0, 0], [1, 0], [0, 1], [0, 0], [0, 0]], dtype=torch.float64)
    mask = torch.ones(batch, 5, dtype=torch.bool)
    mask[0] = False  # an empty report on rank 0 only: the STA mean must count non-empty samples globally
    mask[3, 1:] = False
    mask[4, 3:] = False
    # finding classes of the content words (-1 elsewhere) and their sides (0 unspecified, 1 right, 2 left) for
    # STA's cross-image term; exclusions inside a rank (samples 1 and 2: class 0 right, class 1 unspecified vs
    # left) and across ranks (sample 5: class 0 right as samples 1 and 2), none between right and left (sample 4)
    content_words = torch.tensor(
        [
            [0, -1, -1, -1, -1],
            [0, -1, 1, -1, -1],
            [-1, 0, -1, 1, -1],
            [2, 0, -1, -1, -1],
            [0, 3, -1, 0, -1],
            [1, 2, -1, 0, -1],
        ]
    )
    content_sides = torch.tensor(
        [[0, 0, 0, 0, 0], [1, 0, 0, 0, 0], [0, 1, 0, 2, 0], [0, 1, 0, 0, 0], [2, 0, 0, 1, 0], [1, 0, 0, 1, 0]]
    )
    # every content word on rank 0: rank 1 has none, yet must join the collectives (gathers, count, backward)
    rank1_empty = content_words.clone()
    rank1_empty[LOCAL_BATCH:] = -1
    return {
        "content_words": content_words,
        "content_words_rank1_empty": rank1_empty,
        "content_sides": content_sides,
        "image_emb": unit(batch, 4),
        "text_emb": unit(batch, 4),
        "reports": reports,
        "labels": labels,
        "patch_emb": unit(batch, 6, 4),
        "token_emb": unit(batch, 5, 4),
        "token_mask": mask,
    }


def compute(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Losses and gradients on the given (local or global) part of the batch."""
    results: dict[str, torch.Tensor] = {}
    report_sim = ReportSimilarity("text_frozen")(inputs["reports"])
    agreement = finding_label_agreement(inputs["labels"])
    results["report_sim"] = report_sim
    for mode in SIA_MODES:
        image_emb = inputs["image_emb"].clone().requires_grad_()
        text_emb = inputs["text_emb"].clone().requires_grad_()
        out = SemanticInstanceAlignmentLoss(THRESHOLD, mode=mode, temperature=0.2)(
            image_emb, text_emb, report_sim, label_agreement=agreement
        )
        out["loss"].backward()
        results[f"sia_{mode}_loss"] = out["loss"].detach()
        results[f"sia_{mode}_flags"] = out["false_negative_rate"]
        results[f"sia_{mode}_grad_image"] = image_emb.grad
        results[f"sia_{mode}_grad_text"] = text_emb.grad

    for contrast in ("cross", "both"):
        for variant in ("", "_rank1_empty"):
            content_words = inputs[f"content_words{variant}"]
            patch_emb = inputs["patch_emb"].clone().requires_grad_()
            token_emb = inputs["token_emb"].clone().requires_grad_()
            sta = SparseTokenAlignmentLoss(temperature=0.3, contrast=contrast, image_chunk_size=2)
            out = sta(
                patch_emb,
                token_emb,
                inputs["token_mask"],
                content_words=content_words,
                content_sides=inputs["content_sides"],
            )
            out["loss"].backward()
            key = f"sta_{contrast}{variant}"
            results[f"{key}_loss"] = out["loss"].detach()
            results[f"{key}_content_words"] = out["content_words"]
            results[f"{key}_grad_patch_emb"] = patch_emb.grad
            results[f"{key}_grad_token_emb"] = token_emb.grad

    names = ("image_emb", "text_emb", "patch_emb", "token_emb")
    leaves = {name: inputs[name].clone().requires_grad_() for name in names}
    # a learnable temperature as the model passes it: tau = exp(log_temperature), a leaf on every rank
    log_temperature = torch.tensor(math.log(0.2), dtype=torch.float64, requires_grad=True)
    sia = SemanticInstanceAlignmentLoss(THRESHOLD, temperature=0.07)
    loss = SISTALoss(sia, SparseTokenAlignmentLoss(temperature=0.3), lambda_instance=1.0, lambda_token=0.5)
    out = loss(report_sim=report_sim, token_mask=inputs["token_mask"], temperature=log_temperature.exp(), **leaves)
    out["loss"].backward()
    results["sista_loss"] = out["loss"].detach()
    results["sista_grad_temperature"] = log_temperature.grad
    for name, leaf in leaves.items():
        results[f"sista_grad_{name}"] = leaf.grad
    return results


def worker(rank: int, world: int, store: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        results: dict[str, torch.Tensor] = {"world_info": torch.tensor(world_info())}
        x = (torch.arange(4, dtype=torch.float64).reshape(2, 2) + 10 * rank).requires_grad_()
        gathered = gather_with_grad(x)
        (gathered * (rank + 1) * torch.arange(8, dtype=torch.float64).reshape(4, 2)).sum().backward()
        results["gathered"] = gathered.detach()
        results["gathered_no_grad"] = gather_no_grad(x)
        results["gather_grad"] = x.grad
        local = slice(rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH)
        results.update(compute({name: value[local] for name, value in global_inputs().items()}))
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def per_rank(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, torch.Tensor]]:
    out_dir = tmp_path_factory.mktemp("distributed")
    mp.spawn(worker, args=(WORLD, str(out_dir / "store"), str(out_dir)), nprocs=WORLD, join=True)
    return [torch.load(out_dir / f"rank{rank}.pt") for rank in range(WORLD)]


@pytest.fixture(scope="module")
def single() -> dict[str, torch.Tensor]:
    return compute(global_inputs())


def test_helpers_are_identity_in_one_process() -> None:
    x = torch.randn(3, 2, requires_grad=True)
    assert world_info() == (0, 1)
    assert gather_with_grad(x) is x
    assert torch.equal(gather_no_grad(x), x) and not gather_no_grad(x).requires_grad


def test_gather_helpers(per_rank: list[dict[str, torch.Tensor]]) -> None:
    expected = torch.cat([torch.arange(4, dtype=torch.float64).reshape(2, 2) + 10 * r for r in range(WORLD)])
    for rank, results in enumerate(per_rank):
        assert results["world_info"].tolist() == [rank, WORLD]
        torch.testing.assert_close(results["gathered"], expected)
        torch.testing.assert_close(results["gathered_no_grad"], expected)
        # d/dx_r of sum_r' (r' + 1) <w, gather(x)> = (1 + 2) * w[slot r]
        weights = torch.arange(8, dtype=torch.float64).reshape(4, 2)
        torch.testing.assert_close(results["gather_grad"], 3 * weights[2 * rank : 2 * rank + 2])


def test_report_similarity_columns_are_global(
    per_rank: list[dict[str, torch.Tensor]], single: dict[str, torch.Tensor]
) -> None:
    torch.testing.assert_close(torch.cat([r["report_sim"] for r in per_rank]), single["report_sim"])
    flagged = single["report_sim"] >= THRESHOLD
    assert flagged[1, 4] and flagged[0, 2]  # flagged pairs across and within ranks


@pytest.mark.parametrize("mode", SIA_MODES)
def test_sia_matches_single_process(
    mode: str, per_rank: list[dict[str, torch.Tensor]], single: dict[str, torch.Tensor]
) -> None:
    assert single[f"sia_{mode}_flags"].item() > 0
    mean_loss = torch.stack([r[f"sia_{mode}_loss"] for r in per_rank]).mean()
    torch.testing.assert_close(mean_loss, single[f"sia_{mode}_loss"], rtol=0, atol=1e-5)
    for name in ("image", "text"):
        grad = torch.cat([r[f"sia_{mode}_grad_{name}"] for r in per_rank]) / WORLD
        torch.testing.assert_close(grad, single[f"sia_{mode}_grad_{name}"], rtol=0, atol=1e-5)
    mean_flags = torch.stack([r[f"sia_{mode}_flags"] for r in per_rank]).mean()
    torch.testing.assert_close(mean_flags, single[f"sia_{mode}_flags"])


def test_sista_matches_single_process(per_rank: list[dict[str, torch.Tensor]], single: dict[str, torch.Tensor]) -> None:
    mean_loss = torch.stack([r["sista_loss"] for r in per_rank]).mean()
    torch.testing.assert_close(mean_loss, single["sista_loss"], rtol=0, atol=1e-5)
    for name in ("image_emb", "text_emb", "patch_emb", "token_emb"):
        grad = torch.cat([r[f"sista_grad_{name}"] for r in per_rank]) / WORLD
        torch.testing.assert_close(grad, single[f"sista_grad_{name}"], rtol=0, atol=1e-5)
    mean_temperature_grad = torch.stack([r["sista_grad_temperature"] for r in per_rank]).mean()
    torch.testing.assert_close(mean_temperature_grad, single["sista_grad_temperature"], rtol=0, atol=1e-5)


@pytest.mark.parametrize("contrast", ["cross", "both"])
@pytest.mark.parametrize("variant", ["", "_rank1_empty"])
def test_sta_cross_image_term_matches_single_process(
    contrast: str, variant: str, per_rank: list[dict[str, torch.Tensor]], single: dict[str, torch.Tensor]
) -> None:
    key = f"sta_{contrast}{variant}"
    # 0 + 2 + 2 content words on rank 0 (sample 0 is padding only), 1 + 2 + 3 on rank 1 unless emptied
    expected_count = 4.0 if variant else 10.0
    assert single[f"{key}_content_words"].item() == expected_count
    for results in per_rank:  # every rank reports the global batch's count
        assert results[f"{key}_content_words"].item() == expected_count
    mean_loss = torch.stack([r[f"{key}_loss"] for r in per_rank]).mean()
    assert single[f"{key}_loss"].item() > 0.1
    torch.testing.assert_close(mean_loss, single[f"{key}_loss"], rtol=0, atol=1e-5)
    for name in ("patch_emb", "token_emb"):
        grad = torch.cat([r[f"{key}_grad_{name}"] for r in per_rank]) / WORLD
        torch.testing.assert_close(grad, single[f"{key}_grad_{name}"], rtol=0, atol=1e-5)
    if variant:  # rank 1 has no content word: its cross-image term is 0, yet its images are rank 0's negatives
        assert per_rank[1][f"{key}_grad_patch_emb"].abs().max().item() > 0
