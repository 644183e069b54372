"""The shortcut test: an STA loss that an image-free codebook can solve does not measure grounding.

The codebook has no image input at all: P position vectors shared by every image (the "patches") and one
context-free vector per vocabulary entry (the "words"), trained directly on the loss over the demo's training
reports. The within-pair term falls to almost nothing (METHOD.md §2: 0.537 -> 0.002 in 150 steps); the bundle's
configured STA (``sta_contrast``), whose cross-image term gives every image the same grouped embedding under a
position code, must not.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser
from torch.nn import functional as F

from sista_monai.data.datalist import load_datalist_split
from sista_monai.data.demo import ensure_demo_data
from sista_monai.losses import SparseTokenAlignmentLoss
from sista_monai.transforms import (
    CleanReportd,
    ExtractReportSectionsd,
    FindingMentiond,
    TokenizeReportd,
)

REPO = Path(__file__).resolve().parents[2]
PATCHES, DIM, BATCH, STEPS = 64, 128, 16, 150
SOLVED_FRACTION = 0.05
"""The within-pair term ends below this fraction of its initial value: the codebook solves it."""
FLOOR_FRACTION = 0.5
"""The configured STA must stay above this fraction of its initial value after the same steps."""


@pytest.fixture(scope="module")
def report_batches(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, torch.Tensor]]:
    root = ensure_demo_data(tmp_path_factory.mktemp("shortcut") / "demo", n=100, size=64, seed=0)
    tokenizer = str(root / "tokenizer")
    chain = [
        ExtractReportSectionsd("report", parser="mimic", order=("impression", "findings")),
        CleanReportd("report"),
        TokenizeReportd("report", tokenizer=tokenizer, max_length=112),
        FindingMentiond(tokenizer=tokenizer),
    ]
    items = []
    for item in load_datalist_split(root / "datalist_pretrain.json", "training"):
        for transform in chain:
            item = transform(item)
        items.append(item)
    keys = ("input_ids", "word_mask", "word_group", "finding_word", "finding_side")
    batches = [
        {key: torch.stack([torch.as_tensor(i[key]) for i in items[k : k + BATCH]]) for key in keys}
        for k in range(0, len(items) - BATCH + 1, BATCH)
    ]
    assert len(batches) >= 3 and all(int((b["finding_word"] >= 0).sum()) > 0 for b in batches)
    return batches


def _configured_sta(**overrides: object) -> SparseTokenAlignmentLoss:
    """The pretraining bundle's STA loss, built from its train.json (with ``overrides`` of its keys)."""
    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / "pretrain" / "configs" / "train.json"))
    for key, value in overrides.items():
        parser[key] = value
    return parser.get_parsed_content("loss#sta", instantiate=True)


def _codebook_run(loss_fn: SparseTokenAlignmentLoss, batches: list[dict[str, torch.Tensor]]) -> tuple[float, float]:
    """Train the image-free codebook on ``loss_fn``; the mean loss over ``batches`` before and after."""
    generator = torch.Generator().manual_seed(0)
    positions = torch.nn.Parameter(torch.randn(PATCHES, DIM, generator=generator))
    vocabulary = int(max(int(b["input_ids"].max()) for b in batches)) + 1
    words = torch.nn.Parameter(torch.randn(vocabulary, DIM, generator=generator))
    optimiser = torch.optim.Adam([positions, words], lr=0.05)

    def loss_of(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        count = batch["input_ids"].shape[0]
        patch_emb = F.normalize(positions, dim=1).expand(count, PATCHES, DIM)  # the same "image" for every report
        token_emb = F.normalize(words[batch["input_ids"]], dim=2)  # one vector per word, whatever its context
        return loss_fn(
            patch_emb,
            token_emb,
            batch["word_mask"].bool(),
            token_groups=batch["word_group"],
            content_words=batch["finding_word"],
            content_sides=batch["finding_side"],
        )["loss"]

    def mean_loss() -> float:
        with torch.no_grad():
            return float(torch.stack([loss_of(b) for b in batches]).mean())

    initial = mean_loss()
    for step in range(STEPS):
        optimiser.zero_grad()
        loss_of(batches[step % len(batches)]).backward()
        optimiser.step()
    return initial, mean_loss()


def test_within_pair_term_is_solved_without_the_image(report_batches: list[dict[str, torch.Tensor]]) -> None:
    initial, final = _codebook_run(_configured_sta(sta_contrast="within"), report_batches)
    print(f"within-pair STA under an image-free codebook: {initial:.3f} -> {final:.4f} in {STEPS} steps")
    assert initial > 0.2
    assert final < SOLVED_FRACTION * initial, (initial, final)


def test_configured_sta_is_not_solved_without_the_image(report_batches: list[dict[str, torch.Tensor]]) -> None:
    loss_fn = _configured_sta()
    assert loss_fn.contrast in ("cross", "both")
    initial, final = _codebook_run(loss_fn, report_batches)
    print(f"configured STA ({loss_fn.contrast}) under an image-free codebook: {initial:.3f} -> {final:.4f}")
    assert final > FLOOR_FRACTION * initial, (initial, final)
    # the cross-image term alone does not move at all: every image offers the codebook the same grouped vector
    cross_initial, cross_final = _codebook_run(_configured_sta(sta_contrast="cross"), report_batches)
    assert cross_final == pytest.approx(cross_initial, rel=1e-5)
