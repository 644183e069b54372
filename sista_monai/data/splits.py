"""Seeded, stratified 70/15/15 splits with nested label fractions, and the released split files.

The downstream protocols (METHOD.md §5) split RSNA Pneumonia by ``patientId`` and SIIM-ACR Pneumothorax by
``ImageId`` into 70 % training, 15 % validation and 15 % test, and train on 1 %, 10 % or 100 % of the training
split. One split per dataset is released in ``data/splits/`` so that every run, every task (RSNA
classification and detection share it) and every label fraction uses the same patients.

How a split is drawn (:func:`make_split`), deterministically for a seed and independent of numpy versions:

1. the ids are grouped by stratum (RSNA: ``Target``; SIIM: pneumothorax present or not);
2. within a stratum of ``n`` ids, the ids are ordered by ``sha256("sista-monai/split/<seed>/<id>")``; the
   first ``round(0.70 n)`` are training, the next ``round(0.85 n) - round(0.70 n)`` validation, the rest
   test (``round`` halves up, computed exactly with fractions);
3. within a stratum's ``t`` training ids, ordered by ``sha256("sista-monai/fraction/<seed>/<id>")``, the
   first ``max(1, round(f t))`` form the label fraction ``f`` (1 % and 10 %); both fractions are prefixes of
   the same order, so 1 % ⊂ 10 % ⊂ 100 % and every fraction holds both classes.

Steps 2 and 3 are :func:`assign_in_order` and :func:`nested_prefixes` over a seeded order; the demo generator
(:mod:`sista_monai.data.demo`) uses the same two, with whole patients as the groups of its order.

Released files (IDs only, one per line, sorted; ``SHA256SUMS`` in ``sha256sum`` format)::

    data/splits/rsna/{train,validation,test,train_1,train_10}.txt
    data/splits/siim/{train,validation,test,train_1,train_10}.txt
    data/splits/SHA256SUMS  data/splits/README.md

They are installed with the package as the package data of :data:`RELEASED_SPLITS_PACKAGE` and found by
:func:`default_splits_dir` (with :mod:`importlib.resources`), in editable and plain installs alike.

Command (reads the ``.zip``/``.gz`` label files directly; plain CSVs give identical files)::

    python -m sista_monai.data.splits --rsna-labels stage_2_train_labels.csv.zip \\
        --siim-rle siim-pneumothorax-train-rle.csv.gz --out data/splits [--seed 0]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.resources
import logging
import math
import os
import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar

from sista_monai.errors import SistaDataError, SplitError
from sista_monai.io.files import StagedFolder, atomic_write_bytes, sha256_file

from .datalist import ProblemLog
from .sources.kaggle import read_rsna_labels, read_siim_rle
from .sources.tables import open_csv_text

__all__ = [
    "DATASETS",
    "SPLIT_NAMES",
    "FRACTION_NAMES",
    "SPLIT_FILES",
    "DATALIST_KEYS",
    "SPLIT_FRACTIONS",
    "LABEL_FRACTIONS",
    "CHECKSUM_FILE",
    "RELEASED_SPLITS_PACKAGE",
    "SplitError",
    "DatasetSplit",
    "seeded_order",
    "split_ends",
    "assign_in_order",
    "nested_prefixes",
    "make_split",
    "default_splits_dir",
    "write_split_files",
    "load_split",
    "generate_released_splits",
    "main",
]

logger = logging.getLogger(__name__)

GroupT = TypeVar("GroupT", bound=Hashable)

DATASETS: tuple[str, ...] = ("rsna", "siim")
"""The datasets with released splits (folder names under ``data/splits``)."""

SPLIT_NAMES: tuple[str, ...] = ("train", "validation", "test")
FRACTION_NAMES: tuple[str, ...] = ("train_1", "train_10")
SPLIT_FILES: tuple[str, ...] = (*SPLIT_NAMES, *FRACTION_NAMES)
"""The released files of a dataset, ``<name>.txt``."""

DATALIST_KEYS: dict[str, str] = {
    "train": "training",
    "validation": "validation",
    "test": "test",
    "train_1": "training_1",
    "train_10": "training_10",
}
"""Split file name -> datalist key."""

SPLIT_FRACTIONS: tuple[Fraction, Fraction, Fraction] = (Fraction(70, 100), Fraction(15, 100), Fraction(15, 100))
"""Training, validation and test shares."""

LABEL_FRACTIONS: dict[str, Fraction] = {"train_1": Fraction(1, 100), "train_10": Fraction(10, 100)}
"""Nested label fractions of the training split."""

CHECKSUM_FILE = "SHA256SUMS"

RELEASED_SPLITS_PACKAGE = "sista_monai.data.released_splits"
"""The package the released split files are installed as (``setup.cfg`` maps ``data/splits`` to it)."""

_DESCRIPTIONS = {
    "rsna": (
        "RSNA Pneumonia Detection Challenge, `stage_2_train_labels.csv`",
        "patientId",
        "Target = 1 (any box)",
    ),
    "siim": (
        "SIIM-ACR Pneumothorax Segmentation, stage-1 `train-rle.csv`",
        "ImageId",
        "any EncodedPixels other than -1",
    ),
}


@dataclass(frozen=True)
class DatasetSplit:
    """The ids of each split and label fraction of one dataset.

    Attributes:
        subsets: ids keyed by split file name (``"train"``, ``"validation"``, ``"test"`` and the label
            fractions ``"train_1"``, ``"train_10"`` when the split has them).
        source: how the split was obtained (for datalist metadata and reports).
    """

    subsets: Mapping[str, frozenset[str]]
    source: str = ""

    def __getitem__(self, name: str) -> frozenset[str]:
        return self.subsets[name]

    @property
    def ids(self) -> frozenset[str]:
        """Every id of the training, validation and test splits."""
        return frozenset().union(*(self.subsets[name] for name in SPLIT_NAMES))

    def assignment(self) -> dict[str, str]:
        """The split name (``"train"``, ``"validation"``, ``"test"``) of every id of :attr:`ids`."""
        return {item_id: name for name in SPLIT_NAMES for item_id in self.subsets[name]}

    def split_of(self, item_id: str) -> str | None:
        """``"train"``, ``"validation"``, ``"test"``, or ``None`` when ``item_id`` is not in the split."""
        for name in SPLIT_NAMES:
            if item_id in self.subsets[name]:
                return name
        return None

    def restrict(self, ids: Iterable[str], source: str | None = None) -> DatasetSplit:
        """The same assignment limited to ``ids`` (each subset intersected with them)."""
        keep = frozenset(ids)
        return DatasetSplit(
            {name: subset & keep for name, subset in self.subsets.items()}, self.source if source is None else source
        )

    def problems(self) -> list[str]:
        """Violations of the split's invariants (disjoint splits, naming the shared ids; nested fractions)."""
        found = []
        for index, first in enumerate(SPLIT_NAMES):
            for second in SPLIT_NAMES[index + 1 :]:
                shared = self.subsets[first] & self.subsets[second]
                if shared:
                    found.append(f"{len(shared)} ids are in both {first} and {second}: {', '.join(sorted(shared))}")
        previous = self.subsets["train"]
        for name in reversed([name for name in FRACTION_NAMES if name in self.subsets]):
            if not self.subsets[name] <= previous:
                found.append(f"{name} is not inside the next larger training subset")
            previous = self.subsets[name]
        return found


def _round_half_up(value: Fraction) -> int:
    return math.floor(value + Fraction(1, 2))


def split_ends(total: int, shares: Sequence, rounding: Callable[[Any], int] = _round_half_up) -> tuple[int, int]:
    """Where training ends and validation ends in an order of ``total`` items with these ``shares``.

    Args:
        total: the number of items (ids, or studies when whole patients are assigned).
        shares: the training, validation and test shares.
        rounding: how ``shares[0] * total`` and ``(shares[0] + shares[1]) * total`` become counts; halves
            up on exact fractions by default (:func:`make_split`). The demo generator passes Python's
            :func:`round` on its float shares, which fixes its published bytes.

    Returns:
        ``(train_end, validation_end)``.
    """
    return rounding(shares[0] * total), rounding((shares[0] + shares[1]) * total)


def assign_in_order(
    order: Sequence[GroupT], ends: tuple[int, int], sizes: Mapping[GroupT, int] | None = None
) -> dict[GroupT, str]:
    """Cut a seeded order into training, validation and test, keeping every group whole.

    A group goes to ``"train"`` while fewer than ``ends[0]`` items precede it in ``order``, to
    ``"validation"`` while fewer than ``ends[1]`` do, and to ``"test"`` otherwise. With every size 1 (ids)
    this is ``order[:ends[0]]``, ``order[ends[0]:ends[1]]`` and ``order[ends[1]:]``; with patients as groups
    (the demo generator) no patient is in two splits.

    Args:
        order: the groups in their seeded order.
        ends: ``(train_end, validation_end)`` in items (:func:`split_ends`).
        sizes: the number of items of each group; 1 each when ``None``.

    Returns:
        The split name (:data:`SPLIT_NAMES`) of every group.
    """
    assignment: dict[GroupT, str] = {}
    before = 0
    for group in order:
        assignment[group] = "train" if before < ends[0] else "validation" if before < ends[1] else "test"
        before += 1 if sizes is None else sizes[group]
    return assignment


def nested_prefixes(order: Sequence[GroupT], counts: Mapping[str, int]) -> dict[str, list[GroupT]]:
    """The label-fraction subsets: the first ``counts[name]`` of one seeded ``order`` (so smaller ⊂ larger)."""
    return {name: list(order[:count]) for name, count in counts.items()}


def seeded_order(ids: Iterable[str], seed: int, purpose: str) -> list[str]:
    """``ids`` ordered by ``sha256("sista-monai/<purpose>/<seed>/<id>")``: a seeded shuffle that does not
    depend on the order of ``ids`` or on any random-number library."""

    def key(item_id: str) -> tuple[bytes, str]:
        return hashlib.sha256(f"sista-monai/{purpose}/{seed}/{item_id}".encode()).digest(), item_id

    return sorted(ids, key=key)


def make_split(
    strata: Mapping[str, Hashable],
    seed: int = 0,
    fractions: Sequence[Fraction | float | str] = SPLIT_FRACTIONS,
    label_fractions: Mapping[str, Fraction | float | str] | None = None,
    source: str | None = None,
) -> DatasetSplit:
    """Draw a stratified, seeded split with nested label fractions (see the module docstring).

    Args:
        strata: the stratum (e.g. 0/1 label) of every id.
        seed: the seed; the same ids, strata and seed always give the same split.
        fractions: training, validation and test shares (summing to 1).
        label_fractions: nested subsets of the training split by name (e.g. ``{"train_1": 0.01}``);
            :data:`LABEL_FRACTIONS` when ``None``, none when empty.
        source: the description stored in :attr:`DatasetSplit.source`.

    Returns:
        The split.

    Raises:
        ValueError: when the fractions do not sum to 1.
    """
    shares = [Fraction(str(share)) if isinstance(share, float) else Fraction(share) for share in fractions]
    if len(shares) != 3 or sum(shares) != 1 or min(shares) < 0:
        raise ValueError(f"fractions must be three non-negative shares summing to 1, got {fractions}")
    chosen = LABEL_FRACTIONS if label_fractions is None else label_fractions
    subset_shares = {
        name: Fraction(str(share)) if isinstance(share, float) else Fraction(share) for name, share in chosen.items()
    }
    groups: dict[Hashable, list[str]] = defaultdict(list)
    for item_id, stratum in strata.items():
        groups[stratum].append(item_id)
    subsets: dict[str, set[str]] = {name: set() for name in (*SPLIT_NAMES, *subset_shares)}
    for stratum in sorted(groups, key=repr):
        order = seeded_order(groups[stratum], seed, "split")
        assignment = assign_in_order(order, split_ends(len(order), shares))
        for item_id, name in assignment.items():
            subsets[name].add(item_id)
        training = seeded_order([item_id for item_id in order if assignment[item_id] == "train"], seed, "fraction")
        counts = {
            name: min(len(training), max(1, _round_half_up(share * len(training)))) if training else 0
            for name, share in subset_shares.items()
        }
        for name, ids in nested_prefixes(training, counts).items():
            subsets[name].update(ids)
    description = source if source is not None else f"seeded split (seed {seed})"
    return DatasetSplit({name: frozenset(ids) for name, ids in subsets.items()}, description)


def default_splits_dir() -> Path:
    """The folder of the released split files installed with the package, found with :mod:`importlib.resources`.

    The files live in ``data/splits`` of the repository, where the documentation points. ``setup.cfg`` maps
    that folder as the package :data:`RELEASED_SPLITS_PACKAGE` (``package_dir``, the way ``transforms`` is
    installed as ``sista_monai.transforms``) and ships ``README.md``, ``SHA256SUMS`` and ``*/*.txt`` as its
    package data. A plain or wheel install (``pip install .``) therefore copies them into
    ``site-packages/sista_monai/data/released_splits``, and an editable install (``pip install -e .``) maps the
    package to the checkout's ``data/splits`` itself; :func:`importlib.resources.files` finds either, whatever
    the working directory (looking beside ``sista_monai.__file__`` found nothing in a plain install).

    Returns:
        The folder holding ``SHA256SUMS`` and the ``rsna``/``siim`` split files.

    Raises:
        SplitError: when the package is not installed (an editable install made before the mapping existed:
            reinstall with ``pip install -e .``) or is not on a file system (a zipped install).
    """
    try:
        folder = importlib.resources.files(RELEASED_SPLITS_PACKAGE)
    except ModuleNotFoundError:
        raise SplitError(
            RELEASED_SPLITS_PACKAGE,
            "the released splits are not installed: reinstall sista-monai (pip install -e . in a checkout made "
            "before they were package data), or give the split folder (--splits DIR)",
        ) from None
    if not isinstance(folder, Path):
        raise SplitError(
            RELEASED_SPLITS_PACKAGE,
            "the released splits are not on a file system: give the split folder (--splits DIR)",
        )
    return folder


def _read_checksums(folder: Path) -> dict[str, str]:
    sums_path = folder / CHECKSUM_FILE
    try:
        lines = sums_path.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise SplitError(sums_path, f"cannot read the split checksums ({type(err).__name__})") from None
    sums = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        digest, _, name = line.partition("  ")
        if len(digest) != 64 or not name:
            raise SplitError(sums_path, f"line {number} is not '<sha256>  <file>'")
        sums[name.strip()] = digest.lower()
    return sums


def load_split(dataset: str, splits_dir: str | os.PathLike | None = None) -> DatasetSplit:
    """Read the released split of ``dataset``, refusing files whose SHA-256 does not match ``SHA256SUMS``.

    Args:
        dataset: ``"rsna"`` or ``"siim"``.
        splits_dir: the folder holding ``SHA256SUMS`` and the dataset folders; :func:`default_splits_dir`
            when ``None``.

    Returns:
        The split, its ``source`` naming the folder.

    Raises:
        SplitError: listing every missing or damaged file, or when the files break the split invariants.
    """
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
    folder = Path(splits_dir) if splits_dir is not None else default_splits_dir()
    sums = _read_checksums(folder)
    problems = []
    subsets: dict[str, frozenset[str]] = {}
    for name in SPLIT_FILES:
        relative = f"{dataset}/{name}.txt"
        path = folder / relative
        if relative not in sums:
            problems.append(f"{relative} is not listed in {CHECKSUM_FILE}")
        elif not path.is_file():
            problems.append(f"{relative} is missing")
        elif sha256_file(path) != sums[relative]:
            problems.append(f"{relative} does not match its SHA-256 in {CHECKSUM_FILE} (damaged or edited)")
        else:
            lines = path.read_text(encoding="utf-8").splitlines()
            subsets[name] = frozenset(line.strip() for line in lines if line.strip())
    if problems:
        raise SplitError(folder, "refusing the released split: " + "; ".join(problems))
    split = DatasetSplit(subsets, f"released split {folder.name}/{dataset} (SHA-256 verified)")
    inconsistent = split.problems()
    if inconsistent:
        raise SplitError(folder / dataset, "inconsistent split files: " + "; ".join(inconsistent))
    logger.info(
        "loaded the released %s split: %s",
        dataset,
        ", ".join(f"{name} {len(ids)}" for name, ids in subsets.items()),
    )
    return split


def write_split_files(split: DatasetSplit, folder: str | os.PathLike) -> list[Path]:
    """Write ``<name>.txt`` (sorted ids, one per line) for every subset of ``split`` into ``folder``."""
    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name in SPLIT_FILES:
        if name in split.subsets:
            text = "".join(f"{item_id}\n" for item_id in sorted(split.subsets[name]))
            written.append(atomic_write_bytes(target / f"{name}.txt", text.encode("utf-8")))
    return written


def _csv_content_sha256(path: Path) -> str:
    """SHA-256 of the CSV's text (decompressed, BOM dropped), so zipped, gzipped and plain copies agree."""
    digest = hashlib.sha256()
    with open_csv_text(path) as handle:
        for block in iter(lambda: handle.read(1 << 20), ""):
            digest.update(block.encode("utf-8"))
    return digest.hexdigest()


def _readme(
    seed: int,
    splits: Mapping[str, DatasetSplit],
    strata: Mapping[str, Mapping[str, int]],
    sources: Mapping[str, tuple[str, int]],
) -> str:
    lines = [
        "# Released splits",
        "",
        "Generated by `python -m sista_monai.data.splits` (do not edit: `prepare` verifies `SHA256SUMS` and",
        "refuses changed files). Regenerate with:",
        "",
        "```bash",
        "python -m sista_monai.data.splits --rsna-labels stage_2_train_labels.csv.zip \\",
        f"    --siim-rle siim-pneumothorax-train-rle.csv.gz --out data/splits --seed {seed}",
        "```",
        "",
        "The label files may also be given unpacked (`.csv`); the output is the same byte for byte.",
        "",
        "Format: one id per line, sorted; `train_1` ⊂ `train_10` ⊂ `train` are the nested 1 % and 10 % label",
        "fractions; `SHA256SUMS` is in `sha256sum -c` format (run it inside this folder).",
        "",
        "Method: stratified by the positive/negative label; within each stratum of n ids, ids are ordered by",
        f'`sha256("sista-monai/split/{seed}/<id>")`; the first round(0.70 n) are `train`, the next',
        "round(0.85 n) - round(0.70 n) `validation`, the rest `test` (rounding halves up). Within a stratum's",
        f't training ids, ordered by `sha256("sista-monai/fraction/{seed}/<id>")`, the first max(1, round(f t))',
        "are the label fraction f, so the fractions are nested and hold both classes.",
        "",
        "| dataset | source (SHA-256 of the CSV text) | id | positive means |",
        "|---|---|---|---|",
    ]
    for dataset in DATASETS:
        title, id_name, positive = _DESCRIPTIONS[dataset]
        digest, rows = sources[dataset]
        lines.append(f"| {dataset} | {title}: {rows} rows, sha256 `{digest}` | {id_name} | {positive} |")
    lines += ["", "| dataset | subset | ids | positives |", "|---|---|---|---|"]
    for dataset in DATASETS:
        split = splits[dataset]
        labels = strata[dataset]
        total = split.ids
        lines.append(f"| {dataset} | all | {len(total)} | {sum(labels[i] for i in total)} |")
        for name in SPLIT_FILES:
            ids = split.subsets[name]
            lines.append(f"| {dataset} | {name} | {len(ids)} | {sum(labels[i] for i in ids)} |")
    lines += [
        "",
        "Licences: the ids come from the Kaggle competition data (RSNA Pneumonia Detection Challenge; SIIM-ACR",
        "Pneumothorax Segmentation); obtaining the images and labels is subject to the competitions' rules",
        "(see `data/README.md`). Only ids are released here.",
        "",
    ]
    return "\n".join(lines)


def generate_released_splits(
    rsna_labels: str | os.PathLike,
    siim_rle: str | os.PathLike,
    out: str | os.PathLike,
    seed: int = 0,
) -> dict[str, DatasetSplit]:
    """Generate the released split files of RSNA and SIIM from the full official label files.

    Args:
        rsna_labels: ``stage_2_train_labels.csv`` (or a ``.zip``/``.gz`` of it).
        siim_rle: the stage-1 ``train-rle.csv`` (or a ``.zip``/``.gz`` of it).
        out: the split folder (``data/splits``); the dataset folders, ``SHA256SUMS`` and ``README.md`` are
            replaced, nothing else in it is touched.
        seed: the split seed.

    Returns:
        The splits by dataset.

    Raises:
        DatasetPreparationError: listing every problem of the label files (nothing is written then).
    """
    problems = ProblemLog("splits")
    rsna = read_rsna_labels(Path(rsna_labels), problems)
    siim = read_siim_rle(Path(siim_rle), problems)
    problems.resolve("raise")
    strata = {
        "rsna": {patient_id: record.target for patient_id, record in rsna.items()},
        "siim": {image_id: int(record.positive) for image_id, record in siim.items()},
    }
    splits = {dataset: make_split(strata[dataset], seed) for dataset in DATASETS}
    for dataset, split in splits.items():
        inconsistent = split.problems()
        if inconsistent:
            raise SplitError(dataset, "; ".join(inconsistent))
    sources = {
        "rsna": (_csv_content_sha256(Path(rsna_labels)), sum(len(r.rows) for r in rsna.values())),
        "siim": (_csv_content_sha256(Path(siim_rle)), sum(len(r.rows) for r in siim.values())),
    }
    with StagedFolder(out, merge=True) as staging:
        for dataset, split in splits.items():
            write_split_files(split, staging / dataset)
        sums = [
            f"{sha256_file(staging / dataset / f'{name}.txt')}  {dataset}/{name}.txt\n"
            for dataset in DATASETS
            for name in SPLIT_FILES
        ]
        atomic_write_bytes(staging / CHECKSUM_FILE, "".join(sums).encode("utf-8"))
        atomic_write_bytes(staging / "README.md", _readme(seed, splits, strata, sources).encode("utf-8"))
    for dataset, split in splits.items():
        counts = Counter({name: len(ids) for name, ids in split.subsets.items()})
        logger.info("%s split: %s", dataset, ", ".join(f"{name} {counts[name]}" for name in SPLIT_FILES))
    return splits


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: regenerate the released split files (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="python -m sista_monai.data.splits",
        description="Generate the released RSNA/SIIM 70/15/15 splits with nested 1 %/10 % label fractions.",
    )
    parser.add_argument("--rsna-labels", required=True, type=Path, help="stage_2_train_labels.csv[.zip|.gz]")
    parser.add_argument("--siim-rle", required=True, type=Path, help="stage-1 train-rle.csv[.zip|.gz]")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default: the released splits, data/splits of the checkout)",
    )
    parser.add_argument("--seed", type=int, default=0, help="split seed (default 0, the released one)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        generate_released_splits(args.rsna_labels, args.siim_rle, args.out or default_splits_dir(), args.seed)
    except SistaDataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
