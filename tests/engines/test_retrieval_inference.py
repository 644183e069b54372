"""Image–report retrieval: top-k against a brute-force ranking, the files of the retrieve mode (what the model
computes, named by file or datalist id, never the report text), the unreadable inputs, and the evaluation's figures."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedEvaluator
from monai.transforms import Compose, NormalizeIntensityd
from PIL import Image

from sista_monai.data.inference import REPORT_TO_IMAGE_FILE
from sista_monai.data.tokenizer import train_wordpiece_tokenizer
from sista_monai.engines import (
    ReportBank,
    RetrievalInputs,
    SISTAInferencePrepareBatch,
    SISTARetrievalInferer,
    report_bank_items,
)
from sista_monai.handlers import RetrievalReport, RetrievalWriter
from sista_monai.metrics import retrieval_recall, semantic_chance, semantic_precision, text_groups, top_k_matches
from sista_monai.networks import HuggingFaceTextEncoder, SISTAModel, ViTImageEncoder
from sista_monai.transforms import CleanReportd, ExtractReportSectionsd, LoadChestXrayd, TokenizeReportd, load_tokenizer

REPORTS = {
    "a.txt": "FINDINGS: Small right pleural effusion. The heart size is normal.\nIMPRESSION: Right effusion.",
    "b.txt": "FINDINGS: Left lower lobe opacity.\nIMPRESSION: Pneumonia on the left.",
    "sub/c.txt": "FINDINGS: The lungs are clear. No pneumothorax.\nIMPRESSION: Normal chest.",
}
IU_XML = (
    '<?xml version="1.0"?><eCitation><MedlineCitation><Article><Abstract>'
    '<AbstractText Label="FINDINGS">Moderate left pleural effusion.</AbstractText>'
    '<AbstractText Label="IMPRESSION">Left effusion.</AbstractText>'
    "</Abstract></Article></MedlineCitation></eCitation>"
)
TEXTS = [
    "small right pleural effusion",
    "the heart size is normal",
    "left lower lobe opacity pneumonia",
    "the lungs are clear no pneumothorax normal chest",
] * 3


def brute_force_top_k(scores: list[list[float]], k: int) -> list[list[int]]:
    """The reference ranking: every candidate sorted by (score descending, index ascending)."""
    return [sorted(range(len(row)), key=lambda j: (-row[j], j))[:k] for row in scores]


@pytest.mark.parametrize("k", [1, 3, 7, 50])
def test_top_k_matches_equals_a_brute_force_ranking_ties_included(k: int) -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(9, 6, generator=generator)
    reports = torch.randn(12, 6, generator=generator)
    reports[7] = reports[2] * 3.0  # the same direction: a tie in cosine similarity
    reports[10] = reports[2]
    similarity = torch.nn.functional.normalize(images, dim=1) @ torch.nn.functional.normalize(reports, dim=1).T
    similarity = similarity.round(decimals=5)  # exact ties where the directions agree
    scores, indices = top_k_matches(similarity, k)
    assert indices.tolist() == brute_force_top_k(similarity.tolist(), k)
    assert scores.tolist() == [[similarity[q, j].item() for j in row] for q, row in enumerate(indices.tolist())]
    assert indices.shape == (9, min(k, 12))
    tied = [row for row in indices.tolist() if 2 in row and 7 in row]
    assert all(row.index(2) < row.index(7) < row.index(10) for row in tied if 10 in row)


def test_top_k_matches_refuses_a_bad_k_or_shape() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        top_k_matches(torch.zeros(2, 3), 0)
    with pytest.raises(ValueError, match="queries, candidates"):
        top_k_matches(torch.zeros(3), 1)


def test_report_bank_items_from_a_folder_and_from_a_datalist(tmp_path: Path) -> None:
    bank = tmp_path / "bank"
    for name, text in REPORTS.items():
        (bank / name).parent.mkdir(parents=True, exist_ok=True)
        (bank / name).write_text(text)
    (bank / "iu.XML").write_text(IU_XML)
    (bank / "notes.md").write_text("not a report")
    (bank / ".hidden.txt").write_text("hidden")
    items = report_bank_items(bank)
    assert [item["id"] for item in items] == ["a.txt", "b.txt", "iu.XML", "sub/c.txt"]
    assert items[0]["report"] == str(bank / "a.txt")

    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"test": [{"id": "s1", "report": "x"}, {"report": "y"}], "training": []}))
    assert report_bank_items(datalist, "test") == [{"id": "s1", "report": "x"}, {"id": "test_1", "report": "y"}]
    datalist.write_text(json.dumps({"test": [{"id": "s1", "report": "x"}, {"id": "s1", "report": "y"}]}))
    with pytest.raises(ValueError, match="unique"):
        report_bank_items(datalist, "test")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no report"):
        report_bank_items(tmp_path / "empty")
    with pytest.raises(FileNotFoundError):
        report_bank_items(tmp_path / "missing")


def _tiny_model(tmp_path: Path) -> tuple[SISTAModel, object]:
    tokenizer = load_tokenizer(train_wordpiece_tokenizer(TEXTS, tmp_path / "tok", vocab_size=120))
    torch.manual_seed(0)
    config = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32}
    model = SISTAModel(
        ViTImageEncoder(img_size=16, patch_size=8, preset="tiny", num_layers=1),
        HuggingFaceTextEncoder(config=config, tokenizer=tokenizer),
        embed_dim=8,
    ).eval()
    return model, tokenizer


def _report_transforms(tokenizer: object) -> Compose:
    return Compose(
        [
            ExtractReportSectionsd("report", parser="auto", order=["findings", "impression"]),
            CleanReportd("report"),
            TokenizeReportd("report", tokenizer, max_length=24),
        ]
    )


def test_retrieve_mode_writes_what_the_model_ranks_and_no_report_text(tmp_path: Path) -> None:
    model, tokenizer = _tiny_model(tmp_path)
    images, bank_dir, out = tmp_path / "in", tmp_path / "bank", tmp_path / "out"
    (images / "nested").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("one.png", "nested/two.png", "report_to_image.png"):
        Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(images / name)
    (images / "broken.dcm").write_bytes(b"not a dicom file")
    for name, text in REPORTS.items():
        (bank_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (bank_dir / name).write_text(text)
    (bank_dir / "iu.xml").write_text(IU_XML)
    (bank_dir / "blank.txt").write_text("  \n ")

    transforms = _report_transforms(tokenizer)
    inputs = RetrievalInputs(images, out, transforms, report_bank=bank_dir)
    assert not inputs.evaluate
    assert [item["source"] for item in inputs.images] == ["nested/two", "one", "report_to_image.png"]
    assert inputs.bank.ids == ["a.txt", "b.txt", "iu.xml", "sub/c.txt"]
    errors = json.loads((out / "errors.json").read_text())
    assert errors == [
        {"file": "broken.dcm", "reason": errors[0]["reason"]},
        {"report": "blank.txt", "reason": "report is empty after cleaning"},
    ]

    image_transforms = Compose([LoadChestXrayd("image"), NormalizeIntensityd("image", subtrahend=0.5, divisor=0.25)])
    writer = RetrievalWriter(out, inputs.bank, top_k=2)
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(Dataset(inputs.images, image_transforms), batch_size=2),
        network=model,
        prepare_batch=SISTAInferencePrepareBatch(),
        inferer=SISTARetrievalInferer(inputs.bank),
        decollate=False,
        val_handlers=[writer],
    )
    evaluator.run()
    with pytest.raises(SystemExit, match="2 inputs could not be read"):
        inputs.finish()

    with torch.no_grad():
        image_emb = torch.cat(
            [model.encode_image(image_transforms(dict(item))["image"][None])[0] for item in inputs.images]
        )
        texts = [transforms({"report": str(bank_dir / i), "id": i}) for i in inputs.bank.ids]
        report_emb = model.encode_text(
            torch.stack([t["input_ids"] for t in texts]), torch.stack([t["attention_mask"] for t in texts])
        )[0]
    cosine = (
        torch.nn.functional.normalize(image_emb, dim=1) @ torch.nn.functional.normalize(report_emb, dim=1).T
    ).tolist()
    for row, item in enumerate(inputs.images):
        record = json.loads((out / f"{item['source']}.json").read_text())
        best = brute_force_top_k([cosine[row]], 2)[0]
        assert record["image"] == item["source"] and record["top_k"] == 2
        assert [m["report"] for m in record["reports"]] == [inputs.bank.ids[j] for j in best]
        np.testing.assert_allclose([m["score"] for m in record["reports"]], [cosine[row][j] for j in best], atol=1e-5)
    reverse = json.loads((out / REPORT_TO_IMAGE_FILE).read_text())
    assert reverse["top_k"] == 2 and reverse["images"] == 3 and list(reverse["reports"]) == sorted(inputs.bank.ids)
    columns = [list(column) for column in zip(*cosine, strict=True)]
    for j, report in enumerate(inputs.bank.ids):
        best = brute_force_top_k([columns[j]], 2)[0]
        assert [m["image"] for m in reverse["reports"][report]] == [inputs.images[i]["source"] for i in best]
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == ["errors.json", "nested/two.json", "one.json", "report_to_image.json", "report_to_image.png.json"]
    sentences = ["pleural effusion", "lower lobe opacity", "lungs are clear", "left effusion", "pneumonia"]
    for path in out.rglob("*.json"):
        text = path.read_text().lower()
        assert not any(sentence in text for sentence in sentences), path


def test_evaluation_pairs_images_with_their_reports_by_id_and_reuses_the_metrics() -> None:
    """Hand-built embeddings: images 0..5 with their own reports; the image order of the run is shuffled."""
    generator = torch.Generator().manual_seed(1)
    reports = torch.randn(6, 5, generator=generator)
    images = reports + 0.6 * torch.randn(6, 5, generator=generator)
    labels = torch.tensor([[1, 0], [1, 0], [0, 1], [0, 1], [0, 0], [1, 1]], dtype=torch.float32)
    input_ids = torch.tensor([[2, 5, 3], [2, 6, 3], [2, 7, 3], [2, 7, 3], [2, 8, 3], [2, 9, 3]])
    mask = torch.ones_like(input_ids)
    bank = ReportBank([f"s{i}" for i in range(6)], input_ids, mask, labels)
    bank._embeddings = reports

    report = RetrievalReport(Path("unused"), bank, split="test")
    order = [4, 1, 5, 0, 3, 2]
    engine = Engine(lambda engine, batch: batch)
    for start in (0, 3):
        rows = order[start : start + 3]
        engine.state.output = {"pred": {"image_emb": images[rows]}, "label": {"source": [f"s{i}" for i in rows]}}
        report.collect(engine)
    summary = report.summarise(engine, None)

    groups = text_groups(input_ids, mask)
    assert groups[2] == groups[3] and len(set(groups.tolist())) == 5
    for direction in ("image_to_report", "report_to_image"):
        expected = retrieval_recall(images, reports, (1, 5, 10), direction, groups)
        assert summary["retrieval"][direction] == {f"R@{k}": pytest.approx(v) for k, v in expected.items()}
    semantic = summary["retrieval"]["semantic"]
    assert semantic["precision_at_5"] == pytest.approx(semantic_precision(images, reports, labels, 5))
    assert semantic["chance"] == pytest.approx(semantic_chance(labels)) == pytest.approx(10 / 36)
    assert summary["retrieval"]["chance"] == {"R@1": pytest.approx(1 / 6), "R@5": pytest.approx(5 / 6), "R@10": 1.0}
    assert summary["n_pairs"] == 6 and summary["split"] == "test"
    ratio = summary["measured"]["semantic_precision_over_chance"]
    assert ratio == pytest.approx(semantic["precision_at_5"] / semantic["chance"])
    assert summary["targets_met"]["semantic_precision_over_chance"] == (ratio >= 2.0)

    perfect = RetrievalReport(Path("unused"), bank)
    engine.state.output = {"pred": {"image_emb": reports[order]}, "label": {"source": [f"s{i}" for i in order]}}
    perfect.collect(engine)
    figures = perfect.summarise(engine, None)["retrieval"]
    # s2 and s3 share their text: each is tied with the other, so R@1 counts them half
    assert figures["image_to_report"]["R@1"] == pytest.approx((4 + 0.5 + 0.5) / 6)
    assert figures["image_to_report"]["R@5"] == 1.0


def test_evaluation_refuses_images_and_reports_that_do_not_pair() -> None:
    bank = ReportBank(["s0", "s1"], torch.ones(2, 3, dtype=torch.long), torch.ones(2, 3), torch.zeros(2, 1))
    bank._embeddings = torch.eye(2)
    report = RetrievalReport(Path("unused"), bank)
    engine = Engine(lambda engine, batch: batch)
    engine.state.output = {"pred": {"image_emb": torch.eye(2)}, "label": {"source": ["s0", "s9"]}}
    report.collect(engine)
    with pytest.raises(ValueError, match="one to one"):
        report.summarise(engine, None)


def test_evaluation_inputs_read_the_split_of_a_datalist(tmp_path: Path) -> None:
    _, tokenizer = _tiny_model(tmp_path)
    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    items = []
    for index, text in enumerate(REPORTS.values()):
        Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(tmp_path / "images" / f"{index}.png")
        items.append({"id": f"study{index}", "image": f"images/{index}.png", "report": text, "labels": [index % 2]})
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"test": items, "training": items[:1]}))
    inputs = RetrievalInputs(None, tmp_path / "out", _report_transforms(tokenizer), evaluation_datalist=datalist)
    assert inputs.evaluate and inputs.bank.ids == ["study0", "study1", "study2"]
    assert inputs.images == [{"image": str(tmp_path / "images" / f"{i}.png"), "source": f"study{i}"} for i in range(3)]
    assert inputs.bank.labels is not None and inputs.bank.labels[:, 0].tolist() == [0.0, 1.0, 0.0]
    inputs.finish()  # nothing unreadable: no exit
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="evaluation_datalist"):
        RetrievalInputs(None, tmp_path / "out", _report_transforms(tokenizer))


def test_the_bank_is_encoded_once_with_the_network_of_the_run() -> None:
    calls = []

    def encode_text(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        calls.append(len(input_ids))
        return (input_ids.float()[:, :2],)

    network = SimpleNamespace(encode_text=encode_text)
    bank = ReportBank([f"r{i}" for i in range(5)], torch.arange(15).reshape(5, 3), torch.ones(5, 3), batch_size=2)
    with pytest.raises(RuntimeError, match="not encoded"):
        _ = bank.embeddings
    first = bank.encode(network)  # type: ignore[arg-type]
    again = bank.encode(network)  # type: ignore[arg-type]
    assert calls == [2, 2, 1] and torch.equal(first, again)
    assert first.tolist() == [[0, 1], [3, 4], [6, 7], [9, 10], [12, 13]]
