"""SIA's ``findings`` report-similarity source: finding vectors read from the report text by the rule labeler.

The source's features are the batch's ``report_findings`` (:class:`~sista_monai.transforms.ReportFindingsd`); they
are compared as the datalist's ``labels`` are (a "no finding" column, then the cosine; never centred), travel from
the datalist item to :func:`~sista_monai.losses.report_features` in the trainer and in the flag metric, and the
pretraining config runs the labeler on the cleaned report text only when the source is ``findings``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import DataLoader
from tiny_models import TINY_BERT

from sista_monai.engines import BATCH_KEYS, TARGET_KEYS, SISTAPrepareBatch, SISTATrainer
from sista_monai.losses import (
    REPORT_FINDINGS_KEY,
    REPORT_SIMILARITY_SOURCES,
    ReportSimilarity,
    SemanticInstanceAlignmentLoss,
    SISTALoss,
    fit_report_center,
    report_center,
    report_features,
)
from sista_monai.metrics import FalseNegativeFlags
from sista_monai.networks import HuggingFaceTextEncoder, SISTAModel, SISTAOutput, ViTImageEncoder

TRAIN_CONFIG = Path(__file__).resolve().parents[2] / "bundles" / "pretrain" / "configs" / "train.json"
# five reports over three findings; 0.5 = an uncertain mention (ReportFindingsd(uncertain=0.5))
FINDINGS = torch.tensor(
    [[0.0, 0.0, 0.0], [1.0, 0.0, 0.5], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float32
)


def _output() -> SISTAOutput:
    generator = torch.Generator().manual_seed(0)
    return SISTAOutput(
        image_emb=torch.randn(5, 4, generator=generator),
        patch_emb=torch.randn(5, 2, 4, generator=generator),
        text_emb=torch.randn(5, 4, generator=generator),
        token_emb=torch.randn(5, 3, 4, generator=generator),
        token_mask=torch.ones(5, 3, dtype=torch.bool),
        patch_grid=(1, 2),
        frozen_text_features=None,
    )


def test_findings_is_a_source_whose_features_are_the_batch_findings() -> None:
    assert "findings" in REPORT_SIMILARITY_SOURCES and REPORT_FINDINGS_KEY == "report_findings"
    labels = torch.ones(5, 2)
    assert report_features("findings", _output(), labels, findings=FINDINGS) is FINDINGS
    assert report_features("labels", _output(), labels, findings=FINDINGS) is labels  # each source its own vectors


def test_missing_findings_name_the_key_and_the_transform() -> None:
    with pytest.raises(ValueError, match=r"'report_findings'.*ReportFindingsd"):
        report_features("findings", _output(), torch.ones(5, 2))  # labels alone are not the text's findings
    with pytest.raises(ValueError, match="ReportFindingsd"):
        report_features("findings", _output(), findings=None)


def test_findings_similarity_equals_the_labels_similarity() -> None:
    findings = ReportSimilarity("findings", gather_distributed=False)(FINDINGS)
    labels = ReportSimilarity("labels", gather_distributed=False)(FINDINGS)
    torch.testing.assert_close(findings, labels)
    # by hand: the two normal reports (0, 2) agree fully and share nothing with the others; 1 and 3 share finding 0
    assert findings[0, 2].item() == pytest.approx(1.0) and findings[0, 1].item() == 0.0
    assert findings[1, 3].item() == pytest.approx(1 / (1.25**0.5))  # (1, 0, .5, 0)·(1, 0, 0, 0) / |(1, 0, .5, 0)|
    assert findings[3, 4].item() == 0.0 and torch.diagonal(findings).tolist() == pytest.approx([1.0] * 5)


def test_findings_are_never_centred() -> None:
    with pytest.raises(ValueError, match="not to 'findings'"):
        ReportSimilarity("findings", center=torch.zeros(3))
    with pytest.raises(ValueError, match="text sources"):
        fit_report_center(torch.nn.Linear(1, 1), [], "findings")
    # the bundle's centre: none for findings, and the loader is never read (no network, no data needed)
    assert report_center(None, None, "findings") is None  # type: ignore[arg-type]


def test_findings_travel_through_batch_preparation() -> None:
    assert REPORT_FINDINGS_KEY in BATCH_KEYS and REPORT_FINDINGS_KEY in TARGET_KEYS
    batch = {
        "image": torch.zeros(5, 1, 16, 16),
        "input_ids": torch.ones(5, 4, dtype=torch.long),
        "attention_mask": torch.ones(5, 4, dtype=torch.long),
        "labels": torch.zeros(5, 2),
        REPORT_FINDINGS_KEY: FINDINGS,
    }
    prepared = SISTAPrepareBatch()(batch, torch.device("cpu"))
    torch.testing.assert_close(prepared[REPORT_FINDINGS_KEY], FINDINGS)
    _, targets, _, _ = SISTAPrepareBatch(as_supervised=True)(batch, torch.device("cpu"))
    torch.testing.assert_close(targets[REPORT_FINDINGS_KEY], FINDINGS)


def test_flag_metric_reads_the_findings_from_the_targets() -> None:
    # truth: label sets {}, {0}, {}, {0}, {1}; the findings flag (0, 2), (2, 0) (similarity 1) and, at θ = 0.85,
    # (1, 3), (3, 1) (similarity 0.894): all four agree by truth, so precision 1 over 4 flags of 20 pairs
    labels = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    metric = FalseNegativeFlags(0.85, "findings", "precision")
    rate = FalseNegativeFlags(0.85, "findings", "rate")
    output = {"pred": _output(), "label": {"labels": labels, REPORT_FINDINGS_KEY: FINDINGS}}
    for m in (metric, rate):
        m.reset()
        m.update(m._output_transform(output))
    assert metric.compute() == pytest.approx(1.0) and rate.compute() == pytest.approx(4 / 20)
    missing = FalseNegativeFlags(0.85, "findings", "precision")
    missing.reset()
    with pytest.raises(ValueError, match="report_findings"):
        missing.update(missing._output_transform({"pred": _output(), "label": {"labels": labels}}))


class _RecordingSimilarity(ReportSimilarity):
    """The trainer's report similarity, keeping the features it was given."""

    def __init__(self) -> None:
        super().__init__("findings")
        self.seen: list[torch.Tensor] = []

    def forward(self, report_features: torch.Tensor) -> torch.Tensor:
        self.seen.append(report_features.detach().clone())
        return super().forward(report_features)


def _items(with_findings: bool = True) -> list[dict[str, torch.Tensor]]:
    items = []
    for index in range(4):
        generator = torch.Generator().manual_seed(index)
        ids = torch.randint(5, 40, (12,), generator=generator)
        ids[0], ids[9] = 2, 3
        item = {
            "image": torch.randn(1, 16, 16, generator=generator),
            "input_ids": ids,
            "attention_mask": torch.ones(12, dtype=torch.long),
        }
        if with_findings:
            item[REPORT_FINDINGS_KEY] = FINDINGS[index]
        items.append(item)
    return items


def _trainer(items: list[dict[str, torch.Tensor]], similarity: ReportSimilarity) -> SISTATrainer:
    torch.manual_seed(0)
    network = SISTAModel(
        ViTImageEncoder(img_size=16, patch_size=8, preset="tiny", num_layers=1),
        HuggingFaceTextEncoder(config=TINY_BERT),
        embed_dim=8,
    )
    return SISTATrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=DataLoader(items, batch_size=4, shuffle=False),
        network=network,
        optimizer=torch.optim.SGD(network.parameters(), lr=0.01),
        loss_function=SISTALoss(sia=SemanticInstanceAlignmentLoss(threshold=0.9)),
        report_similarity=similarity,
    )


def test_trainer_hands_the_batch_findings_to_the_report_similarity() -> None:
    similarity = _RecordingSimilarity()
    trainer = _trainer(_items(), similarity)
    trainer.run()
    assert len(similarity.seen) == 1
    torch.testing.assert_close(similarity.seen[0], FINDINGS[:4])
    # reports 0 and 2 (both normal) are one another's false negative: the SIA loss saw the flags
    assert trainer.state.output[0]["false_negative_rate"] == pytest.approx(2 / 12)


def test_trainer_without_findings_says_what_is_missing() -> None:
    trainer = _trainer(_items(with_findings=False), ReportSimilarity("findings"))
    with pytest.raises(ValueError, match=r"'report_findings'.*ReportFindingsd"):
        trainer.run()


# the pretraining bundle's preprocessing


def _config(source: str) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(TRAIN_CONFIG)
    parser["similarity_source"] = source
    return parser


def test_config_runs_the_labeler_on_the_cleaned_sections_only_for_the_findings_source() -> None:
    raw = json.loads(TRAIN_CONFIG.read_text())
    # text_preprocessing = section extraction and cleaning, then the labeler (findings source), then tokenising
    assert raw["text_preprocessing"].startswith("$@report_preprocessing + ")
    assert raw["text_preprocessing"].endswith(" + @token_preprocessing")
    assert "@report_findings" in raw["text_preprocessing"]
    steps = [t["_target_"].rsplit(".", 1)[-1] for t in raw["report_preprocessing"]]
    assert steps == ["ExtractReportSectionsd", "CleanReportd"]
    assert raw["report_findings"]["keys"] == "report" and raw["report_findings"]["output_key"] == REPORT_FINDINGS_KEY
    assert raw["token_preprocessing"][0]["_target_"].endswith("TokenizeReportd")
    for source in ("text_frozen", "text_online", "labels"):
        assert _config(source).get_parsed_content("report_findings") is None  # the other sources: chain unchanged
    # no frozen text copy is kept for the findings source (its features come from the text, not an encoder)
    assert _config("findings").get_parsed_content("network_def#keep_frozen_text_copy") is False


def test_config_findings_reach_the_batch() -> None:
    pytest.importorskip("sista_monai.transforms.findings")
    from monai.transforms import Compose

    from sista_monai.transforms.findings import FINDINGS as NAMES
    from sista_monai.transforms.findings import ReportFindingsd

    parser = _config("findings")
    labeler = parser.get_parsed_content("report_findings")
    assert isinstance(labeler, ReportFindingsd)
    chain = Compose(
        [*parser.get_parsed_content("report_preprocessing"), labeler, *parser.get_parsed_content("select_items")]
    )
    report = "FINDINGS: There is a small left pleural effusion.\n\nIMPRESSION: No pneumothorax.  Small effusion."
    item = chain({"report": report, "labels": [0, 1], "id": "s1"})
    assert set(item) <= set(BATCH_KEYS) and REPORT_FINDINGS_KEY in item  # kept by SelectItemsd
    vector = item[REPORT_FINDINGS_KEY]
    assert vector.dtype == torch.float32 and vector.shape == (len(NAMES),)
    # the labeler read the cleaned sections text: the same vector as labelling that text directly
    cleaned = Compose(parser.get_parsed_content("report_preprocessing"))({"report": report})["report"]
    torch.testing.assert_close(vector, ReportFindingsd(keys="report")({"report": cleaned})[REPORT_FINDINGS_KEY])
    assert vector[NAMES.index("pleural_effusion")] == 1.0 and vector[NAMES.index("pneumothorax")] == 0.0
