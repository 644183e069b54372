"""Prompt sets of zero-shot classification: per class, sentences that state the finding and sentences that deny it.

A :class:`PromptSet` maps each class name to its :class:`ClassPrompts` (``positive`` and ``negative`` sentences).
:class:`~sista_monai.engines.ZeroShotInferer` embeds every sentence with the pretrained text encoder, averages the
normalised embeddings per class and polarity, and scores an image by the softmax of its cosine similarities to
the two means (CheXzero's positive/negative prompt pairs, Tiu et al. 2022, https://doi.org/10.1038/s41551-022-00936-9).

Two sets are built in:

* :data:`DEMO_PROMPTS`, for the demo datalist's ``label_names``, in the phrasing of the demo reports
  (:mod:`sista_monai.data.demo.reports`): the model saw these sentences, or sentences like them, during
  pretraining. ``No Finding`` is included, so that the evaluation covers every demo label: its positive prompts are
  the demo's normal wordings, its negative prompts state one finding each, and their mean stands for "an abnormal
  study".
* :data:`CHEXPERT_PROMPTS`, for the 14 CheXpert observations, in MIMIC-CXR phrasing (``No Finding`` likewise).

A user's JSON file (:func:`load_prompts`) replaces the built-in sets; its classes are the classes scored::

    {"classes": {"Pneumothorax": {"positive": ["Small right apical pneumothorax."],
                                  "negative": ["No pneumothorax."]}}}
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "BUILT_IN_PROMPTS",
    "CHEXPERT_PROMPTS",
    "DEMO_PROMPTS",
    "POLARITIES",
    "ClassPrompts",
    "PromptSet",
    "load_prompts",
    "parse_prompts",
    "resolve_prompts",
]

POLARITIES = ("positive", "negative")
"""The two prompt lists of a class, in the order the classifier stacks them (index 0: positive)."""


@dataclass(frozen=True)
class ClassPrompts:
    """The prompts of one class.

    Attributes:
        positive: sentences stating the finding.
        negative: sentences denying it.
    """

    positive: tuple[str, ...]
    negative: tuple[str, ...]

    def to_dict(self) -> dict[str, list[str]]:
        """``{"positive": [...], "negative": [...]}``, the form of a prompts file."""
        return {"positive": list(self.positive), "negative": list(self.negative)}


@dataclass(frozen=True)
class PromptSet:
    """Class name → :class:`ClassPrompts`, in the order the classes are scored.

    Attributes:
        classes: the prompts of every class (a mapping kept in insertion order).
        source: where the set comes from: ``"demo"``, ``"chexpert"`` or the prompts file.
    """

    classes: Mapping[str, ClassPrompts]
    source: str = "custom"

    @property
    def class_names(self) -> list[str]:
        """The class names, in order."""
        return list(self.classes)

    def select(self, class_names: Sequence[str]) -> PromptSet:
        """The set restricted to ``class_names``, in that order.

        Raises:
            ValueError: a name has no prompts (all such names are listed).
        """
        missing = [name for name in class_names if name not in self.classes]
        if missing:
            raise ValueError(
                f"the {self.source} prompts have no class {missing} (they have {self.class_names}); give `prompts` a "
                'JSON file {"classes": {name: {"positive": [...], "negative": [...]}}} for these classes'
            )
        return PromptSet({name: self.classes[name] for name in class_names}, self.source)

    def to_dict(self) -> dict[str, dict[str, list[str]]]:
        """``{class: {"positive": [...], "negative": [...]}}`` (the ``classes`` object of a prompts file)."""
        return {name: prompts.to_dict() for name, prompts in self.classes.items()}


def _set(classes: Mapping[str, tuple[Sequence[str], Sequence[str]]], source: str) -> PromptSet:
    return PromptSet(
        {name: ClassPrompts(tuple(positive), tuple(negative)) for name, (positive, negative) in classes.items()},
        source,
    )


DEMO_PROMPTS = _set(
    {
        "No Finding": (
            (
                "No acute cardiopulmonary process.",
                "The lungs are clear. Heart size is normal. No pleural effusion or pneumothorax.",
                "Normal chest radiograph.",
            ),
            (
                "There is a patchy opacity in the right lower lobe.",
                "Moderate left pleural effusion.",
                "Small right apical pneumothorax.",
                "Moderate cardiomegaly.",
            ),
        ),
        "Lung Opacity": (
            (
                "There is a patchy opacity in the right lower lobe.",
                "Left lower lobe opacity, concerning for pneumonia.",
                "Patchy opacities are present in the left mid lung.",
                "Right upper lobe airspace opacity is suspicious for infection.",
            ),
            ("No focal consolidation.", "The lungs are clear.", "There is no focal consolidation."),
        ),
        "Consolidation": (
            (
                "There is a dense consolidation in the right lower lobe.",
                "Left lower lobe consolidation concerning for pneumonia.",
                "Focal airspace consolidation is seen in the left upper lobe.",
                "Right middle lobe consolidation.",
            ),
            ("No focal consolidation.", "There is no focal consolidation.", "No focal airspace consolidation is seen."),
        ),
        "Pneumothorax": (
            (
                "There is a small right apical pneumothorax.",
                "Moderate left pneumothorax.",
                "A small left apicolateral pneumothorax is present.",
                "Moderate right-sided pneumothorax with a visible pleural line at the apex.",
            ),
            ("No pneumothorax.", "There is no pneumothorax.", "No pneumothorax is seen."),
        ),
        "Pleural Effusion": (
            (
                "There is a moderate left pleural effusion.",
                "Small right pleural effusion with blunting of the costophrenic angle.",
                "Moderate right pleural effusion.",
                "Small left pleural effusion with a meniscus.",
            ),
            ("No pleural effusion.", "There is no pleural effusion.", "No effusion."),
        ),
        "Cardiomegaly": (
            ("Cardiomegaly.", "The heart is moderately enlarged.", "The cardiac silhouette is enlarged."),
            (
                "Heart size is normal.",
                "The cardiomediastinal silhouette is within normal limits.",
                "No cardiomegaly.",
            ),
        ),
    },
    "demo",
)
"""Prompts for the demo's ``label_names``, in the phrasing of its reports (see the module docstring)."""

CHEXPERT_PROMPTS = _set(
    {
        "No Finding": (
            ("No acute cardiopulmonary process.", "Normal chest radiograph.", "The lungs are clear."),
            (
                "There is a focal consolidation.",
                "There is a pleural effusion.",
                "There is a pneumothorax.",
                "The heart is enlarged.",
            ),
        ),
        "Enlarged Cardiomediastinum": (
            ("The cardiomediastinal silhouette is enlarged.", "The mediastinum is widened."),
            ("The cardiomediastinal silhouette is within normal limits.", "Normal cardiomediastinal silhouette."),
        ),
        "Cardiomegaly": (
            ("Cardiomegaly.", "The heart is enlarged.", "The cardiac silhouette is enlarged."),
            ("Heart size is normal.", "No cardiomegaly."),
        ),
        "Lung Opacity": (
            ("There is an opacity in the lung.", "Patchy airspace opacities are present."),
            ("The lungs are clear.", "No focal opacity."),
        ),
        "Lung Lesion": (
            ("There is a pulmonary nodule.", "A lung mass is present."),
            ("No pulmonary nodules or masses.", "No focal lung lesion."),
        ),
        "Edema": (
            ("There is pulmonary edema.", "Mild pulmonary vascular congestion and interstitial edema."),
            ("No pulmonary edema.", "No evidence of pulmonary edema."),
        ),
        "Consolidation": (
            ("There is a focal consolidation.", "Consolidation in the lower lobe."),
            ("No focal consolidation.", "There is no focal consolidation."),
        ),
        "Pneumonia": (
            ("Findings concerning for pneumonia.", "There is pneumonia."),
            ("No evidence of pneumonia.", "No pneumonia."),
        ),
        "Atelectasis": (
            ("There is bibasilar atelectasis.", "Atelectasis at the lung bases."),
            ("No atelectasis.", "No evidence of atelectasis."),
        ),
        "Pneumothorax": (
            ("There is a pneumothorax.", "Small apical pneumothorax."),
            ("No pneumothorax.", "There is no pneumothorax."),
        ),
        "Pleural Effusion": (
            ("There is a pleural effusion.", "Small bilateral pleural effusions."),
            ("No pleural effusion.", "There is no pleural effusion."),
        ),
        "Pleural Other": (
            ("There is pleural thickening.", "Pleural scarring is noted."),
            ("No pleural abnormality.", "No pleural thickening."),
        ),
        "Fracture": (
            ("There is a rib fracture.", "An acute fracture is seen."),
            ("No acute osseous abnormality.", "No fracture."),
        ),
        "Support Devices": (
            (
                "An endotracheal tube is in place.",
                "A right internal jugular central venous catheter is present.",
                "A pacemaker is seen.",
            ),
            ("No support devices.", "No lines or tubes."),
        ),
    },
    "chexpert",
)
"""Prompts for the 14 CheXpert observations, in MIMIC-CXR phrasing."""

BUILT_IN_PROMPTS: dict[str, PromptSet] = {"demo": DEMO_PROMPTS, "chexpert": CHEXPERT_PROMPTS}
"""The built-in prompt sets by name (the values of the bundle key ``prompts`` besides a file)."""


def _problems_of_class(name: str, entry: Any) -> list[str]:
    if not isinstance(entry, Mapping):
        return [f"class {name!r} must be an object with 'positive' and 'negative' lists, got {type(entry).__name__}"]
    problems = []
    for polarity in POLARITIES:
        prompts = entry.get(polarity)
        if prompts is None:
            problems.append(f"class {name!r} has no {polarity!r} prompt list")
        elif not isinstance(prompts, list) or not prompts:
            problems.append(f"class {name!r}: {polarity!r} must be a non-empty list of sentences")
        else:
            empty = [i for i, p in enumerate(prompts) if not isinstance(p, str) or not p.strip()]
            if empty:
                problems.append(f"class {name!r}: {polarity!r} prompts {empty} are empty or not text")
    unknown = sorted(set(entry) - set(POLARITIES))
    if unknown:
        problems.append(f"class {name!r} has unknown keys {unknown} (expected {list(POLARITIES)})")
    return problems


def parse_prompts(content: Any, source: str = "prompts") -> PromptSet:
    """A :class:`PromptSet` from the parsed content of a prompts file.

    Args:
        content: ``{"classes": {name: {"positive": [...], "negative": [...]}, ...}}``.
        source: how errors (and the set) name the file.

    Raises:
        ValueError: the content does not have that form; every problem is listed in one message.
    """
    if not isinstance(content, Mapping) or not isinstance(content.get("classes"), Mapping):
        raise ValueError(
            f'{source}: expected an object {{"classes": {{name: {{"positive": [...], "negative": [...]}}}}}}'
            + (f", got the keys {sorted(content)}" if isinstance(content, Mapping) else "")
        )
    classes = content["classes"]
    problems = [] if classes else ["'classes' is empty"]
    problems += [problem for name, entry in classes.items() for problem in _problems_of_class(str(name), entry)]
    if problems:
        raise ValueError(f"{source}: " + "; ".join(problems))
    return _set(
        {
            str(name): (
                [p.strip() for p in entry["positive"]],
                [p.strip() for p in entry["negative"]],
            )
            for name, entry in classes.items()
        },
        source,
    )


def load_prompts(path: str | os.PathLike) -> PromptSet:
    """Read a user's prompts file (see the module docstring); its classes replace the built-in sets.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not UTF-8 JSON, or not a prompts object (the message names the file and every
            problem).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompts file {path} does not exist")
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not a UTF-8 text file ({err.reason})") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not JSON ({err.msg} at line {err.lineno}, column {err.colno})") from None
    return parse_prompts(content, str(path))


def resolve_prompts(prompts: str | os.PathLike | None, label_names: Sequence[str] | None = None) -> PromptSet:
    """The prompt set of a run: the bundle key ``prompts`` read against the classes the datalist labels.

    Args:
        prompts: ``None``: the built-in set that covers every one of ``label_names`` (the demo set first; the
            demo set in full without ``label_names``); ``"demo"`` or ``"chexpert"``: that built-in set; otherwise
            the path of a prompts file (:func:`load_prompts`).
        label_names: the datalist's label names when evaluating (``None`` when classifying a folder of images).

    Returns:
        A built-in set restricted to ``label_names`` in their order (in full without them); a file's set as it is,
        its classes in the file's order.

    Raises:
        ValueError: a built-in set lacks one of ``label_names``, or a class of a prompts file is not one of them
            (evaluation needs a label for every class scored).
    """
    if prompts is None:
        if label_names is None:
            return DEMO_PROMPTS
        for built_in in BUILT_IN_PROMPTS.values():
            if all(name in built_in.classes for name in label_names):
                return built_in.select(list(label_names))
        uncovered = [name for name in label_names if name not in DEMO_PROMPTS.classes]
        raise ValueError(
            f"no built-in prompt set covers the label names {list(label_names)} (the demo set lacks {uncovered}; "
            f"built-in sets: {sorted(BUILT_IN_PROMPTS)}); give `prompts` a JSON file of prompts for your classes"
        )
    key = os.fspath(prompts)
    if key in BUILT_IN_PROMPTS:
        built_in = BUILT_IN_PROMPTS[key]
        return built_in if label_names is None else built_in.select(list(label_names))
    prompt_set = load_prompts(key)
    unlabelled = [name for name in prompt_set.class_names if label_names is not None and name not in label_names]
    if unlabelled:
        raise ValueError(
            f"{key}: the classes {unlabelled} are not labelled in the datalist (its label_names: {list(label_names or [])}); "
            "evaluation needs a label for every class scored"
        )
    return prompt_set
