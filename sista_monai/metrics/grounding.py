"""The pointing games: does STA's word–patch similarity point where a report word says, better than image-free pointers?

STA, the pointing games (:func:`pointing_trials`, :class:`PointingGame`): for each report word that names a
place, is the image patch most similar to that word inside the place's truth? The word–patch similarity is the
per-pair cosine ``S = W Pᵀ`` of the STA loss, whose row-wise argmax is also the argmax of its sparse alignment
weights. Two games:

* ``"lesion"``: words that name a lesion (:data:`~sista_monai.transforms.LESION_WORDS`: "opacity",
  "pneumothorax", "effusion"...), scored against *that lesion's own* box (channel of ``lesion_mask``). A patch
  counts as inside when it overlaps the box (``min_cover=0``: the patch-resolution form of "the pointed
  location lies in the box"). A word names a lesion class, so with two opacities in one image either box is a
  hit.
* ``"zone"``: zone words ("right", "lower", "apical"...), scored against the union of the zones of the
  image's findings (``zone_mask``), a patch inside when more than half of it is (``min_cover=0.5``).

Each game reports ``accuracy``, ``chance`` (the fraction of patches inside the truth: a uniformly random pointer)
and ``prior``: the accuracy of an *image-free* pointer that points every occurrence of a word at one fixed patch,
the patch most often inside the truth for that word on the training split (:func:`fit_pointing_prior`). A word
never seen in training gets the patch best over all training trials. Zone words can be pointed at without
looking at the image ("right" is usually on the image's left), so only accuracy above the prior says that the
model looks at the image.

The SIA false-negative flags are measured in :mod:`.sia_flags`, STA sparsity in :mod:`.sparsity` and the
counterfactual game in :mod:`.counterfactual`.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from monai.utils import IgniteInfo, min_version, optional_import

from .evaluator_output import _output, _sum_over_ranks

if TYPE_CHECKING:
    from ignite.metrics import Metric
    from ignite.metrics.metric import reinit__is_reduced
else:
    Metric, _ = optional_import("ignite.metrics", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Metric")
    reinit__is_reduced, _ = optional_import(
        "ignite.metrics.metric", IgniteInfo.OPT_IMPORT_VERSION, min_version, "reinit__is_reduced"
    )

__all__ = [
    "GAMES",
    "PointingGame",
    "PointingTrials",
    "fit_pointing_prior",
    "patch_cells",
    "pointing_game",
    "pointing_trials",
    "prior_accuracy",
    "zone_cells",
]

GAMES: dict[str, dict[str, Any]] = {
    "zone": {"words": "pointing_mask", "mask": "zone_mask", "min_cover": 0.5},
    "lesion": {"words": "lesion_word", "mask": "lesion_mask", "min_cover": 0.0},
}
"""The pointing games: the batch keys of their words and truth masks, and the patch-inside rule."""


def patch_cells(mask: torch.Tensor, patch_grid: tuple[int, int], min_cover: float = 0.5) -> torch.Tensor:
    """``(B, C, P)`` bool: the patches that a mask covers by more than ``min_cover`` of their area.

    Args:
        mask: ``(B, C, W, H)`` masks in the network input's geometry.
        patch_grid: the encoder's ``(gx, gy)`` patch grid (patch ``k`` at ``(k // gy, k % gy)``).
        min_cover: a patch is inside when the covered fraction of its area exceeds this (``0``: any overlap).
    """
    cover = F.adaptive_avg_pool2d(mask.float(), patch_grid)
    return (cover > min_cover).flatten(2)


def zone_cells(zone_mask: torch.Tensor, patch_grid: tuple[int, int]) -> torch.Tensor:
    """``(B, P)`` bool: the patches whose area lies mostly (> 50 %) inside each image's zone mask.

    Args:
        zone_mask: ``(B, 1, W, H)`` masks in the network input's geometry.
        patch_grid: the encoder's ``(gx, gy)`` patch grid.
    """
    return patch_cells(zone_mask, patch_grid, 0.5)[:, 0]


class PointingTrials:
    """The trials of a pointing game on one batch, everything but the model's choice.

    Attributes:
        sample: ``(N,)`` batch index of each trial.
        token: ``(N,)`` token position of each trial's word (its first piece).
        cells: ``(N, P)`` bool, the patches inside the truth of the trial.
        words: ``N`` hashable word identities (the word's piece ids), for the image-free prior.
        contexts: ``N`` sets of the zone words (piece ids) of each trial word's sentence, for the text pointer;
            ``None`` when the batch has no ``sentence_id`` or ``pointing_mask``.
    """

    def __init__(
        self,
        sample: torch.Tensor,
        token: torch.Tensor,
        cells: torch.Tensor,
        words: list[tuple[int, ...]],
        contexts: list[frozenset[tuple[int, ...]]] | None = None,
    ) -> None:
        self.sample, self.token, self.cells, self.words, self.contexts = sample, token, cells, words, contexts

    def __len__(self) -> int:
        return len(self.words)


def _word_keys(
    input_ids: torch.Tensor, word_start: torch.Tensor | None, sample: torch.Tensor, token: torch.Tensor
) -> list[tuple[int, ...]]:
    ids = input_ids.tolist()
    starts = word_start.tolist() if word_start is not None else None
    keys: list[tuple[int, ...]] = []
    for b, t in zip(sample.tolist(), token.tolist(), strict=True):
        if starts is None:
            keys.append((ids[b][t],))
            continue
        end = t + 1
        while end < len(starts[b]) and starts[b][end] == t:
            end += 1
        keys.append(tuple(ids[b][t:end]))
    return keys


def _sentence_contexts(
    targets: Mapping[str, torch.Tensor], sample: torch.Tensor, token: torch.Tensor
) -> list[frozenset[tuple[int, ...]]] | None:
    """The zone words (piece ids) of each trial word's sentence, or ``None`` without the keys to find them."""
    if "sentence_id" not in targets or "pointing_mask" not in targets:
        return None
    sentence = torch.as_tensor(targets["sentence_id"])
    zone = torch.as_tensor(targets["pointing_mask"]).bool()
    input_ids = torch.as_tensor(targets["input_ids"])
    word_start = targets.get("word_start")
    contexts = []
    for b, t in zip(sample.tolist(), token.tolist(), strict=True):
        positions = torch.nonzero(zone[b] & (sentence[b] == sentence[b, t]), as_tuple=True)[0]
        keys = _word_keys(input_ids, word_start, torch.full_like(positions, b), positions)
        contexts.append(frozenset(keys))
    return contexts


def pointing_trials(targets: Mapping[str, torch.Tensor], game: str, patch_grid: tuple[int, int]) -> PointingTrials:
    """Collect the trials of ``game`` (``"zone"`` or ``"lesion"``) from a batch's ground truth.

    A trial is a word of the game's vocabulary whose truth covers at least one patch: a zone word in an image with
    a finding zone; a lesion word in an image where that lesion was drawn (a negated mention, "no pneumothorax",
    has no truth and takes no trial).

    Args:
        targets: the batch (or the evaluator's ``label`` dict) with ``input_ids``, optionally ``word_start``, and the
            game's word and mask keys (:data:`GAMES`); with ``sentence_id`` and ``pointing_mask`` the trials also
            carry the zone words of their sentence (:attr:`PointingTrials.contexts`, for the text pointer).
        game: ``"zone"`` or ``"lesion"``.
        patch_grid: the encoder's patch grid.

    Returns:
        The trials (possibly none).

    Raises:
        ValueError: unknown ``game``. KeyError: a key the game needs is missing.
    """
    if game not in GAMES:
        raise ValueError(f"game must be one of {tuple(GAMES)}, got {game!r}")
    spec = GAMES[game]
    missing = [k for k in (spec["words"], spec["mask"], "input_ids") if k not in targets]
    if missing:
        raise KeyError(f"the {game} pointing game needs {missing} in the batch; it has {sorted(targets)}")
    mask = torch.as_tensor(targets[spec["mask"]])
    cells = patch_cells(mask, patch_grid, spec["min_cover"])  # (B, C, P)
    words = torch.as_tensor(targets[spec["words"]])
    if game == "zone":
        word_class = torch.where(words.bool(), 0, -1)
    else:
        word_class = words.long()
    has_truth = torch.gather(cells.any(dim=2), 1, word_class.clamp_min(0))  # (B, T)
    trial = (word_class >= 0) & has_truth
    sample, token = torch.nonzero(trial, as_tuple=True)
    trial_cells = cells[sample, word_class[sample, token]]
    keys = _word_keys(torch.as_tensor(targets["input_ids"]), targets.get("word_start"), sample, token)
    return PointingTrials(sample, token, trial_cells, keys, _sentence_contexts(targets, sample, token))


def pointing_game(
    patch_emb: torch.Tensor, token_emb: torch.Tensor, trials: PointingTrials
) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's answer to each trial.

    Args:
        patch_emb: ``(B, P, D)`` patch embeddings.
        token_emb: ``(B, T, D)`` token embeddings.
        trials: from :func:`pointing_trials`.

    Returns:
        ``(hit, chance)``, two ``(N,)`` tensors: whether the word's most similar patch is inside the truth (ties:
        the lowest patch index), and the fraction of patches inside the truth.
    """
    if len(trials) == 0:
        return torch.zeros(0, dtype=torch.bool), torch.zeros(0, dtype=torch.float64)
    best = pointed_patches(patch_emb, token_emb, trials)
    cells = trials.cells.cpu()
    hit = torch.gather(cells, 1, best[:, None])[:, 0]
    return hit, cells.double().mean(dim=1)


def pointed_patches(patch_emb: torch.Tensor, token_emb: torch.Tensor, trials: PointingTrials) -> torch.Tensor:
    """``(N,)`` the patch each trial's word is most similar to (ties: the lowest patch index), on the CPU.

    Args:
        patch_emb: ``(B, P, D)`` patch embeddings.
        token_emb: ``(B, T, D)`` token embeddings.
        trials: from :func:`pointing_trials`.
    """
    if len(trials) == 0:
        return torch.zeros(0, dtype=torch.long)
    sample, token = trials.sample.to(patch_emb.device), trials.token.to(patch_emb.device)
    similarity = torch.einsum("nd,npd->np", token_emb[sample, token].float(), patch_emb[sample].float())
    return similarity.argmax(dim=1).cpu()


def fit_pointing_prior(trials: Iterable[PointingTrials]) -> tuple[dict[tuple[int, ...], int], int]:
    """The image-free pointer: for each word, the patch most often inside the truth over the training trials.

    Args:
        trials: the training split's trials.

    Returns:
        ``(per_word, fallback)``: ``{word: patch}`` and the patch best over all trials (for words never seen in
        training). Ties go to the lowest patch index. With no trials at all, ``({}, 0)``.
    """
    per_word: dict[tuple[int, ...], torch.Tensor] = {}
    total: torch.Tensor | None = None
    for batch in trials:
        for word, cells in zip(batch.words, batch.cells.long(), strict=True):
            per_word[word] = per_word[word] + cells if word in per_word else cells.clone()
            total = cells.clone() if total is None else total + cells
    if total is None:
        return {}, 0
    return {word: int(counts.argmax()) for word, counts in per_word.items()}, int(total.argmax())


def prior_accuracy(
    prior: tuple[dict[tuple[int, ...], int], int], trials: Iterable[PointingTrials]
) -> tuple[float, int]:
    """Accuracy of the image-free pointer on ``trials``: ``(accuracy, number of trials)``; NaN without trials."""
    per_word, fallback = prior
    hits = count = 0
    for batch in trials:
        for word, cells in zip(batch.words, batch.cells, strict=True):
            hits += bool(cells[per_word.get(word, fallback)])
            count += 1
    return (hits / count if count else float("nan")), count


def prior_patches(prior: tuple[dict[tuple[int, ...], int], int], trials: PointingTrials) -> torch.Tensor:
    """``(N,)`` the patch the image-free prior points each trial's word at."""
    per_word, fallback = prior
    return torch.tensor([per_word.get(word, fallback) for word in trials.words], dtype=torch.long)


TextPointer = tuple[dict[tuple[Any, ...], int], dict[tuple[int, ...], int], int]
"""A fitted text pointer: ``({(word, sentence zone words): patch}, {word: patch}, fallback patch)``."""


def fit_text_pointer(trials: Iterable[PointingTrials]) -> TextPointer:
    """The pointer that reads the report but never the image: the best patch per word *and sentence context*.

    For every (word, set of zone/side words of its sentence) seen in the training trials, the patch most often
    inside the truth; a pair never seen in training falls back to the word's best patch (the image-free prior), a
    word never seen to the best patch over all trials. "Left lower lobe opacity" thus points at the left lower
    zone's most typical lesion patch without looking at the image. On the demo, whose reports always say where a
    finding is, it wins the lesion game (METHOD.md §7); only the counterfactual game shows an image was looked at.

    Args:
        trials: the training split's trials, with :attr:`PointingTrials.contexts`.

    Returns:
        The fitted pointer (ties: the lowest patch index); ``({}, {}, 0)`` without trials.

    Raises:
        ValueError: when trials carry no sentence contexts (the batch lacked ``sentence_id``/``pointing_mask``).
    """
    trials = list(trials)
    per_context: dict[tuple[Any, ...], torch.Tensor] = {}
    for batch in trials:
        if batch.contexts is None:
            if len(batch):
                raise ValueError("the text pointer needs 'sentence_id' and 'pointing_mask' in the training batches")
            continue
        for word, context, cells in zip(batch.words, batch.contexts, batch.cells.long(), strict=True):
            key = (word, context)
            per_context[key] = per_context[key] + cells if key in per_context else cells.clone()
    per_word, fallback = fit_pointing_prior(trials)
    return {key: int(counts.argmax()) for key, counts in per_context.items()}, per_word, fallback


def text_pointer_patches(pointer: TextPointer, trials: PointingTrials) -> torch.Tensor:
    """``(N,)`` the patch the text pointer points each trial's word at.

    Raises:
        ValueError: when the trials carry no sentence contexts.
    """
    per_context, per_word, fallback = pointer
    if trials.contexts is None:
        if len(trials):
            raise ValueError("the text pointer needs 'sentence_id' and 'pointing_mask' in the evaluated batches")
        return torch.zeros(0, dtype=torch.long)
    return torch.tensor(
        [
            per_context.get((word, context), per_word.get(word, fallback))
            for word, context in zip(trials.words, trials.contexts, strict=True)
        ],
        dtype=torch.long,
    )


def _hits(patches: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
    """``(N,)`` bool: whether each trial's patch is inside its truth ``cells`` ``(N, P)``."""
    if len(patches) == 0:
        return torch.zeros(0, dtype=torch.bool)
    return torch.gather(cells.cpu(), 1, patches[:, None])[:, 0]


def training_trials(
    batches: Iterable[Mapping[str, Any]], game: str, patch_grid: tuple[int, int]
) -> list[PointingTrials]:
    """The trials of ``game`` over a split's batches (e.g. the training split, to fit a pointer on).

    Iterating a DataLoader draws from the global random generator; this leaves the generator as it was, so fitting a
    pointer during a validation does not change the training that follows. The trials of one ``batches`` object (a
    DataLoader: anything that can be weakly referenced) are read once per game and grid and shared: the image-free
    prior, the text pointer and the counterfactual metric all fit on the training split's lesion trials, which its
    evaluation transforms make the same at every pass. Treat the returned list as read-only.
    """
    try:
        cache = _TRIALS_CACHE.setdefault(batches, {})
    except TypeError:  # a list or a generator: read it as it is
        cache = {}
    key = (game, (int(patch_grid[0]), int(patch_grid[1])))
    if key not in cache:
        with torch.random.fork_rng(devices=[]):
            cache[key] = [pointing_trials(dict(batch), game, patch_grid) for batch in batches]
    return cache[key]


_TRIALS_CACHE: weakref.WeakKeyDictionary[Any, dict[tuple[str, tuple[int, int]], list[PointingTrials]]] = (
    weakref.WeakKeyDictionary()
)


class PointingGame(Metric):
    """Ignite metric: a pointing game's ``accuracy``, ``chance``, image-free ``prior`` or number of ``trials``.

    Expects the evaluator output ``{"pred": SISTAOutput, "label": {...}}`` (MONAI's ``SupervisedEvaluator`` with
    :class:`~sista_monai.engines.SISTAPrepareBatch`), whose label holds the game's keys (:data:`GAMES`).

    Args:
        report: ``"accuracy"``, ``"chance"``, ``"prior"``, ``"text_pointer"`` or ``"trials"``.
        game: ``"zone"`` (default) or ``"lesion"``.
        prior_data: the training split's batches (e.g. a DataLoader with the evaluation transforms), needed for
            ``report="prior"`` and ``"text_pointer"``: the pointer (:func:`fit_pointing_prior`,
            :func:`fit_text_pointer`) is fitted on them (once per patch grid) and scored on the evaluated
            split's trials. The text pointer needs ``sentence_id`` and ``pointing_mask`` in both. Under ``torchrun``
            give every rank the whole training split (no distributed sampler): each fits the same pointer and scores
            its own trials, and the counts are summed.
        output_transform: maps the engine output to ``(pred, targets)``.
    """

    REPORTS = ("accuracy", "chance", "prior", "text_pointer", "trials")

    def __init__(
        self,
        report: str = "accuracy",
        game: str = "zone",
        prior_data: Iterable[Mapping[str, Any]] | None = None,
        output_transform: Callable[[Any], Any] = _output,
        device: str | torch.device = "cpu",
    ) -> None:
        if report not in self.REPORTS:
            raise ValueError(f"report must be one of {self.REPORTS}, got {report!r}")
        if game not in GAMES:
            raise ValueError(f"game must be one of {tuple(GAMES)}, got {game!r}")
        if report in ("prior", "text_pointer") and prior_data is None:
            raise ValueError(f"report={report!r} needs prior_data, the training split's batches")
        self.report, self.game, self.prior_data = report, game, prior_data
        self._prior: dict[tuple[int, int], Any] = {}
        super().__init__(output_transform=output_transform, device=device)

    @reinit__is_reduced
    def reset(self) -> None:
        self._sums = [0.0, 0.0, 0.0]  # hits, trials, chance
        self._trials: list[PointingTrials] = []
        self._grid: tuple[int, int] | None = None

    @reinit__is_reduced
    def update(self, output: tuple[Any, dict[str, torch.Tensor]]) -> None:
        pred, targets = output
        targets = {k: (v.cpu() if torch.is_tensor(v) else v) for k, v in targets.items()}
        trials = pointing_trials(targets, self.game, tuple(pred.patch_grid))
        self._grid = tuple(pred.patch_grid)
        if self.report in ("prior", "text_pointer"):
            self._trials.append(trials)
            return
        hit, chance = pointing_game(pred.patch_emb.detach().cpu(), pred.token_emb.detach().cpu(), trials)
        self._sums[0] += float(hit.sum())
        self._sums[1] += len(trials)
        self._sums[2] += float(chance.sum())

    def fitted_prior(self, patch_grid: tuple[int, int]) -> Any:
        """The pointer of this report (image-free prior or text pointer) fitted on ``prior_data`` for ``patch_grid``
        (fitted once, then reused)."""
        if patch_grid not in self._prior:
            if self.prior_data is None:
                raise ValueError(f"report={self.report!r} has no prior_data to fit a pointer on")
            fit = fit_text_pointer if self.report == "text_pointer" else fit_pointing_prior
            self._prior[patch_grid] = fit(training_trials(self.prior_data, self.game, patch_grid))
        return self._prior[patch_grid]

    def _pointer_accuracy(self) -> tuple[float, int]:
        if self._grid is None:
            return float("nan"), 0
        pointer = self.fitted_prior(self._grid)
        if self.report == "prior":
            return prior_accuracy(pointer, self._trials)
        hits = sum(int(_hits(text_pointer_patches(pointer, t), t.cells).sum()) for t in self._trials)
        count = sum(len(t) for t in self._trials)
        return (hits / count if count else float("nan")), count

    def compute(self) -> float:
        if self.report in ("prior", "text_pointer"):
            accuracy, count = self._pointer_accuracy()
            # every rank fits the same prior on the whole training split and scores its own share of the trials
            hits, total = _sum_over_ranks([0.0 if count == 0 else accuracy * count, float(count)], self._device)
            return hits / total if total else float("nan")
        hits, trials, chance = _sum_over_ranks(self._sums, self._device)
        if self.report == "trials":
            return float(trials)
        if trials == 0:
            return float("nan")
        return float((hits if self.report == "accuracy" else chance) / trials)
