"""Image-free downstream baselines on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from sista_monai.metrics.baselines import constant_mask, detection_baseline, segmentation_baselines


def _mask(*pixels: tuple[int, int], size: int = 4) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    for y, x in pixels:
        mask[y, x] = True
    return mask


SQUARE = ((0, 0), (0, 1), (1, 0), (1, 1))


def test_constant_mask_picks_the_frequency_with_the_best_training_dice():
    # two squares and a square with one far pixel: frequency 1 on the square, 1/3 on the far pixel.
    # t = 1/3 (5 px): Dice 8/9, 8/9, 1 -> 0.926; t = 1 (4 px): Dice 1, 1, 8/9 -> 0.963
    square, square_plus = _mask(*SQUARE), _mask(*SQUARE, (3, 3))
    mask, t = constant_mask(np.stack([square, square, square_plus, _mask()]))
    assert t == 1.0
    np.testing.assert_array_equal(mask, square)


def test_constant_mask_ties_take_the_lowest_frequency():
    # frequency 1 on the square, 1/2 on the far pixel; both thresholds give a mean Dice of (1 + 8/9) / 2
    mask, t = constant_mask(np.stack([_mask(*SQUARE), _mask(*SQUARE, (3, 3))]))
    assert t == 0.5
    np.testing.assert_array_equal(mask, _mask(*SQUARE, (3, 3)))


def test_constant_mask_without_a_positive_training_mask_is_empty():
    mask, t = constant_mask(np.stack([_mask(), _mask()]))
    assert t is None and not mask.any()


def test_segmentation_baselines_scores():
    training = np.stack([_mask(*SQUARE), _mask(*SQUARE), _mask()])
    # test: the square, a 2-pixel half of it, two empty images
    test = np.stack([_mask(*SQUARE), _mask((0, 0), (0, 1)), _mask(), _mask()])
    result = segmentation_baselines(training, test)
    empty = result["all_empty"]
    assert empty["mean_dice"] == pytest.approx(0.5) and empty["positive_dice"] == 0.0  # 2 of 4 images empty
    constant = result["constant_mask"]
    assert constant["threshold"] == 1.0
    # Dice 1 on the square, 2*2/(4+2) = 2/3 on the half, 0 on each empty image (a mask where there is none)
    assert constant["positive_dice"] == pytest.approx((1 + 2 / 3) / 2)
    assert constant["mean_dice"] == pytest.approx((1 + 2 / 3) / 4)
    assert result["best_mean_dice"] == pytest.approx(0.5)
    assert constant["n"] == 4 and constant["positives"] == 2


def test_segmentation_baselines_without_positive_training_masks_equal_all_empty():
    test = np.stack([_mask(*SQUARE), _mask(), _mask()])
    result = segmentation_baselines(np.stack([_mask()]), test)
    assert result["constant_mask"]["threshold"] is None
    assert (
        result["constant_mask"]["mean_dice"] == pytest.approx(result["all_empty"]["mean_dice"]) == pytest.approx(2 / 3)
    )


def test_segmentation_baselines_reject_bad_input():
    with pytest.raises(ValueError, match="no test mask"):
        segmentation_baselines(np.stack([_mask()]), np.zeros((0, 4, 4)))
    with pytest.raises(ValueError, match="differ in size"):
        segmentation_baselines(np.zeros((1, 3, 3)), np.stack([_mask()]))


A, B = [0, 0, 10, 10], [20, 20, 10, 10]  # disjoint boxes; with A twice in training A scores 2/3 and B 1/3


def test_detection_baseline_finds_the_box_where_training_boxes_cluster():
    result = detection_baseline([[A], [A], [B], []], [[A]])
    assert result["boxes"] == 3
    assert result["map"] == pytest.approx(1.0)  # the first detection (A) is right


def test_detection_baseline_ranks_the_rare_box_last():
    # detections A, A, B on the one image with B: the hit comes third, precision 1/3 at recall 1
    assert detection_baseline([[A], [A], [B]], [[B]])["map"] == pytest.approx(1 / 3)
    # two detections kept: B is never predicted
    assert detection_baseline([[A], [A], [B]], [[B]], max_detections=2)["map"] == pytest.approx(0.0)


def test_detection_baseline_without_training_boxes_predicts_nothing():
    result = detection_baseline([[], []], [[A], []])
    assert result["boxes"] == 0 and result["map"] == pytest.approx(0.0)
