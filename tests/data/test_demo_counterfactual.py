"""Counterfactual twins of the demo studies: one finding moved, nothing else changed, the report kept."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sista_monai.data.demo import ensure_demo_data, plan_studies, render_study
from sista_monai.data.demo.counterfactual import LESION_CLASS_FINDINGS, boxes_overlap, twin_plans
from sista_monai.transforms import LESION_CLASSES, LESION_FINDINGS, LoadChestXray

SEED = 0


def _region(shape: tuple[int, int], boxes: list[list[int]], margin: int) -> np.ndarray:
    """``(rows, columns)`` bool: the union of ``[x, y, w, h]`` boxes dilated by ``margin``."""
    region = np.zeros(shape, dtype=bool)
    for x, y, w, h in boxes:
        region[max(0, y - margin) : y + h + margin, max(0, x - margin) : x + w + margin] = True
    return region


def _changed_region(twin, zones: dict[str, list[int]], size: int) -> np.ndarray:
    """Where moving the finding may change the image: an opacity's old and new boxes (its Gaussian blobs reach
    past the box, hence size / 8); for a pneumothorax or an effusion the two hemithoraces (the lung under a
    pneumothorax is drawn denser as a whole)."""
    if twin.lesion_class == "opacity":
        return _region((size, size), [twin.original_finding["box"], twin.moved_finding["box"]], size // 8)
    sides = {twin.original_finding["zone"].split()[0], twin.moved_finding["zone"].split()[0]}
    lungs = [zones[f"{side} {level}"] for side in sides for level in ("upper", "middle", "lower")]
    return _region((size, size), lungs, size // 16)


def test_lesion_classes_agree_with_the_transforms() -> None:
    assert tuple(LESION_CLASS_FINDINGS) == LESION_CLASSES
    assert LESION_CLASS_FINDINGS == LESION_FINDINGS


@pytest.mark.parametrize("size", [256, 128])
def test_twin_differs_only_where_the_finding_was_and_is(size: int) -> None:
    plans = plan_studies(60, SEED)
    counts = dict.fromkeys(LESION_CLASSES, 0)
    for plan in plans:
        original = render_study(plan, size, SEED)
        for twin in twin_plans(plan, size, SEED):
            counts[twin.lesion_class] += 1
            difference = np.abs(twin.rendered.image - original.image)
            changed = _changed_region(twin, original.zones, size)
            assert difference[~changed].max() < 5e-3, (plan.study_id, twin.lesion_class)
            assert difference[changed].max() > 0.05, (plan.study_id, twin.lesion_class)  # it did move
            # the same patient and exposure: anatomy, pneumothorax mask aside, is unchanged
            assert twin.rendered.zones == original.zones
            assert twin.rendered.cardiothoracic_ratio == original.cardiothoracic_ratio
            # the moved finding went where the plan says, away from its old box; the others stayed
            assert twin.moved_finding["zone"] != twin.original_finding["zone"]
            assert not boxes_overlap(twin.original_finding["box"], twin.moved_finding["box"], size // 16)
            others = [f for f in original.findings if f["name"] != twin.original_finding["name"]]
            assert [f for f in twin.rendered.findings if f["name"] != twin.moved_finding["name"]] == others
            if twin.lesion_class != "opacity":
                assert twin.moved_finding["zone"].split()[1] == twin.original_finding["zone"].split()[1]
    assert min(counts.values()) >= 5, counts


def test_only_single_findings_of_a_class_get_a_twin() -> None:
    for plan in plan_studies(200, SEED):
        names = [f.name for f in plan.findings]
        twins = {t.lesion_class for t in twin_plans(plan, 64, SEED)}
        for lesion_class, finding_names in LESION_CLASS_FINDINGS.items():
            if sum(n in finding_names for n in names) != 1:
                assert lesion_class not in twins, plan.study_id


def test_boxes_overlap_with_margin() -> None:
    assert boxes_overlap([0, 0, 10, 10], [5, 5, 10, 10])
    assert not boxes_overlap([0, 0, 10, 10], [10, 0, 10, 10])  # touching edges do not overlap
    assert boxes_overlap([0, 0, 10, 10], [10, 0, 10, 10], margin=1)
    assert not boxes_overlap([0, 0, 10, 10], [0, 14, 10, 10], margin=4)
    assert boxes_overlap([0, 0, 10, 10], [0, 14, 10, 10], margin=5)


def test_written_twins_through_the_loader(tmp_path: Path) -> None:
    """The datalist pairs each validation/test study with its twin DICOM; loaded by the project's own reader, the
    two images differ only in the moved finding's regions, and the report is the study's own."""
    size = 128
    root = ensure_demo_data(tmp_path / "demo", n=60, size=size, seed=SEED)
    listing = json.loads((root / "datalist_counterfactual.json").read_text())
    pretrain = json.loads((root / "datalist_pretrain.json").read_text())
    assert set(listing) >= {"validation", "test"} and "training" not in listing
    plans = {p.study_id: p for p in plan_studies(60, SEED)}
    loader = LoadChestXray()
    for split in ("validation", "test"):
        studies = {i["id"]: i for i in pretrain[split]}
        assert listing[split], split
        for item in listing[split]:
            study = studies[item["study"]]
            assert item["report"] == study["report"] and item["image"] == study["image"]
            assert item["findings"] == study["findings"] and item["labels"] == study["labels"]
            assert item["finding"][0] in study["findings"]
            assert item["moved"]["lesion_class"] in LESION_CLASSES
            assert item["twin_finding"][0] in item["twin_findings"]
            original = np.asarray(loader(str(root / item["image"]))[0])  # (W, H): [x, y]
            twin = np.asarray(loader(str(root / item["twin_image"]))[0])
            twin_study = next(
                t
                for t in twin_plans(plans[item["study"]], size, SEED)
                if t.lesion_class == item["moved"]["lesion_class"]
            )
            changed = _changed_region(twin_study, item["zones"], size).T  # (rows, columns) -> [x, y]
            difference = np.abs(twin - original)
            assert difference[~changed].max() < 0.02, item["id"]  # stored-value rounding of the same pixels
            assert difference[changed].max() > 0.05, item["id"]
