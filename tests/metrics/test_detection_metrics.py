"""Detection mAP (MONAI's matching_batch + COCOMetric) on hand-made boxes, the Ignite metric, report and overlays.

The expected values are worked out by hand from what MONAI 1.6.1 does: a detection matches a ground-truth box
when IoU >= threshold; AP is the mean, over the 101 recall points 0.00..1.00, of the non-increasing precision
envelope read at the first detection rank whose recall reaches the point (0 past the final recall). MONAI adds
``np.spacing(1)`` to the precision's denominator, so a "perfect" AP reads 1 - 2e-16: values are compared with
``pytest.approx(abs=1e-9)``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from ignite.engine import Engine
from monai.data.box_utils import box_iou
from PIL import Image

from sista_monai.handlers import DetectionReport
from sista_monai.metrics import (
    MGCA_IOU_RANGE,
    DetectionMAP,
    detection_map,
    detection_map_rule,
    detection_output,
    iou_thresholds,
)
from sista_monai.visualize import overlay_boxes

EXACT = 1e-9
GT = np.array([[10.0, 20.0, 30.0, 60.0]])  # 20 wide (x), 40 high (y)
SECRET_NAME = "patient_4f2c9e_secret.dcm"


def _pred(boxes: Any, scores: Any, labels: Any = None) -> dict[str, np.ndarray]:
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    labels = np.zeros(len(boxes), dtype=np.int64) if labels is None else np.asarray(labels, dtype=np.int64)
    return {"box": boxes, "label": labels, "score": np.asarray(scores, dtype=np.float32).reshape(-1)}


def _gt(boxes: Any, labels: Any = None) -> dict[str, np.ndarray]:
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    labels = np.zeros(len(boxes), dtype=np.int64) if labels is None else np.asarray(labels, dtype=np.int64)
    return {"box": boxes, "label": labels}


def _item(
    target: dict[str, np.ndarray], prediction: dict[str, np.ndarray], size: tuple[int, int] = (64, 48)
) -> dict[str, Any]:
    """One image of the evaluator's output (torch tensors, as the engine gives them)."""
    return {
        "image": torch.zeros(1, *size),
        "box": torch.as_tensor(target["box"]),
        "label": torch.as_tensor(target["label"]),
        "pred_box": torch.as_tensor(prediction["box"]),
        "pred_label": torch.as_tensor(prediction["label"]),
        "pred_score": torch.as_tensor(prediction["score"]),
        "filename": f"/data/rsna/{SECRET_NAME}",
    }


def _random_split(seed: int, images: int = 7) -> tuple[list[dict[str, np.ndarray]], list[dict[str, np.ndarray]]]:
    """Jittered copies of the ground truth, some missed, some spurious: a non-trivial mAP."""
    rng = np.random.default_rng(seed)
    predictions, targets = [], []
    for _ in range(images):
        count = int(rng.integers(0, 3))
        corner = rng.uniform(0, 30, size=(count, 2))
        gt = np.concatenate([corner, corner + rng.uniform(8, 20, size=(count, 2))], axis=1)
        keep = rng.random(count) > 0.2
        pred = gt[keep] + rng.normal(0, 2.0, size=(int(keep.sum()), 4))
        spurious = rng.uniform(0, 30, size=(int(rng.integers(0, 2)), 2))
        pred = np.concatenate([pred, np.concatenate([spurious, spurious + 10], axis=1)])
        predictions.append(_pred(pred, rng.random(len(pred))))
        targets.append(_gt(gt))
    return predictions, targets


def test_iou_thresholds_are_exactly_040_to_075() -> None:
    assert iou_thresholds().tolist() == [0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75]
    assert MGCA_IOU_RANGE == (0.40, 0.75, 0.05)
    result = detection_map([_pred(GT, [1.0])], [_gt(GT)])
    assert result["iou_thresholds"] == [0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75]
    assert list(result["ap_by_iou"]) == ["0.40", "0.45", "0.50", "0.55", "0.60", "0.65", "0.70", "0.75"]
    extra = detection_map([_pred(GT, [1.0])], [_gt(GT)], iou_list=(0.5, 0.9))
    assert list(extra["ap_by_iou"]) == ["0.40", "0.45", "0.50", "0.55", "0.60", "0.65", "0.70", "0.75", "0.90"]
    assert "0.40-0.75 step 0.05 (8 thresholds" in detection_map_rule()


def test_perfect_predictions_score_one() -> None:
    targets = [
        _gt([[0, 0, 10, 10], [20, 20, 40, 35]]),
        _gt(GT),
        _gt(np.zeros((0, 4))),  # no box, no prediction
        _gt([[5, 5, 25, 15]]),
    ]
    predictions = [_pred(t["box"], np.ones(len(t["box"]))) for t in targets]
    predictions[1] = {k: torch.as_tensor(v) for k, v in predictions[1].items()}  # tensors are accepted too
    result = detection_map(predictions, targets)
    assert result["map"] == pytest.approx(1.0, abs=EXACT)
    assert result["map50"] == pytest.approx(1.0, abs=EXACT)
    assert result["mar"] == pytest.approx(1.0, abs=EXACT)
    assert all(v == pytest.approx(1.0, abs=EXACT) for v in result["ap_by_iou"].values())
    assert (result["images"], result["positives"], result["gt_boxes"], result["pred_boxes"]) == (4, 3, 4, 4)


# gt (10, 20, 30, 60) is 20 wide and 40 high; the prediction is the same box moved dx along x, so
# intersection = (20 - dx) * 40, union = 2 * 800 - (20 - dx) * 40 and IoU = (20 - dx) / (20 + dx).
# One ground truth, one detection: AP = 1 at the thresholds <= IoU, 0 above; map = (passing thresholds) / 8.
@pytest.mark.parametrize(
    ("dx", "iou", "passing", "map50"),
    [
        (4.0, 16 / 24, 6, 1.0),  # 0.667: 0.40 ... 0.65 pass
        (4.5, 15.5 / 24.5, 5, 1.0),  # 0.633: 0.40 ... 0.60 pass
        (8.0, 12 / 28, 1, 0.0),  # 0.429: only 0.40 passes
        (10.0, 10 / 30, 0, 0.0),  # 0.333: none
    ],
)
def test_shifted_box_passes_the_thresholds_below_its_iou(dx: float, iou: float, passing: int, map50: float) -> None:
    shifted = GT + np.array([[dx, 0.0, dx, 0.0]])
    assert float(box_iou(shifted.astype(np.float32), GT.astype(np.float32))[0, 0]) == pytest.approx(iou, abs=1e-6)
    result = detection_map([_pred(shifted, [0.9])], [_gt(GT)])
    assert result["map"] == pytest.approx(passing / 8, abs=EXACT)
    assert result["map50"] == pytest.approx(map50, abs=EXACT)
    expected = [1.0] * passing + [0.0] * (8 - passing)
    assert list(result["ap_by_iou"].values()) == pytest.approx(expected, abs=EXACT)


def test_false_positive_ranked_above_true_positives() -> None:
    # Three images with one box each (A, B, C) and one image D without ground truth. Detections by score:
    # A 0.95 (TP), D 0.90 (FP: an image without ground truth), B 0.80 (TP); C is missed. With 3 ground-truth
    # boxes: recall = 1/3, 1/3, 2/3; precision = 1, 1/2, 2/3; envelope (max to the right) = 1, 2/3, 2/3.
    # Recall points 0.00..0.33 (34 points) reach rank 1 → 1; 0.34..0.66 (33 points) reach rank 3 → 2/3;
    # 0.67..1.00 (34 points) are never reached → 0. AP = (34 * 1 + 33 * 2/3) / 101 = 56 / 101 at every threshold.
    box = [[0.0, 0.0, 10.0, 10.0]]
    targets = [_gt(box), _gt(box), _gt(box), _gt(np.zeros((0, 4)))]
    predictions = [_pred(box, [0.95]), _pred(box, [0.80]), _pred(np.zeros((0, 4)), []), _pred(box, [0.90])]
    result = detection_map(predictions, targets)
    assert result["map"] == pytest.approx(56 / 101, abs=EXACT)
    assert result["map50"] == pytest.approx(56 / 101, abs=EXACT)
    assert result["mar"] == pytest.approx(2 / 3, abs=1e-6)
    # without the false positive: envelope 1 up to recall 2/3 → 67 points → 67 / 101
    predictions[3] = _pred(np.zeros((0, 4)), [])
    assert detection_map(predictions, targets)["map"] == pytest.approx(67 / 101, abs=EXACT)


def test_max_detections_keeps_the_highest_scores_per_image() -> None:
    # one image: a far-away detection scored 0.9 (FP) and the exact box scored 0.8 (TP).
    # All kept: recall 0, 1; precision 0, 1/2; envelope 1/2, 1/2 → AP = 0.5. One kept: only the FP → AP = 0.
    predictions = [_pred([[40, 40, 50, 50], [10, 20, 30, 60]], [0.9, 0.8])]
    assert detection_map(predictions, [_gt(GT)])["map"] == pytest.approx(0.5, abs=EXACT)
    assert detection_map(predictions, [_gt(GT)], max_detections=1)["map"] == 0.0


def test_no_predictions_score_zero() -> None:
    targets = [_gt(GT), _gt(np.zeros((0, 4))), _gt([[0, 0, 5, 5], [8, 8, 12, 12]])]
    predictions = [_pred(np.zeros((0, 4)), []) for _ in targets]
    result = detection_map(predictions, targets)
    assert result["map"] == 0.0 and result["map50"] == 0.0 and result["mar"] == 0.0
    assert (result["gt_boxes"], result["pred_boxes"]) == (3, 0)


def test_no_ground_truth_at_all_is_undefined_not_an_error() -> None:
    targets = [_gt(np.zeros((0, 4))), _gt(np.zeros((0, 4)))]
    predictions = [_pred(GT, [0.7]), _pred(np.zeros((0, 4)), [])]
    result = detection_map(predictions, targets)
    assert result["map"] is None and result["map50"] is None and result["mar"] is None
    assert set(result["ap_by_iou"].values()) == {None}
    assert (result["images"], result["gt_boxes"], result["pred_boxes"]) == (2, 0, 1)
    assert detection_map([], [])["map"] is None
    metric = DetectionMAP()
    metric.update((predictions, targets))
    assert np.isnan(metric.compute())


def test_a_class_without_ground_truth_is_left_out() -> None:
    # class 1 is only predicted (a false positive of a class nobody has): MONAI would average its -1 "AP" in
    predictions = [_pred([[10, 20, 30, 60], [0, 0, 5, 5]], [0.9, 0.99], labels=[0, 1])]
    result = detection_map(predictions, [_gt(GT)], num_classes=2, class_names=["opacity", "other"])
    assert result["map"] == pytest.approx(1.0, abs=EXACT)
    assert result["ap_by_class"]["opacity"] == pytest.approx(1.0, abs=EXACT)
    assert result["ap_by_class"]["other"] is None
    # two classes with ground truth are averaged: class 0 found (AP 1), class 1 missed (AP 0)
    targets = [_gt([[10, 20, 30, 60], [0, 0, 5, 5]], labels=[0, 1])]
    both = detection_map([_pred(GT, [0.9])], targets, num_classes=2)
    assert both["map"] == pytest.approx(0.5, abs=EXACT)
    assert both["ap_by_class"] == pytest.approx({"0": 1.0, "1": 0.0}, abs=EXACT)
    with pytest.raises(ValueError, match="class indices"):
        detection_map([_pred(GT, [0.9], labels=[2])], [_gt(GT)], num_classes=2)


def test_detection_map_metric_on_an_ignite_engine() -> None:
    predictions, targets = _random_split(seed=0, images=7)
    batches = [
        [_item(t, p) for t, p in zip(targets[i : i + 3], predictions[i : i + 3], strict=True)] for i in range(0, 7, 3)
    ]
    assert [len(b) for b in batches] == [3, 3, 1]
    engine = Engine(lambda engine, batch: batch)
    DetectionMAP().attach(engine, "map")
    DetectionMAP(metric="map50").attach(engine, "map50")
    engine.run(batches)
    expected = detection_map(predictions, targets)
    assert 0.05 < expected["map"] < 0.95  # a non-trivial value
    assert engine.state.metrics["map"] == pytest.approx(expected["map"], abs=1e-12)
    assert engine.state.metrics["map50"] == pytest.approx(expected["map50"], abs=1e-12)

    # a second run on other data: the metric is reset at the epoch start
    predictions2, targets2 = _random_split(seed=1, images=4)
    engine.run([[_item(t, p) for t, p in zip(targets2, predictions2, strict=True)]])
    expected2 = detection_map(predictions2, targets2)
    assert expected2["map"] != pytest.approx(expected["map"], abs=1e-6)
    assert engine.state.metrics["map"] == pytest.approx(expected2["map"], abs=1e-12)
    with pytest.raises(ValueError, match="metric must be one of"):
        DetectionMAP(metric="auc")


def test_detection_output_accepts_a_dict_of_per_image_lists() -> None:
    predictions, targets = _random_split(seed=2, images=3)
    items = [_item(t, p) for t, p in zip(targets, predictions, strict=True)]
    batch = {key: [item[key] for item in items] for key in items[0]}
    batch["image"] = torch.stack([item["image"] for item in items])
    from_list, from_dict = detection_output(items), detection_output(batch)
    assert [len(part) for part in from_dict] == [3, 3, 3]
    for a, b in zip(from_list[0] + from_list[1], from_dict[0] + from_dict[1], strict=True):
        assert all(torch.equal(torch.as_tensor(a[k]), torch.as_tensor(b[k])) for k in a)
    with pytest.raises(KeyError, match="pred_score"):
        detection_output([{k: v for k, v in items[0].items() if k != "pred_score"}])


def test_detection_report_writes_metrics_and_overlays(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    predictions, targets = _random_split(seed=3, images=5)
    items = [_item(t, p) for t, p in zip(targets, predictions, strict=True)]
    batches = [items[:3], items[3:]]
    engine = Engine(lambda engine, batch: batch)
    DetectionMAP().attach(engine, "val_map")
    report = DetectionReport(
        tmp_path / "eval", extra={"seed": 7}, split="test", num_overlays=3, overlay_score_threshold=None
    )
    report.attach(engine)
    with caplog.at_level(logging.INFO):
        engine.run(batches)
    expected = detection_map(predictions, targets, class_names=["Lung Opacity"])
    text = (tmp_path / "eval" / "metrics.json").read_text()
    written = json.loads(text)
    assert written["map"] == pytest.approx(expected["map"], abs=1e-12)
    assert written["map50"] == pytest.approx(expected["map50"], abs=1e-12)
    assert written["metrics"] == {"map": written["map"], "map50": written["map50"]}
    assert written["ap_by_iou"] == pytest.approx(expected["ap_by_iou"], abs=1e-12)
    assert written["ap_by_class"] == pytest.approx({"Lung Opacity": expected["map"]}, abs=1e-12)
    assert (written["images"], written["gt_boxes"], written["pred_boxes"]) == (
        5,
        expected["gt_boxes"],
        expected["pred_boxes"],
    )
    assert written["engine_metrics"]["val_map"] == pytest.approx(expected["map"], abs=1e-12)
    assert written["split"] == "test" and written["seed"] == 7
    assert written["iou_rule"] == detection_map_rule() and "MGCA" in written["iou_rule"]
    assert written["overlays"] == ["overlays/test_00.png", "overlays/test_01.png", "overlays/test_02.png"]
    assert sorted(p.name for p in (tmp_path / "eval" / "overlays").iterdir()) == [
        "test_00.png",
        "test_01.png",
        "test_02.png",
    ]
    assert Image.open(tmp_path / "eval" / "overlays" / "test_00.png").size == (64, 48)
    assert SECRET_NAME not in text and "patient" not in text and "/data" not in text
    logged = [r.getMessage() for r in caplog.records if "test split" in r.getMessage()]
    assert len(logged) == 1 and "(5 images" in logged[0] and f"{expected['map']:.4f}" in logged[0]
    assert SECRET_NAME not in caplog.text

    engine.run([batches[1]])  # reset at the epoch start: only the second batch's two images
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["images"] == 2


def test_overlay_boxes_draws_columns_as_x_on_a_non_square_image() -> None:
    # (1, W=40, H=24): the overlay is 24 rows x 40 columns; x is the column, y the row
    image = torch.zeros(1, 40, 24)  # normalised 0 → grey 0.5 → 127
    gt = [[5.0, 3.0, 15.0, 20.0]]  # columns 5..14, rows 3..19
    pred = [[20.0, 2.0, 38.0, 10.0]]  # columns 20..37, rows 2..9
    overlay = overlay_boxes(image, torch.tensor(gt), np.array(pred), line_width=1)
    pixels = np.asarray(overlay)
    assert overlay.size == (40, 24) and pixels.shape == (24, 40, 3)
    green, red, grey = [0, 255, 0], [255, 0, 0], [127, 127, 127]
    for row, col in [(3, 5), (3, 10), (3, 14), (19, 5), (19, 14), (10, 5), (10, 14)]:  # the gt outline
        assert pixels[row, col].tolist() == green, (row, col)
    for row, col in [(2, 20), (2, 30), (2, 37), (9, 20), (9, 37), (6, 20), (6, 37)]:  # the prediction's outline
        assert pixels[row, col].tolist() == red, (row, col)
    for row, col in [(10, 10), (6, 30), (2, 15), (20, 10), (5, 3), (14, 10), (5, 19)]:  # inside, outside, transposed
        assert pixels[row, col].tolist() == grey, (row, col)
    assert (pixels == green).all(axis=2).sum() == 2 * 10 + 2 * (17 - 2)  # one-pixel outline of 10 x 17 pixels

    # a score below the threshold is not drawn; drawn scores add red text
    low = overlay_boxes(image, gt, pred, pred_scores=[0.2], score_threshold=0.5, line_width=1)
    assert not (np.asarray(low) == red).all(axis=2).any()
    scored = np.asarray(overlay_boxes(image, gt, pred, pred_scores=[0.93], line_width=1)).astype(int)
    text = (scored != pixels).any(axis=2)  # the (anti-aliased) digits, inside the box's top edge
    assert text.sum() > 10 and (scored[text, 0] > scored[text, 1]).all()
    assert text[:, :20].sum() == 0 and (scored == red).all(axis=2)[2, 20:38].all()


WORLD = 2


def _worker(rank: int, world: int, store: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        predictions, targets = _random_split(seed=4, images=6)
        mine = [_item(t, p) for k, (t, p) in enumerate(zip(targets, predictions, strict=True)) if k % world == rank]
        engine = Engine(lambda engine, batch: batch)
        DetectionMAP().attach(engine, "map")
        DetectionReport(Path(out_dir) / f"eval{rank}", num_overlays=1).attach(engine)
        engine.run([mine[:2], mine[2:]])
        torch.save({"map": engine.state.metrics["map"]}, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_metric_and_report_gather_across_two_processes(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(WORLD, str(tmp_path / "store"), str(tmp_path)), nprocs=WORLD, join=True)
    predictions, targets = _random_split(seed=4, images=6)
    order = [0, 2, 4, 1, 3, 5]  # rank 0's images, then rank 1's
    expected = detection_map([predictions[k] for k in order], [targets[k] for k in order])
    for rank in range(WORLD):
        assert torch.load(tmp_path / f"rank{rank}.pt")["map"] == pytest.approx(expected["map"], abs=1e-12)
    written = json.loads((tmp_path / "eval0" / "metrics.json").read_text())
    assert written["images"] == 6 and written["map"] == pytest.approx(expected["map"], abs=1e-12)
    assert not (tmp_path / "eval1").exists()  # only rank 0 writes
