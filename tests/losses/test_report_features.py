"""One choice of report features per similarity source, shared by the SISTA trainer and the flag metric."""

from __future__ import annotations

import pytest
import torch

from sista_monai.losses import REPORT_SIMILARITY_SOURCES, report_features
from sista_monai.networks import SISTAOutput


def _output(frozen: bool = True) -> SISTAOutput:
    generator = torch.Generator().manual_seed(0)
    return SISTAOutput(
        image_emb=torch.randn(3, 4, generator=generator),
        patch_emb=torch.randn(3, 2, 4, generator=generator),
        text_emb=torch.randn(3, 4, generator=generator),
        token_emb=torch.randn(3, 5, 4, generator=generator),
        token_mask=torch.ones(3, 5, dtype=torch.bool),
        patch_grid=(1, 2),
        frozen_text_features=torch.randn(3, 6, generator=generator) if frozen else None,
    )


def test_each_source_picks_what_the_trainer_picked() -> None:
    output, labels = _output(), torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    findings = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, 1.0]])
    # the former SISTATrainer._report_features / FalseNegativeFlags choice, written out; findings: the text's vectors
    expected = {
        "text_frozen": output.frozen_text_features,
        "text_online": output.text_emb,
        "labels": labels,
        "findings": findings,
    }
    assert set(REPORT_SIMILARITY_SOURCES) == set(expected)
    for source in REPORT_SIMILARITY_SOURCES:
        assert report_features(source, output, labels, findings=findings) is expected[source]


def test_missing_features_are_named() -> None:
    with pytest.raises(ValueError, match=r"needs SISTAModel\(keep_frozen_text_copy=True\)"):
        report_features("text_frozen", _output(frozen=False))
    with pytest.raises(ValueError, match="needs a 'labels' entry"):
        report_features("labels", _output())
    with pytest.raises(ValueError, match="needs a 'report_findings' entry"):
        report_features("findings", _output())
    with pytest.raises(ValueError, match="source must be one of"):
        report_features("images", _output())
