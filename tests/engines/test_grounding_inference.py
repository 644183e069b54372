"""Phrase grounding: the phrase's pooled STA weights, the best patch's box in original pixels on known geometries
(the bundle's own Resize/Pad/Crop), the heat map on the original grid, the file names, and the evaluate mode's inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedEvaluator
from PIL import Image

from sista_monai.data.inference import grounding_file_names, phrase_slug
from sista_monai.data.tokenizer import train_wordpiece_tokenizer
from sista_monai.engines import (
    CounterfactualEvaluation,
    GroundingInputs,
    GroundingPrepareBatch,
    SISTAGroundingInferer,
    phrase_tokens,
)
from sista_monai.handlers import GroundingWriter, input_to_original, original_heatmap, patch_box
from sista_monai.losses import alignment_weights
from sista_monai.networks import HuggingFaceTextEncoder, SISTAModel, ViTImageEncoder
from sista_monai.transforms import load_tokenizer

CONFIG = Path(__file__).resolve().parents[2] / "bundles" / "pretrain" / "configs" / "train.json"
TEXTS = ["small left pleural effusion", "right upper lobe opacity", "no pneumothorax", "the heart is normal"] * 3


def bundle_transforms(resize_size: int = 144, image_size: int = 128) -> object:
    """``inference_transforms`` of the pretraining bundle (grounding.json runs it), at the given sizes."""
    config = json.loads(CONFIG.read_text())
    parser = ConfigParser(
        {
            "resize_size": resize_size,
            "image_size": image_size,
            "intensity_mean": 0.5,
            "intensity_std": 0.25,
            "inference_transforms": config["inference_transforms"],
        },
        globals={"sista_monai": "sista_monai"},  # the config's imports: sista_monai.transforms is imported above
    )
    return parser.get_parsed_content("inference_transforms")


def save_png(path: Path, rows: int, columns: int, seed: int = 0) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 255, (rows, columns), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


@pytest.mark.parametrize(
    ("phrase", "slug"),
    [
        ("left pleural effusion", "left-pleural-effusion"),
        ("  Right UPPER-lobe opacity?! ", "right-upper-lobe-opacity"),
        ("épanchement pleural", "epanchement-pleural"),
        ("a/b\\c..d", "a-b-c-d"),
    ],
)
def test_phrase_slug(phrase: str, slug: str) -> None:
    assert phrase_slug(phrase) == slug
    assert grounding_file_names("sub/scan", phrase) == (f"sub/scan_grounding_{slug}.png", "sub/scan_grounding.json")


def test_phrase_slug_is_short_and_refuses_a_phrase_without_letters() -> None:
    assert len(phrase_slug("effusion " * 20)) <= 60 and not phrase_slug("effusion " * 20).endswith("-")
    with pytest.raises(ValueError, match="no letter or digit"):
        phrase_slug("?! ...")


# a patch (column, row) of the 8 x 8 grid of 16-pixel patches of the 128-pixel input,
# and its box by hand: resize the longest side to 144 (scale s = longest / 144), pad the other to 144 (both sides),
# crop 8 pixels from every side; an input pixel edge e maps back to (e + 8 - pad) * s, clipped to the image
WIDE = (200, 300)
KNOWN_BOXES = [
    ((4, 1), [150.0, 0.0, 183.3333, 33.3333]),  # x: (64 + 8) * 300/144 ..; y: (16 + 8 - 24) * 300/144 = 0 ..
    ((0, 3), [16.6667, 66.6667, 50.0, 100.0]),  # x: 8 * 300/144 .. 24 * 300/144; y: (48 - 16) * 300/144 ..
    ((7, 7), [250.0, 200.0, 283.3333, 200.0]),  # y: (112 - 16) * 300/144 = 200 .. : wholly in the padding
]


@pytest.mark.parametrize(("patch", "box"), KNOWN_BOXES)
def test_patch_box_maps_through_the_bundle_transforms_on_a_known_geometry(
    tmp_path: Path, patch: tuple[int, int], box: list[float]
) -> None:
    """200 rows, 300 columns: scale 300/144, y padded by 24 on each side (48 pixels in all)."""
    image = bundle_transforms()({"image": str(save_png(tmp_path / "x.png", *WIDE))})["image"]
    assert tuple(image.shape) == (1, 128, 128)
    to_original = input_to_original(image.affine, image.meta["original_affine"])
    original_size = tuple(int(v) for v in image.meta["spatial_shape"])
    assert original_size == (300, 200)  # (W, H): x is the column
    assert patch_box(patch, (8, 8), (128, 128), to_original, original_size) == pytest.approx(box, abs=1e-3)


def test_patch_box_on_a_portrait_image(tmp_path: Path) -> None:
    """300 rows, 150 columns: scale 300/144, x padded by 36 on each side (72 pixels in all)."""
    image = bundle_transforms()({"image": str(save_png(tmp_path / "x.png", 300, 150))})["image"]
    to_original = input_to_original(image.affine, image.meta["original_affine"])
    scale = 300 / 144
    for column, row in [(2, 5), (0, 0), (7, 2)]:
        x = [(16 * column + edge + 8 - 36) * scale for edge in (0, 16)]
        y = [(16 * row + edge + 8) * scale for edge in (0, 16)]
        expected = [min(max(x[0], 0), 150), min(max(y[0], 0), 300), min(max(x[1], 0), 150), min(max(y[1], 0), 300)]
        assert patch_box((column, row), (8, 8), (128, 128), to_original, (150, 300)) == pytest.approx(
            expected, abs=1e-3
        )


def test_the_heat_map_on_the_original_grid_fills_the_box_of_each_patch(tmp_path: Path) -> None:
    image = bundle_transforms()({"image": str(save_png(tmp_path / "x.png", *WIDE))})["image"]
    weights = torch.arange(64, dtype=torch.float32).reshape(8, 8) + 1.0
    heat = original_heatmap(weights, (128, 128), image.affine, image.meta["original_affine"], (300, 200))
    assert heat.shape == (300, 200)
    to_original = input_to_original(image.affine, image.meta["original_affine"])
    centres = np.arange(300)[:, None] + 0.5, np.arange(200)[None, :] + 0.5
    covered = np.zeros((300, 200), dtype=bool)
    for column in range(8):
        for row in range(8):
            x0, y0, x1, y1 = patch_box((column, row), (8, 8), (128, 128), to_original, (300, 200))
            inside = (
                (centres[0] > x0 + 1e-3)
                & (centres[0] < x1 - 1e-3)
                & (centres[1] > y0 + 1e-3)
                & (centres[1] < y1 - 1e-3)
            )
            assert np.all(heat[inside] == weights[column, row].item())
            covered |= inside
    # the crop drops 8 input columns on each side: x in [8, 136) * 300/144 = [16.67, 283.33) is covered, every row is
    assert covered.sum() == 266 * 200 and np.all(covered[17:283]) and np.all(heat[~covered] == 0.0)


def _tiny_model(tmp_path: Path) -> tuple[SISTAModel, object]:
    tokenizer = load_tokenizer(train_wordpiece_tokenizer(TEXTS, tmp_path / "tok", vocab_size=120))
    torch.manual_seed(0)
    config = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32}
    model = SISTAModel(
        ViTImageEncoder(img_size=32, patch_size=8, preset="tiny", num_layers=1),
        HuggingFaceTextEncoder(config=config, tokenizer=tokenizer),
        embed_dim=8,
    ).eval()
    return model, tokenizer


def test_the_phrase_weights_are_the_mean_of_its_words_sta_weights(tmp_path: Path) -> None:
    model, tokenizer = _tiny_model(tmp_path)
    inferer = SISTAGroundingInferer("Left pleural effusion.", tokenizer, max_length=16, sparsity_threshold=0.5)
    images = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        output = inferer(images, model)
        tokens = phrase_tokens("Left pleural effusion.", tokenizer, 16)
        _, patch_emb, grid = model.encode_image(images)
        text = [tokens[k][None].expand(2, -1) for k in ("input_ids", "attention_mask", "word_mask", "word_start")]
        _, token_emb, words = model.encode_text(*text)
        weights = alignment_weights(patch_emb, token_emb, 0.5)
    positions = torch.nonzero(words[0]).flatten().tolist()
    pieces = tokenizer.convert_ids_to_tokens(tokens["input_ids"].tolist())
    assert [pieces[j] for j in positions] == ["left", "pleural", "effusion"]  # the full stop is no word
    assert output["words"] == 3 and output["patch_grid"] == tuple(grid) == (4, 4)
    expected = (weights[:, positions[0]] + weights[:, positions[1]] + weights[:, positions[2]]) / 3
    torch.testing.assert_close(output["weights"], expected)
    torch.testing.assert_close(output["weights"].sum(dim=1), torch.ones(2))
    with pytest.raises(ValueError, match="no word"):
        phrase_tokens("?!", tokenizer, 16)


def test_the_writer_names_its_files_after_the_image_and_the_phrase(tmp_path: Path) -> None:
    model, tokenizer = _tiny_model(tmp_path)
    folder, out = tmp_path / "in", tmp_path / "out"
    (folder / "nested").mkdir(parents=True)
    save_png(folder / "wide.png", 30, 60)
    save_png(folder / "nested" / "tall.png", 80, 40, seed=1)
    (folder / "broken.dcm").write_bytes(b"not a dicom file")
    phrase = "Left pleural effusion"
    inputs = GroundingInputs(folder, out, phrase)
    assert [item["source"] for item in inputs.items] == ["nested/tall", "wide"]
    transforms = bundle_transforms(resize_size=36, image_size=32)
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(Dataset(inputs.items, transforms), batch_size=1),
        network=model,
        prepare_batch=GroundingPrepareBatch(),
        inferer=SISTAGroundingInferer(phrase, tokenizer, max_length=16, sparsity_threshold=0.5),
        decollate=False,
        val_handlers=[GroundingWriter(out, phrase, max_display_size=70)],
    )
    evaluator.run()
    with pytest.raises(SystemExit, match="1 could not be read"):
        inputs.finish()
    assert json.loads((out / "errors.json").read_text())[0]["file"] == "broken.dcm"
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == [
        "errors.json",
        "nested/tall_grounding.json",
        "nested/tall_grounding_left-pleural-effusion.png",
        "wide_grounding.json",
        "wide_grounding_left-pleural-effusion.png",
    ]
    for stem, (rows, columns), shown in (("wide", (30, 60), (60, 30)), ("nested/tall", (80, 40), (35, 70))):
        record = json.loads((out / f"{stem}_grounding.json").read_text())
        image = transforms({"image": str(folder / f"{stem}.png")})["image"]
        with torch.no_grad():
            expected = SISTAGroundingInferer(phrase, tokenizer, 16, 0.5)(image[None], model)["weights"][0]
        weights = torch.tensor(record["weights"])
        torch.testing.assert_close(weights.flatten(), expected, rtol=1e-5, atol=1e-6)
        best = int(torch.argmax(expected))
        assert record["patch"] == [best // 4, best % 4]
        to_original = input_to_original(image.affine, image.meta["original_affine"])
        assert record["box"] == patch_box(tuple(record["patch"]), (4, 4), (32, 32), to_original, (columns, rows))
        assert record["image_size"] == [columns, rows] and record["phrase"] == phrase and record["words"] == 3
        assert record["heatmap"] == f"{Path(stem).name}_grounding_left-pleural-effusion.png"
        with Image.open(out / f"{stem}_grounding_left-pleural-effusion.png") as png:
            assert png.size == shown and png.mode == "RGB" and not png.info.get("text")


def test_grounding_inputs_need_a_phrase_to_ground_and_none_to_evaluate(tmp_path: Path) -> None:
    save_png(tmp_path / "x.png", 8, 8)
    with pytest.raises(ValueError, match="--phrase"):
        GroundingInputs(tmp_path, tmp_path / "out", None)
    with pytest.raises(ValueError, match="no letter or digit"):
        GroundingInputs(tmp_path, tmp_path / "out", "??")
    evaluation = GroundingInputs(None, tmp_path / "out", None)
    assert evaluation.evaluate and evaluation.items == []
    evaluation.finish()
    assert not (tmp_path / "out").exists()


def test_the_evaluation_reads_nothing_until_asked_and_names_missing_truth(tmp_path: Path) -> None:
    evaluation = CounterfactualEvaluation(
        torch.nn.Linear(1, 1), tmp_path / "missing.json", "test", Dataset, tmp_path / "also_missing.json", Dataset
    )
    with pytest.raises(FileNotFoundError, match="counterfactual twins"):
        evaluation.evaluate()
