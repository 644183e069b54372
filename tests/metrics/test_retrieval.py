"""Retrieval metrics on hand-computed cases: fair ties, identical report texts, semantic precision@K."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from sista_monai.metrics import (
    RetrievalRecall,
    SemanticPrecision,
    retrieval_recall,
    semantic_chance,
    semantic_precision,
    text_groups,
)


def _scores(rows: list[list[float]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Image and text embeddings whose cosine matrix ranks like ``rows`` (texts are the basis vectors)."""
    scores = torch.tensor(rows, dtype=torch.float64)
    return scores, torch.eye(scores.shape[1], dtype=torch.float64)


def test_perfect_pairs_recall_one() -> None:
    eye = torch.eye(3)
    assert retrieval_recall(eye, eye, (1, 5)) == {1: 1.0, 5: 1.0}
    assert retrieval_recall(eye, eye, (1,), "report_to_image") == {1: 1.0}


def test_constant_embedding_scores_exactly_chance() -> None:
    constant = torch.ones(4, 3)
    recall = retrieval_recall(constant, constant, (1, 2, 5))
    assert recall[1] == pytest.approx(1 / 4) and recall[2] == pytest.approx(2 / 4) and recall[5] == 1.0


def test_ties_scored_by_expected_rank() -> None:
    # query 0: two candidates strictly better (g = 2), one tied (e = 1): R@1 = 0, R@3 = (3 - 2) / 2, R@4 = 1
    image, text = _scores([[0.5, 0.9, 0.8, 0.5], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    recall = retrieval_recall(image, text, (1, 3, 4))
    assert recall[1] == pytest.approx(3 / 4)  # queries 1-3 are perfect
    assert recall[3] == pytest.approx((0.5 + 3) / 4)
    assert recall[4] == pytest.approx(1.0)


def test_identical_texts_are_tied_not_misses() -> None:
    # report 1 repeats report 0's text; float noise puts it a hair above the true report for image 0
    image, text = _scores([[0.90, 0.9000001, 0.1], [0.9, 0.9, 0.1], [0.1, 0.1, 0.9]])
    strict = retrieval_recall(image, text, (1,))[1]
    fair = retrieval_recall(image, text, (1,), groups=torch.tensor([0, 0, 1]))[1]
    # image 0: without groups one candidate is better -> 0; with groups it is tied -> 1/2. image 1: an exact tie
    # with report 0 -> 1/2 either way. image 2: a hit.
    assert strict == pytest.approx((0 + 0.5 + 1) / 3)
    assert fair == pytest.approx((0.5 + 0.5 + 1) / 3)


def test_one_item_and_shape_errors() -> None:
    one = torch.ones(1, 4)
    assert retrieval_recall(one, one, (1, 5)) == {1: 1.0, 5: 1.0}
    with pytest.raises(ValueError, match="must both be"):
        retrieval_recall(torch.ones(2, 3), torch.ones(3, 3))
    with pytest.raises(ValueError, match="direction"):
        retrieval_recall(one, one, direction="sideways")


def test_text_groups_ignore_padding() -> None:
    ids = torch.tensor([[2, 7, 3, 0], [2, 7, 3, 5], [2, 7, 3, 0], [2, 8, 3, 0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 1, 0]])
    groups = text_groups(ids, mask)
    assert groups[0] == groups[1] == groups[2] and groups[3] != groups[0]
    assert len(set(text_groups(ids).tolist())) == 3  # without the mask the padding differs


def test_semantic_precision_hand_computed() -> None:
    labels = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])  # sets A, A, B, B
    image, text = _scores(
        [
            [0.9, 0.8, 0.7, 0.1],  # top 2: t0 (A), t1 (A) -> 1
            [0.5, 0.5, 0.5, 0.9],  # t3 (B), then one slot among three tied (two A) -> (0 + 2/3) / 2
            [0.1, 0.2, 0.9, 0.3],  # t2 (B), t3 (B) -> 1
            [0.9, 0.8, 0.2, 0.1],  # t0, t1 (A, A) for a B query -> 0
        ]
    )
    assert semantic_precision(image, text, labels, k=2) == pytest.approx((1 + 1 / 3 + 1 + 0) / 4)
    assert semantic_chance(labels) == pytest.approx(0.5)
    assert semantic_precision(image, text, labels, k=10) == pytest.approx(0.5)  # K > N: all candidates
    with pytest.raises(ValueError, match="k must be at least 1"):
        semantic_precision(image, text, labels, k=0)


def test_ignite_metrics_match_the_functions() -> None:
    image, text = _scores([[0.90, 0.9000001, 0.1], [0.9, 0.9, 0.1], [0.1, 0.1, 0.9]])
    ids = torch.tensor([[2, 5, 3], [2, 5, 3], [2, 6, 3]])
    labels = torch.tensor([[1.0], [1.0], [0.0]])
    recall, precision, chance = RetrievalRecall(k=1), SemanticPrecision(k=2), SemanticPrecision(k=2, report="chance")
    for metric in (recall, precision, chance):
        metric.reset()
    for rows in (slice(0, 2), slice(2, 3)):  # two batches
        output = {
            "pred": SimpleNamespace(image_emb=image[rows], text_emb=text[rows]),
            "label": {"input_ids": ids[rows], "attention_mask": torch.ones_like(ids[rows]), "labels": labels[rows]},
        }
        for metric in (recall, precision, chance):
            metric.update(metric._output_transform(output))
    assert recall.compute() == pytest.approx((0.5 + 0.5 + 1) / 3)
    assert precision.compute() == pytest.approx(semantic_precision(image, text, labels, k=2))
    assert chance.compute() == pytest.approx((2 / 3 + 2 / 3 + 1 / 3) / 3)
