"""Counterfactual grounding: does a word's best patch follow its finding when only the image changes?

The lesion pointing game (:mod:`.grounding`) can be won from the text alone when reports say where each finding
is: a pointer that reads the word and the zone/side words of its sentence, never the image, beats the image-free
prior by far (METHOD.md §7). The counterfactual game removes that route. Each item pairs a study with a *twin*
rendered from the same plan with one finding moved (another lung zone, the other side), identical patient,
exposure and noise, and **the original report kept** (:mod:`sista_monai.data.demo.counterfactual`). A trial is a
word of the moved finding's lesion class in that report (the lesion game's trial, scored against the moved
finding's own box); it *follows* when the word's most similar patch lies inside the finding's box in the original
**and** inside its moved box in the twin. Any pointer that never sees the image gives one patch for both images,
so it follows only where the two boxes share a patch (the boxes are kept apart when the twins are made): its
rate is near 0 by construction, and computed here for the image-free prior and the text pointer, not assumed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from monai.utils import IgniteInfo, min_version, optional_import

from .evaluator_output import _output
from .grounding import (
    PointingTrials,
    _hits,
    fit_pointing_prior,
    fit_text_pointer,
    patch_cells,
    pointed_patches,
    pointing_trials,
    prior_patches,
    text_pointer_patches,
    training_trials,
)

if TYPE_CHECKING:
    from ignite.metrics import Metric
    from ignite.metrics.metric import reinit__is_reduced
else:
    Metric, _ = optional_import("ignite.metrics", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Metric")
    reinit__is_reduced, _ = optional_import(
        "ignite.metrics.metric", IgniteInfo.OPT_IMPORT_VERSION, min_version, "reinit__is_reduced"
    )

__all__ = ["CounterfactualGrounding", "counterfactual_follow", "summarise_follow"]

POINTERS = ("model", "prior", "text_pointer")
"""The pointers scored: the model, the image-free prior and the text pointer (:mod:`.grounding`)."""


def counterfactual_follow(
    original: PointingTrials, twin_cells: torch.Tensor, original_patch: torch.Tensor, twin_patch: torch.Tensor
) -> torch.Tensor:
    """``(N,)`` bool: whether each trial's pointer hits the finding's box in the original and the moved box in the twin.

    Args:
        original: the trials on the original images (:func:`~.grounding.pointing_trials` of the lesion game, whose
            truth is the moved finding's original box).
        twin_cells: ``(N, P)`` bool, the patches inside the moved finding's box in each trial's twin.
        original_patch: ``(N,)`` the pointer's patch in the original.
        twin_patch: ``(N,)`` the pointer's patch in the twin (a pointer that never sees the image gives
            ``original_patch`` again).
    """
    return _hits(original_patch, original.cells) & _hits(twin_patch, twin_cells)


def summarise_follow(
    follows: Mapping[str, Sequence[bool]], classes: Sequence[int], class_names: Sequence[str]
) -> dict[str, Any]:
    """The ``grounding.counterfactual`` block from per-trial outcomes.

    Args:
        follows: ``{pointer: per-trial outcomes}`` for the pointers of :data:`POINTERS`, each in trial order.
        classes: the lesion class index of every trial.
        class_names: the class names, by index.

    Returns:
        ``follow_rate`` (the model's), ``prior``, ``text_pointer`` (the pointers that never see the image),
        ``trials`` and ``per_finding``: ``{class name: {"follow_rate", "prior", "text_pointer", "trials"}}`` for the
        classes with trials. Rates are NaN without trials.
    """

    def rates(selected: list[int]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for pointer in POINTERS:
            values = [bool(follows[pointer][k]) for k in selected]
            out["follow_rate" if pointer == "model" else pointer] = (
                sum(values) / len(values) if values else float("nan")
            )
        out["trials"] = len(selected)
        return out

    summary = rates(list(range(len(classes))))
    summary["per_finding"] = {
        name: rates([k for k, c in enumerate(classes) if c == index])
        for index, name in enumerate(class_names)
        if index in classes
    }
    return summary


class CounterfactualGrounding(Metric):
    """Ignite metric: the counterfactual grounding block (:func:`summarise_follow`) of a pretrained SISTA model.

    Attached to the test evaluator, it runs ``network`` itself on its own ``data`` (the counterfactual pairs) when
    the evaluation completes; its ``update`` takes nothing from the evaluator's batches. ``compute`` returns a dict,
    which Ignite stores under the metric's name (and each key beside it).

    Args:
        network: the SISTA model (``network(image, input_ids, attention_mask, word_mask, word_start)`` gives a
            :class:`~sista_monai.networks.SISTAOutput`); run in eval mode without gradient, its mode restored.
        data: batches of counterfactual pairs (e.g. a DataLoader): the report keys (``input_ids``, ``attention_mask``,
            ``word_mask``, ``word_start``, ``lesion_word``, ``sentence_id``, ``pointing_mask``), ``image`` and
            ``lesion_mask`` of the original (the moved finding's box only) and ``twin_image``/``twin_lesion_mask`` of
            the twin, in the network input's geometry. ``None`` (no twins, e.g. real data): every rate NaN, 0 trials.
        prior_data: the training split's batches, with the lesion game's keys and ``sentence_id``/``pointing_mask``:
            the image-free prior and the text pointer are fitted on them.
        class_names: the lesion class names in channel order (``sista_monai.transforms.LESION_CLASSES``).
        device: where the network runs (default: the device of its first parameter, the CPU without one).

    Under ``torchrun`` every rank evaluates all pairs (they are few) and reports the same figures.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        data: Iterable[Mapping[str, Any]] | None,
        prior_data: Iterable[Mapping[str, Any]],
        class_names: Sequence[str] = ("opacity", "pneumothorax", "effusion"),
        device: str | torch.device | None = None,
        output_transform: Callable[[Any], Any] = _output,
    ) -> None:
        self.network, self.data, self.prior_data = network, data, prior_data
        self.class_names = tuple(class_names)
        self.run_device = device
        self._pointers: dict[tuple[int, int], tuple[Any, Any]] = {}
        super().__init__(output_transform=output_transform, device="cpu")

    @reinit__is_reduced
    def reset(self) -> None:
        pass

    @reinit__is_reduced
    def update(self, output: Any) -> None:
        pass

    def _fitted(self, patch_grid: tuple[int, int]) -> tuple[Any, Any]:
        if patch_grid not in self._pointers:
            trials = training_trials(self.prior_data, "lesion", patch_grid)
            self._pointers[patch_grid] = (fit_pointing_prior(trials), fit_text_pointer(trials))
        return self._pointers[patch_grid]

    def _forward(self, image: torch.Tensor, batch: Mapping[str, Any], device: torch.device) -> Any:
        text = [batch.get(k) for k in ("input_ids", "attention_mask", "word_mask", "word_start")]
        text = [None if t is None else torch.as_tensor(t).to(device) for t in text]
        if text[2] is not None:
            text[2] = text[2].bool()
        return self.network(torch.as_tensor(image).to(device), *text)

    def evaluate(self) -> tuple[dict[str, list[bool]], list[int]]:
        """Per-trial outcomes of every pointer and the trials' lesion classes, over all of ``data``."""
        follows: dict[str, list[bool]] = {pointer: [] for pointer in POINTERS}
        classes: list[int] = []
        if self.data is None:
            return follows, classes
        device = torch.device(self.run_device or next(self.network.parameters(), torch.empty(0)).device)
        was_training = self.network.training
        self.network.eval()
        try:
            with torch.no_grad(), torch.random.fork_rng(devices=[]):
                for batch in self.data:
                    batch = dict(batch)
                    original = self._forward(batch["image"], batch, device)
                    twin = self._forward(batch["twin_image"], batch, device)
                    grid = tuple(original.patch_grid)
                    targets = {k: (v.cpu() if torch.is_tensor(v) else v) for k, v in batch.items()}
                    trials = pointing_trials(targets, "lesion", grid)
                    if len(trials) == 0:
                        continue
                    word_class = torch.as_tensor(targets["lesion_word"])[trials.sample, trials.token]
                    twin_cells = patch_cells(torch.as_tensor(targets["twin_lesion_mask"]), grid, 0.0)
                    twin_cells = twin_cells[trials.sample, word_class]
                    prior, text_pointer = self._fitted(grid)
                    model_original = pointed_patches(original.patch_emb, original.token_emb, trials)
                    model_twin = pointed_patches(twin.patch_emb, twin.token_emb, trials)
                    fixed = {
                        "prior": prior_patches(prior, trials),
                        "text_pointer": text_pointer_patches(text_pointer, trials),
                    }
                    follows["model"] += counterfactual_follow(trials, twin_cells, model_original, model_twin).tolist()
                    for name, patches in fixed.items():
                        follows[name] += counterfactual_follow(trials, twin_cells, patches, patches).tolist()
                    classes += word_class.tolist()
        finally:
            self.network.train(was_training)
        return follows, classes

    def compute(self) -> dict[str, Any]:
        follows, classes = self.evaluate()
        summary = summarise_follow(follows, classes, self.class_names)
        return {"counterfactual_" + k: v for k, v in summary.items()}
