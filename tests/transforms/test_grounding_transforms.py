"""Tests of the grounding ground-truth transforms: lesion masks, zone words and lesion words (whole words)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from monai.data import MetaTensor

from sista_monai.data.demo import LABEL_NAMES
from sista_monai.transforms.grounding import (
    LESION_CLASSES,
    FindingMentiond,
    LesionMaskd,
    LesionWordd,
    SentenceIndexd,
    ZoneWordMaskd,
    first_piece_words,
    sentence_index,
)
from sista_monai.transforms.report import TokenizeReportd
from sista_monai.transforms.tokenizer import ReportTokenizer

LESION_FINDING_CLASS = {
    "Lung Opacity": "opacity",
    "Consolidation": "opacity",
    "Pneumothorax": "pneumothorax",
    "Pleural Effusion": "effusion",
}
REPORT = "Small right pneumothorax. Effusions with retrocardiac opacity at the left base."
WORDS = [
    "small",
    "right",
    "pneumothorax",
    ".",
    "effusions",
    "with",
    "retrocardiac",
    "opacity",
    "at",
    "the",
    "left",
    "base",
    ".",
]


@pytest.fixture(scope="module")
def tokenizer_folder(split_word_tokenizer: Path) -> Path:
    return split_word_tokenizer


@pytest.fixture(scope="module")
def item(tokenizer_folder: Path) -> dict:
    tokenizer = ReportTokenizer(str(tokenizer_folder), max_length=48)
    return TokenizeReportd("report", tokenizer=tokenizer)({"report": REPORT})


@pytest.fixture(scope="module")
def first_pieces(tokenizer_folder: Path) -> dict[str, int]:
    """Position of the first piece of each word of REPORT ([CLS] at 0), and the piece counts it relies on."""
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(tokenizer_folder), local_files_only=True)
    for word in ("right", "opacity", "left"):
        assert hf.tokenize(word) == [word]
    assert hf.tokenize("effusions") == ["effusion", "##s"]
    for word in ("pneumothorax", "retrocardiac", "base"):
        assert len(hf.tokenize(word)) > 1, word
    positions: dict[str, int] = {}
    position = 1
    for word in WORDS:
        positions.setdefault(word, position)
        position += len(hf.tokenize(word))
    return positions


def test_first_piece_words_joins_pieces(item: dict, tokenizer_folder: Path, first_pieces: dict[str, int]) -> None:
    from transformers import AutoTokenizer

    vocab = AutoTokenizer.from_pretrained(str(tokenizer_folder), local_files_only=True).get_vocab()
    tokens = [""] * (max(vocab.values()) + 1)
    for token, index in vocab.items():
        tokens[index] = token
    words = first_piece_words(item["input_ids"], item["word_start"], tokens)
    expected = {first_pieces[w]: w for w in WORDS if w != "."}
    assert words == expected
    single = first_piece_words(item["input_ids"], None, tokens)
    assert single[first_pieces["pneumothorax"]] == "p"
    assert single[first_pieces["pneumothorax"] + 1].startswith("##")
    assert single[0] == "[cls]" and single[first_pieces["right"]] == "right"


def test_zone_word_mask_marks_whole_words_at_first_piece(
    item: dict, tokenizer_folder: Path, first_pieces: dict[str, int]
) -> None:
    out = ZoneWordMaskd(tokenizer=str(tokenizer_folder))(item)
    expected = torch.zeros(48, dtype=torch.bool)
    for word in ("right", "retrocardiac", "left", "base"):
        expected[first_pieces[word]] = True
    assert out["pointing_mask"].dtype == torch.bool
    assert torch.equal(out["pointing_mask"], expected)


def test_zone_word_mask_falls_back_to_single_tokens(
    item: dict, tokenizer_folder: Path, first_pieces: dict[str, int]
) -> None:
    without_starts = {k: v for k, v in item.items() if k != "word_start"}
    out = ZoneWordMaskd(tokenizer=str(tokenizer_folder), output_key="zones")(without_starts)
    expected = torch.zeros(48, dtype=torch.bool)
    expected[first_pieces["right"]] = expected[first_pieces["left"]] = True  # split zone words are not seen
    assert torch.equal(out["zones"], expected)

    # word_mask restricts the marks: drop "left" from it
    masked = dict(item)
    masked["word_mask"] = item["word_mask"].clone()
    masked["word_mask"][first_pieces["left"]] = False
    out = ZoneWordMaskd(tokenizer=str(tokenizer_folder))(masked)
    assert not out["pointing_mask"][first_pieces["left"]]
    assert int(out["pointing_mask"].sum()) == 3

    with pytest.raises(ValueError, match="needs the tokenizer"):
        ZoneWordMaskd()


def test_lesion_word_class_at_first_piece_of_whole_words(
    item: dict, tokenizer_folder: Path, first_pieces: dict[str, int]
) -> None:
    out = LesionWordd(tokenizer=str(tokenizer_folder))(item)
    expected = torch.full((48,), -1, dtype=torch.long)
    expected[first_pieces["pneumothorax"]] = LESION_CLASSES.index("pneumothorax")  # a multi-piece word
    expected[first_pieces["opacity"]] = LESION_CLASSES.index("opacity")
    assert out["lesion_word"].dtype == torch.long
    assert torch.equal(out["lesion_word"], expected)

    # "effusions" starts with the piece "effusion" but is another word: only whole words count
    only_singular = {"opacity": ("opacity",), "pneumothorax": ("pneumothorax",), "effusion": ("effusion",)}
    out = LesionWordd(tokenizer=str(tokenizer_folder), words=only_singular)(item)
    assert out["lesion_word"][first_pieces["effusions"]].item() == -1
    assert torch.equal(out["lesion_word"], expected)
    with_plural = {"opacity": ("opacity",), "pneumothorax": ("pneumothorax",), "effusion": ("effusions",)}
    out = LesionWordd(tokenizer=str(tokenizer_folder), words=with_plural)(item)
    expected[first_pieces["effusions"]] = 2
    assert torch.equal(out["lesion_word"], expected)
    assert out["lesion_word"][first_pieces["effusions"] + 1].item() == -1  # "##s" is not a word of its own

    # without word_start (single tokens) the split "pneumothorax" is invisible and the piece "effusion" of
    # "effusions" is taken for the word "effusion"
    without_starts = {k: v for k, v in item.items() if k != "word_start"}
    out = LesionWordd(tokenizer=str(tokenizer_folder))(without_starts)
    single = torch.full((48,), -1, dtype=torch.long)
    single[first_pieces["opacity"]] = 0
    single[first_pieces["effusions"]] = 2
    assert torch.equal(out["lesion_word"], single)


def _image(width: int = 6, height: int = 5) -> MetaTensor:
    affine = torch.diag(torch.tensor([0.5, 0.25, 1.0, 1.0], dtype=torch.float64))
    return MetaTensor(torch.zeros(1, width, height), affine=affine, meta={"filename_or_obj": "study.dcm"})


def test_lesion_mask_known_answer() -> None:
    findings = [
        {"name": "Lung Opacity", "box": [1, 0, 2, 3]},  # rows 1-2, columns 0-2
        {"name": "Consolidation", "box": [2, 2, 3, 2]},  # rows 2-4, columns 2-3: shares the opacity channel
        {"name": "Pneumothorax", "box": [0, 3, 1, 2]},  # row 0, columns 3-4
        {"name": "Cardiomegaly", "box": [0, 0, 6, 5]},  # not a lesion class: ignored
        {"name": "Nodule", "box": [4, 4, 1, 1]},  # unknown finding: ignored
        {"name": "Pleural Effusion", "box": [3, 0, 0, 2]},  # empty box: ignored
        {"name": "Pleural Effusion", "box": [3, 0, 2, 0]},  # empty box: ignored
        {"name": "Pleural Effusion", "box": []},  # no box: ignored
    ]
    image = _image()
    out = LesionMaskd()({"image": image, "findings": findings})
    mask = out["lesion_mask"]
    expected = torch.tensor(
        [
            [[0, 0, 0, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [0, 0, 1, 1, 0], [0, 0, 1, 1, 0], [0, 0, 0, 0, 0]],
            [[0, 0, 0, 1, 1], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]],
            [[0] * 5] * 6,
        ],
        dtype=torch.float32,
    )
    assert isinstance(mask, MetaTensor) and mask.dtype == torch.float32
    assert torch.equal(mask.as_tensor(), expected)
    assert torch.equal(mask.affine, image.affine) and mask.meta["filename_or_obj"] == "study.dcm"
    assert out["image"] is image


def test_lesion_mask_boxes_use_the_image_layout_and_clip() -> None:
    # a plain tensor image whose bright pixels are the box [x, y, w, h] drawn at image[0, x:x+w, y:y+h]
    image = torch.zeros(1, 7, 4)
    image[0, 2:5, 1:3] = 1.0
    out = LesionMaskd(output_key="truth")(
        {"image": image, "findings": [{"name": "Pleural Effusion", "box": [2, 1, 3, 2]}]}
    )
    assert type(out["truth"]) is torch.Tensor and out["truth"].shape == (3, 7, 4)
    assert torch.equal(out["truth"][2], image[0]) and out["truth"][:2].sum() == 0

    # boxes partly outside the image are clipped; fractional boxes are rounded
    findings = [{"name": "Pneumothorax", "box": [-1, 3, 2, 5]}, {"name": "Pneumothorax", "box": [5.8, 0.2, 2.1, 0.9]}]
    mask = LesionMaskd()({"image": image, "findings": findings})["lesion_mask"][1]
    expected = torch.zeros(7, 4)
    expected[0, 3] = 1.0  # x in [-1, 1) -> row 0; y in [3, 8) -> column 3
    expected[6, 0] = 1.0  # x = 6, w = 2 -> row 6; y = 0, h = 1 -> column 0
    assert torch.equal(mask, expected)

    # no findings: all zero; custom classes set the channels and their order
    assert LesionMaskd()({"image": image, "findings": []})["lesion_mask"].sum() == 0
    custom = LesionMaskd(classes={"ptx": ("Pneumothorax",), "any": ("Pneumothorax", "Lung Opacity")})
    mask = custom({"image": image, "findings": [{"name": "Lung Opacity", "box": [0, 0, 1, 1]}]})["lesion_mask"]
    assert mask.shape == (2, 7, 4) and mask[0].sum() == 0 and mask[1, 0, 0] == 1 and mask[1].sum() == 1


def _sentence_item(tokenizer_folder: Path, text: str) -> dict:
    tokenizer = ReportTokenizer(str(tokenizer_folder), max_length=128)
    return TokenizeReportd("report", tokenizer=tokenizer)({"report": text})


def _first_pieces(item: dict, tokenizer_folder: Path) -> dict[int, str]:
    """``{first piece position: word}`` of a tokenised item."""
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(tokenizer_folder), local_files_only=True)
    tokens = [""] * len(hf.get_vocab())
    for token, index in hf.get_vocab().items():
        tokens[index] = token
    return first_piece_words(item["input_ids"], item["word_start"], tokens)


def test_sentence_index_counts_sentence_ends(tokenizer_folder: Path) -> None:
    item = SentenceIndexd(tokenizer=str(tokenizer_folder))(
        _sentence_item(tokenizer_folder, "Small right. With the. Opacity. At")
    )
    sentence = item["sentence_id"].tolist()
    length = int(item["attention_mask"].sum())
    assert sentence[0] == sentence[length - 1] == -1  # [CLS] and [SEP] belong to no sentence
    assert set(sentence[length:]) == {-1}  # padding
    at_word = {word: sentence[position] for position, word in _first_pieces(item, tokenizer_folder).items()}
    assert at_word == {"small": 0, "right": 0, "with": 1, "the": 1, "opacity": 2, "at": 3}
    assert max(sentence) == 3
    vocabulary = ["[CLS]", "a", ".", "!", "?", "b"]
    ids = torch.tensor([0, 1, 3, 5, 4, 1, 2, 5, 0])
    assert sentence_index(ids, vocabulary, special_ids=(0,)).tolist() == [-1, 0, 0, 1, 1, 2, 2, 3, -1]


def test_finding_mentions_skip_negated_sentences_and_read_the_side(tokenizer_folder: Path) -> None:
    text = (
        "Small right pneumothorax. No pleural effusion or pneumothorax. Left base opacity may represent pneumonia. "
        "Bilateral effusion with right opacity. Effusion cannot be excluded."
    )
    item = FindingMentiond(tokenizer=str(tokenizer_folder))(_sentence_item(tokenizer_folder, text))
    classes = item["finding_word"].tolist()
    sides = item["finding_side"].tolist()
    stated = [(c, s) for c, s in zip(classes, sides, strict=True) if c >= 0]
    pneumothorax, opacity, effusion = (LESION_CLASSES.index(c) for c in ("pneumothorax", "opacity", "effusion"))
    # sentence 1: right pneumothorax; 2: negated (no marks); 3: left opacity + pneumonia (an opacity word);
    # 4: bilateral -> side 0 for both findings; 5: a hedge is not a negation, no side named -> 0
    assert stated == [
        (pneumothorax, 1),
        (opacity, 2),
        (opacity, 2),
        (effusion, 0),
        (opacity, 0),
        (effusion, 0),
    ]
    assert all(s == 0 for c, s in zip(classes, sides, strict=True) if c < 0)
    assert item["finding_word"].dtype == torch.long and item["finding_side"].dtype == torch.long


def test_finding_mentions_agree_with_the_demo_labels(tmp_path: Path) -> None:
    """On the demo grammar (every sentence wholly positive or negative) the stated classes are the drawn ones."""
    from sista_monai.data.datalist import load_datalist_split
    from sista_monai.data.demo import ensure_demo_data
    from sista_monai.transforms import CleanReportd, ExtractReportSectionsd

    root = ensure_demo_data(tmp_path / "demo", n=40, size=64, seed=3)
    items = load_datalist_split(root / "datalist_pretrain.json", "training")
    tokenizer = str(root / "tokenizer")
    chain = [
        ExtractReportSectionsd("report", parser="mimic", order=("impression", "findings")),
        CleanReportd("report"),
        TokenizeReportd("report", tokenizer=tokenizer, max_length=112),
        FindingMentiond(tokenizer=tokenizer),
    ]
    label_class = {"Lung Opacity": "opacity", "Pneumothorax": "pneumothorax", "Pleural Effusion": "effusion"}
    checked = 0
    for item in items:
        for transform in chain:
            item = transform(item)
        stated = {LESION_CLASSES[c] for c in item["finding_word"].tolist() if c >= 0}
        drawn = {
            label_class[name]
            for name, on in zip(LABEL_NAMES, item["labels"], strict=True)
            if on and name in label_class
        }
        assert stated == drawn, item["id"]
        sides = {
            (LESION_CLASSES[c], s)
            for c, s in zip(item["finding_word"].tolist(), item["finding_side"].tolist(), strict=True)
            if c >= 0
        }
        truth = {
            (LESION_FINDING_CLASS[f["name"]], 1 if f["zone"].startswith("right") else 2)
            for f in item["findings"]
            if f["name"] in LESION_FINDING_CLASS
        }
        assert {(c, s) for c, s in sides if s} <= truth, item["id"]
        checked += 1
    assert checked == len(items) > 20
