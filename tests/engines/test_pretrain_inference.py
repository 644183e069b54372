"""Pretraining inference as a MONAI evaluator with file-writing handlers, reading the configured report parser and
sections: the files hold what the model computes, written out by hand here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedEvaluator
from monai.transforms import Compose, NormalizeIntensityd
from PIL import Image

from sista_monai.data.tokenizer import train_wordpiece_tokenizer
from sista_monai.engines import SISTAAlignmentInferer, SISTAInferencePrepareBatch, pretrain_inference_items
from sista_monai.handlers import ImageEmbeddingWriter, WordAlignmentWriter
from sista_monai.losses import alignment_weights
from sista_monai.networks import HuggingFaceTextEncoder, SISTAModel, ViTImageEncoder
from sista_monai.transforms import (
    CleanReport,
    CleanReportd,
    ExtractReportSections,
    ExtractReportSectionsd,
    LoadChestXrayd,
    ReportTokenizer,
    TokenizeReportd,
    load_tokenizer,
)

REPORT = "FINDINGS: Small right pleural effusion. The heart size is normal.\nIMPRESSION: Right effusion."
TEXTS = [
    "small right pleural effusion",
    "the heart size is normal",
    "right effusion",
    "left lower lobe opacity",
] * 3


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    inputs = tmp_path / "in"
    inputs.mkdir()
    pixels = np.random.default_rng(0).integers(0, 255, (16, 16), dtype=np.uint8)
    Image.fromarray(pixels).save(inputs / "study.png")
    Image.fromarray(pixels[::-1].copy()).save(inputs / "alone.png")
    (inputs / "study.txt").write_text(REPORT)
    return inputs


def test_inference_evaluator_writes_what_the_model_computes(folder: Path, tmp_path: Path) -> None:
    tokenizer = load_tokenizer(train_wordpiece_tokenizer(TEXTS, tmp_path / "tok", vocab_size=120))
    torch.manual_seed(0)
    config = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32}
    model = SISTAModel(
        ViTImageEncoder(img_size=16, patch_size=8, preset="tiny", num_layers=1),
        HuggingFaceTextEncoder(config=config, tokenizer=tokenizer),
        embed_dim=8,
    ).eval()
    items = pretrain_inference_items(folder)
    assert items == [
        {"image": str(folder / "alone.png"), "source": "alone", "image_file": "alone.png"},
        {
            "image": str(folder / "study.png"),
            "source": "study",
            "image_file": "study.png",
            "report": str(folder / "study.txt"),
        },
    ]
    image_transforms = Compose([LoadChestXrayd("image"), NormalizeIntensityd("image", subtrahend=0.5, divisor=0.25)])
    sections = ["findings"]  # configured: FINDINGS only, so the IMPRESSION's words are not aligned
    transforms = Compose(
        [
            image_transforms,
            ExtractReportSectionsd("report", parser="mimic", order=sections, allow_missing_keys=True),
            CleanReportd("report", allow_missing_keys=True),
            TokenizeReportd("report", tokenizer, max_length=24, allow_missing_keys=True),
        ]
    )
    out = tmp_path / "out"
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(Dataset(items, transforms), batch_size=1),
        network=model,
        prepare_batch=SISTAInferencePrepareBatch(),
        inferer=SISTAAlignmentInferer(sparsity_threshold=0.5),
        decollate=False,
        val_handlers=[ImageEmbeddingWriter(out), WordAlignmentWriter(out, tokenizer, 0.5, 0.25)],
    )
    evaluator.run()

    with torch.no_grad():
        for name in ("alone", "study"):
            image = image_transforms({"image": str(folder / f"{name}.png")})["image"][None]
            image_emb, patch_emb, grid = model.encode_image(image)
            record = json.loads((out / f"{name}.json").read_text())
            assert record["image"] == f"{name}.png" and record["embed_dim"] == 8 and record["space"] == "joint"
            np.testing.assert_allclose(record["embedding"], image_emb[0].tolist(), rtol=1e-6, atol=1e-7)
        text = CleanReport()(ExtractReportSections("mimic", order=sections)(REPORT))
        assert "impression" not in text.lower() and text.lower().startswith("small right pleural effusion")
        tokens = ReportTokenizer(tokenizer, max_length=24)(text)
        _, token_emb, word_mask = model.encode_text(
            tokens["input_ids"][None],
            tokens["attention_mask"][None],
            tokens["word_mask"][None],
            tokens["word_start"][None],
        )
        weights = alignment_weights(patch_emb, token_emb, 0.5)[0]
    alignment = json.loads((out / "study_alignment.json").read_text())
    positions = torch.nonzero(word_mask[0]).flatten().tolist()
    assert alignment["image"] == "study.png" and alignment["patch_grid"] == list(grid)
    assert [t["index"] for t in alignment["tokens"]] == positions
    words = tokenizer.convert_ids_to_tokens(tokens["input_ids"].tolist())
    assert [t["token"] for t in alignment["tokens"]] == [
        w if w == "right" else None for w in (words[j] for j in positions)
    ]
    for token in alignment["tokens"]:
        np.testing.assert_allclose(
            token["weights"], weights[token["index"]].reshape(grid).tolist(), rtol=1e-6, atol=1e-7
        )
    assert sorted(p.name for p in out.glob("study_word*.png")) == [f"study_word{j:03d}.png" for j in positions]
    assert not list(out.glob("alone_*"))  # no report, no alignment


def test_items_come_from_the_run_inputs_named_as_every_bundle_names_them(folder: Path, tmp_path: Path) -> None:
    """Through InferenceInputs: subfolders kept in the output names, an unreadable file left out and listed."""
    from sista_monai.data.inference import ERRORS_FILE, InferenceInputs

    nested = folder / "series"
    nested.mkdir()
    (folder / "study.png").rename(nested / "study.png")
    (folder / "study.txt").rename(nested / "study.txt")
    (folder / "broken.dcm").write_bytes(b"not a DICOM file")
    inputs = InferenceInputs(folder, tmp_path / "out")
    items = pretrain_inference_items(inputs)
    assert [(i["source"], i["image_file"], "report" in i) for i in items] == [
        ("alone", "alone.png", False),
        ("series/study", "study.png", True),
    ]
    assert [e["file"] for e in json.loads((tmp_path / "out" / ERRORS_FILE).read_text())] == ["broken.dcm"]
    with pytest.raises(SystemExit, match="1 could not be read"):
        inputs.finish()
