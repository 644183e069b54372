"""Zero-shot classification: prompt files, the CheXzero softmax, the vectorised scoring against slow loops, the
bootstrap AUROC, and the evaluator's files against what the model computes."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedEvaluator
from monai.metrics import compute_roc_auc
from monai.transforms import Compose, NormalizeIntensityd
from PIL import Image

from sista_monai.data.demo import LABEL_NAMES
from sista_monai.data.demo.reports import FINDING_WORDS, NEGATION_CUES
from sista_monai.data.prompts import (
    CHEXPERT_PROMPTS,
    DEMO_PROMPTS,
    ClassPrompts,
    PromptSet,
    load_prompts,
    resolve_prompts,
)
from sista_monai.data.tokenizer import train_wordpiece_tokenizer
from sista_monai.engines import (
    ZeroShotInferer,
    ZeroShotInputs,
    ZeroShotPrepareBatch,
    prompt_embeddings,
    zero_shot_mode,
    zero_shot_probabilities,
)
from sista_monai.handlers import ZeroShotEvaluation, ZeroShotWriter, bootstrap_auroc
from sista_monai.networks import HuggingFaceTextEncoder, SISTAModel, ViTImageEncoder
from sista_monai.transforms import CleanReportd, LoadChestXrayd, TokenizeReportd, load_tokenizer

CHEXPERT_OBSERVATIONS = [
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
]


def _write(path: Path, content: object) -> Path:
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


# ---------------------------------------------------------------------------------------------------- prompt sets


def test_built_in_sets_cover_the_demo_labels_and_the_chexpert_observations() -> None:
    assert DEMO_PROMPTS.class_names == list(LABEL_NAMES)
    assert CHEXPERT_PROMPTS.class_names == CHEXPERT_OBSERVATIONS
    for prompt_set in (DEMO_PROMPTS, CHEXPERT_PROMPTS):
        for prompts in prompt_set.classes.values():
            assert prompts.positive and prompts.negative
            assert all(p.strip() == p and p.endswith(".") for p in prompts.positive + prompts.negative)
            assert not set(prompts.positive) & set(prompts.negative)


def _negated(sentence: str) -> bool:
    return bool(set(re.findall(r"[a-z]+", sentence.lower())) & set(NEGATION_CUES))


def test_demo_prompts_follow_the_demo_report_grammar() -> None:
    """As the demo reports: a positive sentence names its finding without a negation cue; a negative one negates it or
    does not name it ("Heart size is normal.")."""
    words = {**FINDING_WORDS, "Consolidation": ("consolidation",)}
    for name, prompts in DEMO_PROMPTS.classes.items():
        if name == "No Finding":
            continue
        for sentence in prompts.positive:
            assert not _negated(sentence) and any(w in sentence.lower() for w in words[name]), sentence
        for sentence in prompts.negative:
            assert _negated(sentence) or not any(w in sentence.lower() for w in words[name]), sentence
    normal = DEMO_PROMPTS.classes["No Finding"]
    assert all(_negated(s) or "clear" in s.lower() or "normal" in s.lower() for s in normal.positive)
    assert not any(_negated(s) for s in normal.negative)


def test_a_prompts_file_replaces_the_defaults(tmp_path: Path) -> None:
    content = {
        "classes": {
            "Pneumothorax": {"positive": [" Small right pneumothorax. "], "negative": ["No pneumothorax."]},
            "Cardiomegaly": {"positive": ["Cardiomegaly."], "negative": ["Heart size is normal.", "No cardiomegaly."]},
        }
    }
    path = _write(tmp_path / "prompts.json", content)
    prompt_set = load_prompts(path)
    assert prompt_set.source == str(path) and prompt_set.class_names == ["Pneumothorax", "Cardiomegaly"]
    assert prompt_set.classes["Pneumothorax"] == ClassPrompts(("Small right pneumothorax.",), ("No pneumothorax.",))
    assert resolve_prompts(str(path), list(LABEL_NAMES)) == prompt_set  # both classes are labelled
    assert resolve_prompts(path) == prompt_set
    assert (
        load_prompts(_write(tmp_path / "again.json", {"classes": prompt_set.to_dict()})).classes == prompt_set.classes
    )


@pytest.mark.parametrize(
    ("content", "messages"),
    [
        ("{not json", ["not JSON", "line 1"]),
        ([1, 2], ['expected an object {"classes"']),
        ({"Pneumothorax": {"positive": ["a."], "negative": ["b."]}}, ["expected an object", "['Pneumothorax']"]),
        ({"classes": {}}, ["'classes' is empty"]),
        ({"classes": {"Edema": ["a."]}}, ["class 'Edema' must be an object"]),
        ({"classes": {"Edema": {"positive": ["Edema."]}}}, ["class 'Edema' has no 'negative' prompt list"]),
        (
            {"classes": {"Edema": {"positive": [], "negative": ["No edema.", "  "]}, "Fracture": {"positive": "x"}}},
            [
                "class 'Edema': 'positive' must be a non-empty list",
                "class 'Edema': 'negative' prompts [1] are empty",
                "class 'Fracture': 'positive' must be a non-empty list",
                "class 'Fracture' has no 'negative'",
            ],
        ),
        ({"classes": {"Edema": {"positive": ["a."], "negative": ["b."], "neutral": []}}}, ["unknown keys ['neutral']"]),
    ],
)
def test_a_bad_prompts_file_is_refused_naming_the_file_and_every_problem(
    tmp_path: Path, content: object, messages: list[str]
) -> None:
    path = _write(tmp_path / "mine.json", content)
    with pytest.raises(ValueError) as raised:
        load_prompts(path)
    assert str(raised.value).startswith(str(path))
    for message in messages:
        assert message in str(raised.value)


def test_a_missing_or_undecodable_prompts_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="prompts file .*absent.json does not exist"):
        load_prompts(tmp_path / "absent.json")
    (tmp_path / "latin.json").write_bytes(b'{"classes": "\xe9"}')
    with pytest.raises(ValueError, match="latin.json: not a UTF-8 text file"):
        load_prompts(tmp_path / "latin.json")


def test_resolve_prompts_picks_the_built_in_set_that_covers_the_labels(tmp_path: Path) -> None:
    assert resolve_prompts(None) == DEMO_PROMPTS
    demo = resolve_prompts(None, ["Cardiomegaly", "Pneumothorax"])
    assert demo.source == "demo" and demo.class_names == ["Cardiomegaly", "Pneumothorax"]
    assert demo.classes["Cardiomegaly"] == DEMO_PROMPTS.classes["Cardiomegaly"]
    chexpert = resolve_prompts(None, ["Edema", "Cardiomegaly"])
    assert (
        chexpert.source == "chexpert" and chexpert.classes["Cardiomegaly"] == CHEXPERT_PROMPTS.classes["Cardiomegaly"]
    )
    assert resolve_prompts("chexpert", list(LABEL_NAMES)).class_names == list(LABEL_NAMES)
    assert resolve_prompts("chexpert") == CHEXPERT_PROMPTS
    with pytest.raises(ValueError, match=r"no built-in prompt set covers .*'Nodule'.*give `prompts` a JSON file"):
        resolve_prompts(None, ["Nodule", "Edema"])
    with pytest.raises(ValueError, match=r"the demo prompts have no class \['Edema'\]"):
        resolve_prompts("demo", ["Edema"])
    path = _write(tmp_path / "p.json", {"classes": {"Edema": {"positive": ["Edema."], "negative": ["No edema."]}}})
    with pytest.raises(ValueError, match=r"p.json: the classes \['Edema'\] are not labelled in the datalist"):
        resolve_prompts(path, list(LABEL_NAMES))


# ---------------------------------------------------------------------------------------------------- the softmax


def test_probabilities_on_hand_built_embeddings() -> None:
    """pos = e1, neg = e2: an image along e1 has cosines (1, 0), hence p = 1 / (1 + exp(-1 / tau))."""
    class_emb = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [1.0, 0.0]]])
    images = torch.tensor([[3.0, 0.0], [0.0, 0.5], [1.0, 1.0]])  # unnormalised on purpose
    for tau in (1.0, 0.07):
        probabilities, similarities = zero_shot_probabilities(images, class_emb, tau)
        p = 1 / (1 + math.exp(-1 / tau))
        expected = torch.tensor([[p, 1 - p], [1 - p, p], [0.5, 0.5]])
        torch.testing.assert_close(probabilities, expected, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(similarities[2], torch.full((2, 2), 1 / math.sqrt(2)))
    with pytest.raises(ValueError, match="temperature must be positive"):
        zero_shot_probabilities(images, class_emb, 0.0)
    with pytest.raises(ValueError, match=r"\(C, 2, D\)"):
        zero_shot_probabilities(images, class_emb[:, :1], 1.0)
    with pytest.raises(ValueError, match="D=3"):
        zero_shot_probabilities(torch.ones(2, 3), class_emb, 1.0)


def test_vectorised_probabilities_equal_a_per_image_loop() -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(7, 16, generator=generator)
    class_emb = F.normalize(torch.randn(4, 2, 16, generator=generator), dim=-1)
    tau = 0.1
    probabilities, similarities = zero_shot_probabilities(images, class_emb, tau)
    for b in range(7):
        for c in range(4):
            image = images[b].double()
            s_pos = float(image @ class_emb[c, 0].double() / image.norm())
            s_neg = float(image @ class_emb[c, 1].double() / image.norm())
            expected = math.exp(s_pos / tau) / (math.exp(s_pos / tau) + math.exp(s_neg / tau))
            assert float(probabilities[b, c]) == pytest.approx(expected, rel=1e-5)
            assert similarities[b, c].tolist() == pytest.approx([s_pos, s_neg], abs=1e-6)


# ---------------------------------------------------------------------------------------------------- the model


PROMPTS = PromptSet(
    {
        "Pleural Effusion": ClassPrompts(
            ("There is a moderate left pleural effusion.", "Small right pleural effusion."),
            ("No pleural effusion.",),
        ),
        "Pneumothorax": ClassPrompts(
            ("Small right apical pneumothorax.",), ("No pneumothorax.", "No pneumothorax is seen.")
        ),
    },
    "test",
)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> object:
    texts = [s for p in PROMPTS.classes.values() for s in p.positive + p.negative] * 3
    return load_tokenizer(train_wordpiece_tokenizer(texts, tmp_path_factory.mktemp("tok"), vocab_size=120))


def _model(tokenizer: object, learnable_temperature: bool = False) -> SISTAModel:
    torch.manual_seed(0)
    config = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32}
    return SISTAModel(
        ViTImageEncoder(img_size=16, patch_size=8, preset="tiny", num_layers=1),
        HuggingFaceTextEncoder(config=config, tokenizer=tokenizer),
        embed_dim=8,
        temperature=0.2,
        learnable_temperature=learnable_temperature,
    ).eval()


def _text_transform(tokenizer: object) -> Compose:
    return Compose([CleanReportd("report"), TokenizeReportd("report", tokenizer, max_length=16)])


def test_prompt_embeddings_equal_a_per_prompt_loop(tokenizer: object) -> None:
    model, transform = _model(tokenizer), _text_transform(tokenizer)
    class_emb = prompt_embeddings(model, PROMPTS, transform)
    assert class_emb.shape == (2, 2, 8)
    with torch.no_grad():
        for c, prompts in enumerate(PROMPTS.classes.values()):
            for p, sentences in enumerate((prompts.positive, prompts.negative)):
                embedded = []
                for sentence in sentences:
                    tokens = transform({"report": sentence})
                    text_emb = model.encode_text(tokens["input_ids"][None], tokens["attention_mask"][None])[0][0]
                    embedded.append(text_emb / text_emb.norm())
                mean = torch.stack(embedded).mean(0)
                torch.testing.assert_close(class_emb[c, p], mean / mean.norm(), rtol=1e-5, atol=1e-6)


def test_inferer_scores_images_with_the_models_temperature(tokenizer: object) -> None:
    images = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    for learnable, tau in ((False, 0.5), (True, 0.2)):  # a learned tau wins over the configured one
        model, transform = _model(tokenizer, learnable), _text_transform(tokenizer)
        inferer = ZeroShotInferer(PROMPTS, transform, temperature=0.5)
        with torch.no_grad():
            output = inferer(images, model)
            expected, _ = zero_shot_probabilities(
                model.encode_image(images)[0], prompt_embeddings(model, PROMPTS, transform), tau
            )
        assert output["classes"] == ["Pleural Effusion", "Pneumothorax"]
        assert output["temperature"] == pytest.approx(tau)
        torch.testing.assert_close(output["probabilities"], expected)
        cached = inferer.class_embeddings(model)
        assert inferer.class_embeddings(model) is cached  # embedded once per network
        assert inferer.class_embeddings(_model(tokenizer, learnable)) is not cached
    with pytest.raises(ValueError, match="temperature must be positive"):
        ZeroShotInferer(PROMPTS, transform, temperature=-1.0)


# ---------------------------------------------------------------------------------------------------- AUROC


def test_bootstrap_auroc_points_are_monais_and_intervals_hold_them() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, (60, 3)).astype(float)
    scores = np.round(labels * 0.4 + rng.random((60, 3)), 1)  # rounded: many ties
    labels[:, 2] = 1.0  # one class only: no AUROC, left out of the mean
    result = bootstrap_auroc(scores, labels, resamples=500, seed=3)
    for c in range(2):
        expected = float(compute_roc_auc(torch.as_tensor(scores[:, c]), torch.as_tensor(labels[:, c])))
        assert result["auroc"][c] == pytest.approx(expected, abs=1e-7)
        assert result["low"][c] < result["auroc"][c] < result["high"][c]
    assert math.isnan(result["auroc"][2]) and math.isnan(result["low"][2])
    assert result["positives"] == [int(labels[:, 0].sum()), int(labels[:, 1].sum()), 60]
    assert result["mean"] == pytest.approx(np.mean(result["auroc"][:2]))
    assert result["mean_low"] < result["mean"] < result["mean_high"]
    assert json.dumps(bootstrap_auroc(scores, labels, resamples=500, seed=3)) == json.dumps(result)  # seeded
    perfect = bootstrap_auroc([[0.1], [0.2], [0.8], [0.9]], [[0], [0], [1], [1]], resamples=200)
    assert perfect["auroc"] == [1.0] and perfect["low"] == [1.0] and perfect["high"] == [1.0]
    with pytest.raises(ValueError, match=r"must both be \(n, C\)"):
        bootstrap_auroc(scores, labels[:, :2])


def test_bootstrap_resample_auroc_equals_monai_with_ties() -> None:
    from sista_monai.handlers.zero_shot import _rank_auroc

    rng = np.random.default_rng(1)
    scores = rng.integers(0, 5, (20, 30)).astype(float)
    positive = rng.random((20, 30)) < 0.4
    fast = _rank_auroc(scores, positive)
    for r in range(20):
        expected = float(compute_roc_auc(torch.as_tensor(scores[r]), torch.as_tensor(positive[r], dtype=torch.float)))
        assert fast[r] == pytest.approx(expected, abs=1e-7)


# ---------------------------------------------------------------------------------------------------- inputs and files


def test_mode_is_evaluate_exactly_when_the_datalist_exists(tmp_path: Path) -> None:
    datalist = _write(tmp_path / "datalist.json", {"test": []})
    assert zero_shot_mode(None, datalist) == "evaluate"
    assert zero_shot_mode(None, tmp_path / "absent.json") == "infer"
    assert zero_shot_mode("infer", datalist) == "infer"
    with pytest.raises(FileNotFoundError, match="needs the datalist .*absent.json"):
        zero_shot_mode("evaluate", tmp_path / "absent.json")
    with pytest.raises(ValueError, match="zero_shot_mode must be one of"):
        zero_shot_mode("train", datalist)


def test_evaluation_inputs_keep_the_image_and_labels_only(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    content = {
        "label_names": ["Pneumothorax", "Pleural Effusion"],
        "test": [{"id": "s1", "image": "images/s1.dcm", "report": "FINDINGS: secret text.", "labels": [1, 0]}],
    }
    datalist = _write(tmp_path / "datalist.json", content)
    inputs = ZeroShotInputs(tmp_path, tmp_path / "out", datalist)
    assert inputs.mode == "evaluate" and inputs.label_names == ["Pneumothorax", "Pleural Effusion"]
    [item] = inputs.items
    assert sorted(item) == ["image", "labels", "output_name", "source"]
    assert item["source"] == "images/s1.dcm" and item["output_name"] == "images/s1"
    assert item["labels"].tolist() == [1.0, 0.0]
    inputs.finish()  # nothing to report
    content["test"][0]["labels"] = [1]
    with pytest.raises(ValueError, match=r"test item 's1' needs 'labels', a list of 2 values"):
        ZeroShotInputs(tmp_path, tmp_path / "out", _write(datalist, content))
    del content["label_names"]
    with pytest.raises(ValueError, match="needs the datalist's 'label_names'"):
        ZeroShotInputs(tmp_path, tmp_path / "out", _write(datalist, content))


def _png(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (16, 16), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def test_evaluator_writes_what_the_model_computes(tokenizer: object, tmp_path: Path) -> None:
    folder, out = tmp_path / "in", tmp_path / "out"
    _png(folder / "a.png", 0)
    _png(folder / "series" / "b.png", 1)
    (folder / "broken.dcm").write_bytes(b"not a DICOM file")
    inputs = ZeroShotInputs(folder, out, folder / "datalist_pretrain.json")
    assert inputs.mode == "infer"
    assert [(i["source"], i["output_name"]) for i in inputs.items] == [("a.png", "a"), ("series/b.png", "series/b")]
    model, transform = _model(tokenizer), _text_transform(tokenizer)
    image_transform = Compose([LoadChestXrayd("image"), NormalizeIntensityd("image", subtrahend=0.5, divisor=0.25)])
    writer = ZeroShotWriter(out)
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(Dataset(inputs.items, image_transform), batch_size=1),
        network=model,
        prepare_batch=ZeroShotPrepareBatch(),
        inferer=ZeroShotInferer(PROMPTS, transform, temperature=0.5),
        decollate=False,
        val_handlers=[writer],
    )
    evaluator.run()
    with torch.no_grad():
        class_emb = prompt_embeddings(model, PROMPTS, transform)
        rows = list(csv.reader((out / "zero_shot.csv").open()))
        assert rows[0] == ["source", "Pleural Effusion", "Pneumothorax"]
        for row, (source, name) in zip(rows[1:], [("a.png", "a"), ("series/b.png", "series/b")], strict=True):
            image = image_transform({"image": str(folder / source)})["image"][None]
            expected = zero_shot_probabilities(model.encode_image(image)[0], class_emb, 0.5)[0][0].tolist()
            record = json.loads((out / f"{name}.json").read_text())
            assert record["source"] == source and record["classes"] == ["Pleural Effusion", "Pneumothorax"]
            assert list(record["probabilities"].values()) == pytest.approx(expected, abs=1e-6)
            assert row[0] == source and [float(v) for v in row[1:]] == pytest.approx(expected, abs=1e-6)
    assert json.loads((out / "errors.json").read_text())[0]["file"] == "broken.dcm"
    with pytest.raises(SystemExit, match="1 could not be read"):
        inputs.finish()


def test_evaluation_report_holds_the_aurocs_of_the_scored_classes(tmp_path: Path) -> None:
    """The handler picks the scored classes' label columns and writes the bootstrap AUROCs, prompts and counts."""

    class Engine:
        def __init__(self) -> None:
            self.state = type("State", (), {})()

    evaluation = ZeroShotEvaluation(
        tmp_path / "eval" / "zero_shot.json", ["No Finding", "Pneumothorax"], PROMPTS, "test", 300
    )
    engine = Engine()
    probabilities = torch.tensor([[0.9, 0.5], [0.8, 0.1], [0.3, 0.7], [0.2, 0.4]])
    labels = torch.tensor([[0.0, 1.0], [0.0, 0.0], [1.0, 1.0], [1.0, 0.0]])  # columns: No Finding, Pneumothorax
    classes = ["Pneumothorax", "Pleural Effusion"]
    for rows in (slice(0, 2), slice(2, 4)):
        engine.state.output = {
            "pred": {"probabilities": probabilities[rows], "classes": classes, "temperature": 0.07},
            "label": {"labels": labels[rows]},
        }
        evaluation(engine)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\['Pleural Effusion'\] are not among the label names"):
        evaluation.write()
    evaluation.classes = ["Pneumothorax", "No Finding"]
    evaluation.write()
    report = json.loads((tmp_path / "eval" / "zero_shot.json").read_text())
    # Pneumothorax: scores 0.9, 0.8, 0.3, 0.2 against labels 1, 0, 1, 0 -> pairs (0.9>0.8, 0.9>0.2, 0.3<0.8, 0.3>0.2)
    # No Finding: scores 0.5, 0.1, 0.7, 0.4 against 0, 0, 1, 1 -> (0.7>0.5, 0.7>0.1, 0.4<0.5, 0.4>0.1)
    assert report["auroc"] == {"Pneumothorax": 0.75, "No Finding": 0.75}
    assert report["mean_auroc"] == 0.75 and report["n_images"] == 4 and report["split"] == "test"
    assert report["positives"] == {"Pneumothorax": 2, "No Finding": 2}
    assert report["classes"] == ["Pneumothorax", "No Finding"] and report["temperature"] == 0.07
    assert report["prompts"] == {"source": "test", "classes": PROMPTS.to_dict()}
    assert all(low <= 0.75 <= high for low, high in report["auroc_interval"].values())
    assert "2000" not in report["interval"] and "300 resamples" in report["interval"]
