"""The demo's split by patient and its nested label fractions, drawn with the project's one split algorithm.

Whole patients are cut from a seeded order at the 70/15/15 ends (:func:`sista_monai.data.splits.split_ends`,
:func:`~sista_monai.data.splits.assign_in_order`), and the label fractions are prefixes of one seeded order
of the training studies (:func:`~sista_monai.data.splits.nested_prefixes`), as in the released RSNA and SIIM
splits. What stays the demo's own is fixed by its published bytes: its orders come from its numpy random
streams and its ends are Python's ``round`` of float shares; the fraction order puts one positive and one
negative study of each task first, and a subset holds at least :data:`_MIN_SUBSET` studies.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from ..splits import DATALIST_KEYS, assign_in_order, nested_prefixes, split_ends
from .plan import _STREAM_SPLIT, _STREAM_SUBSETS, StudyPlan, _rng

_SPLIT_FRACTIONS = (0.70, 0.15, 0.15)
_LABEL_FRACTIONS = {"training_1": 0.01, "training_10": 0.10}
_MIN_SUBSET = 8


def _split_patients(plans: Sequence[StudyPlan], seed: int) -> dict[str, str]:
    """Study id -> datalist split key, cutting whole patients in a seeded order at the 70/15/15 study counts."""
    counts = Counter(p.patient for p in plans)
    order = [int(patient) for patient in _rng(seed, _STREAM_SPLIT).permutation(sorted(counts))]
    ends = split_ends(len(plans), _SPLIT_FRACTIONS, rounding=round)
    split_of_patient = assign_in_order(order, ends, counts)
    return {p.study_id: DATALIST_KEYS[split_of_patient[p.patient]] for p in plans}


def _label_subsets(training: Sequence[StudyPlan], seed: int) -> dict[str, list[str]]:
    """Nested label-fraction subsets of the training split (1 % within 10 % within 100 %).

    A seeded order of the training studies, with the first opacity-positive, opacity-negative,
    pneumothorax-positive and pneumothorax-negative studies moved to the front so that every subset of at
    least :data:`_MIN_SUBSET` items has both classes of the classification, detection and segmentation
    tasks; each subset is a prefix of that order.
    """
    order = [training[int(i)] for i in _rng(seed, _STREAM_SUBSETS).permutation(len(training))]
    front: list[StudyPlan] = []
    for label, wanted in ((1, 1), (1, 0), (3, 1), (3, 0)):
        for plan in order:
            if plan.labels()[label] == wanted:
                if plan not in front:
                    front.append(plan)
                break
    order = front + [p for p in order if p not in front]
    counts = {
        key: min(len(order), max(_MIN_SUBSET, math.ceil(fraction * len(order))))
        for key, fraction in _LABEL_FRACTIONS.items()
    }
    return {key: [p.study_id for p in plans] for key, plans in nested_prefixes(order, counts).items()}
