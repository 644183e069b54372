"""Writing the demo dataset: images, masks, reports, tokenizer, datalists and manifests, atomically and idempotently.

:func:`ensure_demo_data` is the entry point the bundles call; :func:`main` is ``python -m sista_monai.data.demo``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from sista_monai.io.files import StagedFolder, sha256_file

from ..datalist import write_json_atomic
from ..tokenizer import train_wordpiece_tokenizer
from .counterfactual import twin_plans
from .dicom import _PHI_KEYWORDS, ENCODING_PROFILES, _dicom_dataset, _patient_phi, _stored_pixels, _study_phi, _uid
from .plan import _STREAM_ENCODING, _STREAM_REPORT, LABEL_NAMES, ZONE_NAMES, StudyPlan, _rng, plan_studies
from .render import render_study
from .reports import compose_report
from .splits import _label_subsets, _split_patients

__all__ = ["GENERATOR_NAME", "GENERATOR_VERSION", "generate_demo_data", "ensure_demo_data", "main"]

logger = logging.getLogger("sista_monai.data.demo")  # the package's name, as before it was a package

GENERATOR_NAME = "sista_monai.data.demo"
GENERATOR_VERSION = "1.1"

_MIN_STUDIES = 20
_BASE_DATE = datetime.date(2150, 1, 1)


def _parameters(n: int, size: int, seed: int, plant_phi: bool) -> dict[str, Any]:
    return {"n": int(n), "size": int(size), "seed": int(seed), "plant_phi": bool(plant_phi)}


def _check_parameters(n: int, size: int, seed: int) -> None:
    if n < _MIN_STUDIES:
        raise ValueError(f"n must be at least {_MIN_STUDIES} so that every split has studies, got {n}")
    if size < 64:
        raise ValueError(f"size must be at least 64 pixels, got {size}")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")


def generate_demo_data(
    out_dir: str | Path, n: int = 600, size: int = 256, seed: int = 0, plant_phi: bool = False
) -> Path:
    """Write the demo dataset into ``out_dir`` (created; it must be empty or missing).

    This writes in place; :func:`ensure_demo_data` is the safe entry point (atomic, idempotent).

    Args:
        out_dir: the output folder.
        n: number of studies (at least 20).
        size: rows = columns of every image.
        seed: the dataset seed; the same seed gives the same bytes.
        plant_phi: write fake names, IDs, birth dates, accession numbers and institutions into the DICOM
            headers and a fake clinician's name into some reports, and list them in ``phi_manifest.json``.

    Returns:
        ``out_dir`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: invalid parameters.
        FileExistsError: ``out_dir`` is not empty.
    """
    _check_parameters(n, size, seed)
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty")
    for sub in ("images", "masks", "reports"):
        (out / sub).mkdir(parents=True, exist_ok=True)

    plans = plan_studies(n, seed)
    splits = _split_patients(plans, seed)
    encoding_order = _rng(seed, _STREAM_ENCODING).permutation(n)
    items: dict[str, dict[str, Any]] = {}
    phi_items: dict[str, dict[str, Any]] = {}
    encodings: Counter = Counter()
    for plan in plans:
        rendered = render_study(plan, size, seed)
        profile = ENCODING_PROFILES[int(encoding_order[plan.index]) % len(ENCODING_PROFILES)]
        stored, low, high = _stored_pixels(rendered.image, profile, _rng(seed, _STREAM_ENCODING, plan.index))

        study_date = (_BASE_DATE + datetime.timedelta(days=plan.index * 3 + plan.patient)).strftime("%Y%m%d")
        header: dict[str, Any] = {
            "SOPInstanceUID": _uid(seed, "instance", plan.study_id),
            "StudyInstanceUID": _uid(seed, "study", plan.study_id),
            "SeriesInstanceUID": _uid(seed, "series", plan.study_id),
            "StudyDate": study_date,
            "StudyDescription": "CHEST (PA AND LAT)" if plan.view == "PA" else "CHEST (PORTABLE AP)",
            "ViewPosition": plan.view,
            "PatientSex": plan.sex,
            "PatientName": "",
            "PatientID": f"DEMO{plan.patient + 1:04d}",
            "PatientBirthDate": "",
            "AccessionNumber": "",
            "ReferringPhysicianName": "",
        }
        notify_name = None
        if plant_phi:
            patient_phi, study_phi = _patient_phi(seed, plan.patient), _study_phi(seed, plan.index)
            header.update({k: v for k, v in {**patient_phi, **study_phi}.items() if k[0].isupper()})
            notify_name = study_phi["report_name"]

        def write_report(name: str | None, plan: StudyPlan = plan) -> str:
            return compose_report(plan.findings, plan.view, plan.sex, _rng(seed, _STREAM_REPORT, plan.index), name)

        report = write_report(notify_name)
        # the tokenizer never learns planted names: it is trained on the same reports without them
        tokenizer_text = report if notify_name is None else write_report(None)
        ds = _dicom_dataset(stored, low, high, profile, header, size)
        image_path = f"images/{plan.study_id}.dcm"
        mask_path = f"masks/{plan.study_id}.png"
        ds.save_as(out / image_path, enforce_file_format=True)
        Image.fromarray(rendered.pneumothorax_mask).save(out / mask_path)
        (out / "reports" / f"{plan.study_id}.txt").write_text(report, encoding="utf-8")
        encodings[(profile.photometric, profile.bits_stored, profile.transfer_syntax.name)] += 1

        if plant_phi:
            in_report = [notify_name] if notify_name and notify_name in report else []
            phi_items[plan.study_id] = {
                **{k: header[k] for k in _PHI_KEYWORDS},
                "names_in_report": in_report,
            }
        items[plan.study_id] = {
            "plan": plan,
            "profile": profile,
            "header": header,
            "split": splits[plan.study_id],
            "image": image_path,
            "mask": mask_path,
            "report": report,
            "tokenizer_text": tokenizer_text,
            "labels": plan.labels(),
            "findings": rendered.findings,
            "zones": rendered.zones,
        }

    by_split = {s: [i for i in items.values() if i["split"] == s] for s in ("training", "validation", "test")}
    subsets = _label_subsets([i["plan"] for i in by_split["training"]], seed)
    _write_datalists(out, by_split, subsets, seed)
    _write_counterfactuals(out, by_split, size, seed)
    train_wordpiece_tokenizer([i["tokenizer_text"] for i in by_split["training"]], out / "tokenizer")
    if plant_phi:
        _write_phi_manifest(out, phi_items)
    _write_manifest(out, n, size, seed, plant_phi, plans, by_split, encodings)
    return out


def _write_datalists(out: Path, by_split: dict[str, list[dict]], subsets: dict[str, list[str]], seed: int) -> None:
    def listing(make) -> dict[str, Any]:
        lists = {split: [make(i) for i in entries] for split, entries in by_split.items()}
        training = {i["id"]: i for i in lists["training"]}
        for key, ids in subsets.items():
            lists[key] = [training[i] for i in sorted(ids)]
        return lists

    common = {
        "name": "SISTA-MONAI synthetic chest radiographs",
        "reference": f"{GENERATOR_NAME} {GENERATOR_VERSION}, seed {seed}",
        "licence": "CC0-1.0 (synthetic)",
        "tensorImageSize": "2D",
        "numTraining": len(by_split["training"]),
        "numTest": len(by_split["test"]),
    }
    pretrain = {
        "description": "Image-report pairs with finding labels, finding boxes and lung zones (patient's sides).",
        "label_names": list(LABEL_NAMES),
        "box_mode": "xywh",
        **{
            split: [
                {k: i[k] for k in ("image", "report", "labels", "findings", "zones")} | {"id": i["plan"].study_id}
                for i in entries
            ]
            for split, entries in by_split.items()
        },
    }
    write_json_atomic(out / "datalist_pretrain.json", {**common, **pretrain})
    classification = listing(lambda i: {"id": i["plan"].study_id, "image": i["image"], "label": i["labels"][1]})
    write_json_atomic(
        out / "datalist_classification.json",
        {
            **common,
            "description": "Pneumonia-like lung opacity present (1) or absent (0).",
            "labels": {"0": "no opacity", "1": "Lung Opacity"},
            **classification,
        },
    )
    segmentation = listing(lambda i: {"id": i["plan"].study_id, "image": i["image"], "mask": i["mask"]})
    write_json_atomic(
        out / "datalist_segmentation.json",
        {
            **common,
            "description": "Pneumothorax masks (uint8 PNG, 0/1, rows x columns; empty when absent).",
            "labels": {"0": "background", "1": "Pneumothorax"},
            **segmentation,
        },
    )

    def detection_item(i: dict) -> dict[str, Any]:
        boxes = [f["box"] for f in i["findings"] if f["name"] in ("Lung Opacity", "Consolidation")]
        return {"id": i["plan"].study_id, "image": i["image"], "boxes": boxes, "labels": [0] * len(boxes)}

    write_json_atomic(
        out / "datalist_detection.json",
        {
            **common,
            "description": "Lung opacity boxes [x, y, width, height] in DICOM pixels.",
            "box_mode": "xywh",
            "labels": {"0": "Lung Opacity"},
            **listing(detection_item),
        },
    )


def _write_counterfactuals(out: Path, by_split: dict[str, list[dict]], size: int, seed: int) -> None:
    """``counterfactual/<id>.dcm`` and ``datalist_counterfactual.json``: the twins of the validation and test studies.

    Each item pairs a study (``image``, its ``report``, ``findings``, ``zones``, ``labels``) with one twin
    (``twin_image``) in which one lesion finding was moved (:mod:`.counterfactual`); ``moved`` names the finding's
    lesion class and its zones, ``finding`` and ``twin_finding`` hold that finding's box in each image (lists of one,
    as :class:`~sista_monai.transforms.LesionMaskd` reads them). The twin's DICOM has the study's encoding profile and
    header with UIDs of its own.
    """
    (out / "counterfactual").mkdir(exist_ok=True)
    listing: dict[str, list[dict[str, Any]]] = {}
    for split in ("validation", "test"):
        listing[split] = []
        for item in by_split[split]:
            plan = item["plan"]
            for twin in twin_plans(plan, size, seed, drawn=item["findings"]):
                twin_id = f"{plan.study_id}_{twin.lesion_class}"
                profile = item["profile"]
                stored, low, high = _stored_pixels(
                    twin.rendered.image, profile, _rng(seed, _STREAM_ENCODING, plan.index)
                )
                header = dict(item["header"])
                for kind, key in (("instance", "SOPInstanceUID"), ("study", "StudyInstanceUID")):
                    header[key] = _uid(seed, kind, twin_id)
                header["SeriesInstanceUID"] = _uid(seed, "series", twin_id)
                twin_path = f"counterfactual/{twin_id}.dcm"
                _dicom_dataset(stored, low, high, profile, header, size).save_as(
                    out / twin_path, enforce_file_format=True
                )
                listing[split].append(
                    {
                        "id": twin_id,
                        "study": plan.study_id,
                        "image": item["image"],
                        "twin_image": twin_path,
                        "report": item["report"],
                        "labels": item["labels"],
                        "findings": item["findings"],
                        "twin_findings": twin.rendered.findings,
                        "zones": item["zones"],
                        "twin_zones": twin.rendered.zones,
                        "finding": [twin.original_finding],
                        "twin_finding": [twin.moved_finding],
                        "moved": {
                            "lesion_class": twin.lesion_class,
                            "name": twin.original_finding["name"],
                            "from": twin.original_finding["zone"],
                            "to": twin.moved_finding["zone"],
                        },
                    }
                )
    write_json_atomic(
        out / "datalist_counterfactual.json",
        {
            "name": "SISTA-MONAI synthetic chest radiographs: counterfactual twins",
            "reference": f"{GENERATOR_NAME} {GENERATOR_VERSION}, seed {seed}",
            "description": (
                "Each validation/test study with exactly one drawn finding of a lesion class, paired with a twin "
                "rendered from the same plan with that finding moved (opacity to another zone, pneumothorax and "
                "effusion to the other side): identical patient, exposure and noise; the original report kept."
            ),
            "box_mode": "xywh",
            **listing,
        },
    )


def _write_phi_manifest(out: Path, phi_items: dict[str, dict[str, Any]]) -> None:
    strings: set[str] = set()
    name_parts: set[str] = set()
    for entry in phi_items.values():
        strings.update(entry[key] for key in _PHI_KEYWORDS if key != "PatientBirthDate")
        strings.update(entry["names_in_report"])
        for key in ("PatientName", "ReferringPhysicianName"):
            name_parts.update(entry[key].split("^"))
        for name in entry["names_in_report"]:
            name_parts.update(name.split(" "))
    write_json_atomic(
        out / "phi_manifest.json",
        {
            "description": (
                "Fake identifiers planted by --plant-phi. 'strings' are the exact planted values (header "
                "values, names written into reports), distinctive and safe to search for in any output; "
                "'name_parts' are their given and family names alone, for a looser search; birth dates "
                "(DICOM DA, YYYYMMDD) are listed apart because eight digits can occur by chance inside UIDs. "
                "Per item: the header values and the names written into its report."
            ),
            "strings": sorted(strings),
            "name_parts": sorted(name_parts),
            "birth_dates": sorted({e["PatientBirthDate"] for e in phi_items.values()}),
            "items": phi_items,
        },
    )


def _write_manifest(
    out: Path,
    n: int,
    size: int,
    seed: int,
    plant_phi: bool,
    plans: Sequence[StudyPlan],
    by_split: dict[str, list[dict]],
    encodings: Counter,
) -> None:
    label_counts = {name: int(sum(p.labels()[k] for p in plans)) for k, name in enumerate(LABEL_NAMES)}
    files = {
        path.relative_to(out).as_posix(): sha256_file(path)
        for path in sorted(out.rglob("*"))
        if path.is_file() and path.name != "manifest.json"
    }
    write_json_atomic(
        out / "manifest.json",
        {
            "generator": GENERATOR_NAME,
            "version": GENERATOR_VERSION,
            "parameters": _parameters(n, size, seed, plant_phi),
            "label_names": list(LABEL_NAMES),
            "zone_names": list(ZONE_NAMES),
            "conventions": {
                "sides": "patient's: 'right' is the image's left (small column index) on these frontal views",
                "box": "[x, y, width, height] in DICOM pixels, x = column, y = row (MONAI 'xywh')",
                "mask": "uint8 PNG, values 0/1, (rows, columns) like the DICOM pixel array",
                "uncertain_mentions": "hedged report mentions are only written about drawn findings; label 1",
            },
            "counts": {
                "studies": len(plans),
                "patients": len({p.patient for p in plans}),
                "splits": {split: len(entries) for split, entries in by_split.items()},
                "labels": label_counts,
                "encodings": {f"{pi} {bits}-bit {ts}": c for (pi, bits, ts), c in sorted(encodings.items())},
            },
            "files": files,
        },
    )


# ------------------------------------------------------------------------------------------- ensuring
def _read_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("generator") == GENERATOR_NAME else None


def _is_current(folder: Path, parameters: dict[str, Any], verify: bool) -> bool:
    manifest = _read_manifest(folder)
    if manifest is None or manifest.get("version") != GENERATOR_VERSION or manifest.get("parameters") != parameters:
        return False
    files = manifest.get("files") or {}
    for relative, digest in files.items():
        path = folder / relative
        if not path.is_file() or (verify and sha256_file(path) != digest):
            logger.warning("demo data in %s is damaged (%s); regenerating", folder, relative)
            return False
    return bool(files)


def ensure_demo_data(
    out_dir: str | Path,
    n: int = 600,
    size: int = 256,
    seed: int = 0,
    plant_phi: bool = False,
    verify: bool = True,
    force: bool = False,
) -> Path:
    """Return ``out_dir`` holding the demo data for these parameters, generating it when needed.

    Nothing is done when the folder's ``manifest.json`` names the same generator version and parameters
    and (with ``verify``) every listed file has its recorded SHA-256. Otherwise the data is generated into
    a temporary sibling folder and renamed into place, so an interrupted run never leaves a half-written
    dataset and concurrent callers (several ranks) end with one complete copy.

    Args:
        out_dir: the dataset folder, e.g. ``data/demo``.
        n: number of studies (at least 20).
        size: rows = columns of every image.
        seed: the dataset seed.
        plant_phi: plant fake identifiers (see :func:`generate_demo_data`).
        verify: check the SHA-256 of every file, not only the parameters.
        force: regenerate even when the folder is current.

    Returns:
        ``out_dir`` as a :class:`~pathlib.Path`.

    Raises:
        FileExistsError: ``out_dir`` exists, is not empty and was not written by this generator (it is
            never replaced then).
    """
    _check_parameters(n, size, seed)
    out = Path(out_dir)
    parameters = _parameters(n, size, seed, plant_phi)
    if not force and _is_current(out, parameters, verify):
        logger.info("demo data in %s is current", out)
        return out
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and _read_manifest(out) is None)):
        raise FileExistsError(f"{out} exists and is not demo data written by {GENERATOR_NAME}; not replacing it")

    keep = None if force else lambda folder: _is_current(folder, parameters, verify)  # another process finished first
    with StagedFolder(out, keep=keep) as staging:
        start = time.perf_counter()
        generate_demo_data(staging, n=n, size=size, seed=seed, plant_phi=plant_phi)
        logger.info("generated %d demo studies (%d px, seed %d) in %.1f s", n, size, seed, time.perf_counter() - start)
    return out


# ------------------------------------------------------------------------------------------------ CLI
def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m sista_monai.data.demo --out data/demo [--n 600] [--size 256] ...``."""
    parser = argparse.ArgumentParser(
        prog="python -m sista_monai.data.demo", description="Generate the synthetic chest radiograph demo data."
    )
    parser.add_argument("--out", default="data/demo", help="output folder (default: data/demo)")
    parser.add_argument("--n", type=int, default=600, help="number of studies (default: 600)")
    parser.add_argument("--size", type=int, default=256, help="image rows = columns (default: 256)")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed (default: 0)")
    parser.add_argument("--plant-phi", action="store_true", help="plant fake identifiers for privacy tests")
    parser.add_argument("--force", action="store_true", help="regenerate even if the folder is current")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("sista_monai").setLevel(logging.INFO)
    start = time.perf_counter()
    try:
        out = ensure_demo_data(
            args.out, n=args.n, size=args.size, seed=args.seed, plant_phi=args.plant_phi, force=args.force
        )
    except (ValueError, FileExistsError) as err:
        parser.error(str(err))
    counts = (_read_manifest(out) or {}).get("counts", {})
    print(
        f"demo data in {out}: {counts.get('studies')} studies ({counts.get('splits')}), {args.size} px, "
        f"seed {args.seed}{', planted PHI' if args.plant_phi else ''} ({time.perf_counter() - start:.1f} s)"
    )
    return 0
