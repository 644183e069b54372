"""Synthetic chest radiograph demo data: real DICOM files, reports, labels, boxes, masks and datalists.

Every bundle trains on this data when nothing else is configured. Because the generator draws the findings
itself, the ground truth is exact: which findings a study has, where (a lung zone and a box in pixels), the
pneumothorax mask, and a report that says so in varied words. The data therefore measures what SISTA
claims: false-negative flags against finding agreement, patch-word grounding against the finding's zone,
and the downstream tasks against real boxes and masks.

Command::

    python -m sista_monai.data.demo --out data/demo [--n 600] [--size 256] [--seed 0] [--plant-phi] [--force]

Conventions (read these before measuring anything on the data):

* **Sides are the patient's.** A frontal (PA or AP) radiograph is displayed as if facing the patient, so
  the patient's *right* lung is on the image's *left* (small column index) and the heart, which sits to the
  patient's left, bulges towards the image's *right*. Zone names (``"right lower"``) and report words
  ("right lower lobe") use the patient's side. The DICOM files say so with PatientOrientation ``L\\F``
  (columns run towards the patient's left, rows towards the feet).
* **Boxes are** ``[x, y, width, height]`` in DICOM pixels (MONAI box mode ``"xywh"``): ``x`` is the column,
  ``y`` the row, and the box covers columns ``x .. x + width - 1`` and rows ``y .. y + height - 1``. With
  :class:`~sista_monai.transforms.LoadChestXray` (layout ``(1, W, H)``) that is ``image[0, x:x+w, y:y+h]``.
* **Masks** are single-channel ``uint8`` PNGs with values 0/1 in the pixel array's ``(rows, columns)``
  orientation, so MONAI's ``PILReader`` gives the same ``(W, H)`` layout as the image loader.
* **Labels** follow the CheXpert names in :data:`LABEL_NAMES`. ``Lung Opacity`` is 1 for any opacity;
  ``Consolidation`` is 1 for the dense kind only; ``No Finding`` is 1 when no other label is. Hedged report
  mentions are only written about drawn findings and are labelled 1 (U-ones), so labels follow the image.

Output layout (every path inside a JSON file is relative to that file's folder)::

    images/<id>.dcm  masks/<id>.png  reports/<id>.txt  tokenizer/
    datalist_pretrain.json  datalist_classification.json  datalist_segmentation.json
    datalist_detection.json  manifest.json  [phi_manifest.json]

The output is byte-for-byte reproducible for a seed: UIDs are derived from the seed, dates are fixed,
JSON keys are sorted, and nothing records the time or the machine.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEG2000Lossless, RLELossless
from scipy import ndimage

from .demo_reports import ReportFinding, compose_report
from .tokenizer import train_wordpiece_tokenizer

__all__ = [
    "GENERATOR_NAME",
    "GENERATOR_VERSION",
    "LABEL_NAMES",
    "ZONE_NAMES",
    "ENCODING_PROFILES",
    "EncodingProfile",
    "StudyPlan",
    "RenderedStudy",
    "plan_studies",
    "render_study",
    "generate_demo_data",
    "ensure_demo_data",
    "main",
]

logger = logging.getLogger("sista_monai.data.demo")  # the same name when run with ``python -m``

GENERATOR_NAME = "sista_monai.data.demo"
GENERATOR_VERSION = "1.0"

#: Finding labels, CheXpert names, in the order of every ``labels`` vector.
LABEL_NAMES: tuple[str, ...] = (
    "No Finding",
    "Lung Opacity",
    "Consolidation",
    "Pneumothorax",
    "Pleural Effusion",
    "Cardiomegaly",
)
#: The six lung zones, the patient's side first.
ZONE_NAMES: tuple[str, ...] = tuple(f"{s} {lv}" for s in ("right", "left") for lv in ("upper", "middle", "lower"))

_SPLIT_FRACTIONS = (0.70, 0.15, 0.15)
_LABEL_FRACTIONS = {"training_1": 0.01, "training_10": 0.10}
_MIN_SUBSET = 8
_MIN_STUDIES = 20
_FIELD_OF_VIEW_MM = 430.0
_BASE_DATE = datetime.date(2150, 1, 1)
_UID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "sista-monai/synthetic-demo-data")

# Random-stream identifiers. A study's patient, findings, image and report come from streams of its own
# (keyed by its index), so they do not change with n; only the split and the encoding order depend on n.
_STREAM_PATIENTS, _STREAM_SPLIT, _STREAM_SUBSETS, _STREAM_ENCODING = 1, 2, 3, 4
_STREAM_PLAN, _STREAM_IMAGE, _STREAM_REPORT, _STREAM_PHI, _STREAM_FINDINGS = 11, 12, 13, 14, 16
_STREAM_PATIENT_PHI, _STREAM_PATIENT_SEX = 15, 17

_SOP_CLASS = {
    "DX": "1.2.840.10008.5.1.4.1.1.1.1",  # Digital X-Ray Image Storage - For Presentation
    "CR": "1.2.840.10008.5.1.4.1.1.1",  # Computed Radiography Image Storage
}


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([seed, *keys])


def _uid(seed: int, kind: str, study_id: str) -> str:
    """A UID that depends only on the seed, its kind and the study.

    ``2.25.`` followed by the integer of a name-based (SHA-1, version 5) UUID, the UUID-derived UID form of
    DICOM PS3.5 B.2. (pydicom's ``generate_uid(prefix=None)`` ignores its entropy sources and is random.)
    """
    return f"2.25.{uuid.uuid5(_UID_NAMESPACE, f'{seed}/{kind}/{study_id}').int}"


def _zone_code(side: str, level: str) -> int:
    return {"right": 1, "left": 2}.get(side, 0) * 4 + {"upper": 1, "middle": 2, "lower": 3}.get(level, 0)


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


# --------------------------------------------------------------------------------------------- planning
@dataclass(frozen=True)
class StudyPlan:
    """What a study shows, decided before anything is drawn.

    Attributes:
        index: study number, 0-based.
        study_id: the datalist id (``demo_0000``).
        patient: patient number, 0-based (several studies can share one).
        view: ``"PA"`` or ``"AP"``.
        sex: ``"M"`` or ``"F"``.
        findings: the findings to draw and report; empty for a normal study.
    """

    index: int
    study_id: str
    patient: int
    view: str
    sex: str
    findings: tuple[ReportFinding, ...] = ()

    def labels(self) -> list[int]:
        """The finding-label vector in :data:`LABEL_NAMES` order."""
        names = {f.name for f in self.findings}
        positive = {
            "Lung Opacity": bool(names & {"Lung Opacity", "Consolidation"}),
            "Consolidation": "Consolidation" in names,
            "Pneumothorax": "Pneumothorax" in names,
            "Pleural Effusion": "Pleural Effusion" in names,
            "Cardiomegaly": "Cardiomegaly" in names,
        }
        positive["No Finding"] = not any(positive.values())
        return [int(positive[name]) for name in LABEL_NAMES]


def _plan_findings(rng: np.random.Generator) -> tuple[ReportFinding, ...]:
    if rng.random() < 0.35:
        return ()
    while True:
        has_opacity = rng.random() < 0.5
        has_ptx = rng.random() < 0.3
        has_eff = rng.random() < 0.3
        has_cardio = rng.random() < 0.25
        if has_opacity or has_ptx or has_eff or has_cardio:
            break
    findings: list[ReportFinding] = []
    if has_opacity:
        zones = [(s, lv) for s in ("right", "left") for lv in ("upper", "middle", "lower")]
        weights = np.array([0.6, 0.9, 1.5, 0.6, 0.8, 1.4])
        count = 2 if rng.random() < 0.2 else 1
        picked = rng.choice(len(zones), size=count, replace=False, p=weights / weights.sum())
        for z in sorted(int(i) for i in picked):
            dense = rng.random() < 0.5
            uncertain = (not dense) and rng.random() < 0.25
            side, level = zones[z]
            findings.append(ReportFinding("Consolidation" if dense else "Lung Opacity", side, level, "", uncertain))
    ptx_side = ""
    if has_ptx:
        ptx_side = "right" if rng.random() < 0.5 else "left"
        severity = "moderate" if rng.random() < 0.4 else "small"
        uncertain = severity == "small" and rng.random() < 0.15
        findings.append(ReportFinding("Pneumothorax", ptx_side, "upper", severity, uncertain))
    if has_eff:
        side = "right" if rng.random() < 0.5 else "left"
        if side == ptx_side:
            side = "left" if side == "right" else "right"
        severity = "moderate" if rng.random() < 0.4 else "small"
        uncertain = severity == "small" and rng.random() < 0.15
        findings.append(ReportFinding("Pleural Effusion", side, "lower", severity, uncertain))
    if has_cardio:
        findings.append(ReportFinding("Cardiomegaly", "", "", "moderate" if rng.random() < 0.4 else "mild"))
    return tuple(findings)


def _assign_patients(n: int, seed: int) -> list[int]:
    """Patient number of every study: about one patient in five has two or three studies."""
    rng = _rng(seed, _STREAM_PATIENTS)
    patients: list[int] = []
    run = 0
    for i in range(n):
        if i > 0 and run < 3 and rng.random() < 0.22:
            patients.append(patients[-1])
            run += 1
        else:
            patients.append(patients[-1] + 1 if patients else 0)
            run = 1
    return patients


def plan_studies(n: int, seed: int) -> list[StudyPlan]:
    """Decide every study's patient, view, sex and findings.

    Args:
        n: number of studies.
        seed: the dataset seed.

    Returns:
        One :class:`StudyPlan` per study, in order.
    """
    width = max(4, len(str(n - 1)))
    patients = _assign_patients(n, seed)
    plans = []
    for i in range(n):
        rng = _rng(seed, _STREAM_PLAN, i)
        view = "AP" if rng.random() < 0.25 else "PA"
        sex = "F" if _rng(seed, _STREAM_PATIENT_SEX, patients[i]).random() < 0.5 else "M"
        plans.append(StudyPlan(i, f"demo_{i:0{width}d}", patients[i], view, sex, _plan_findings(rng)))
    return plans


# -------------------------------------------------------------------------------------------- rendering
@dataclass
class RenderedStudy:
    """A drawn radiograph and its geometry, all in DICOM pixel coordinates.

    Attributes:
        image: ``(rows, columns)`` float32 in ``[0, 1]``, higher = brighter on a standard display.
        pneumothorax_mask: ``(rows, columns)`` uint8, 1 inside the pneumothorax.
        zones: the six lung-zone rectangles, ``[x, y, width, height]``.
        findings: ``{"name", "zone", "box", "uncertain"}`` per finding (zone ``None`` for cardiomegaly).
        cardiothoracic_ratio: heart width over thoracic width as drawn.
    """

    image: np.ndarray
    pneumothorax_mask: np.ndarray
    zones: dict[str, list[int]]
    findings: list[dict[str, Any]] = field(default_factory=list)
    cardiothoracic_ratio: float = 0.0


def _bbox(mask: np.ndarray) -> list[int]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return [0, 0, 0, 0]
    return [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)]


def _segment_distance(
    u: np.ndarray, v: np.ndarray, p0: tuple[float, float], p1: tuple[float, float]
) -> np.ndarray:
    du, dv = p1[0] - p0[0], p1[1] - p0[1]
    t = np.clip(((u - p0[0]) * du + (v - p0[1]) * dv) / (du * du + dv * dv), 0.0, 1.0)
    return np.hypot(u - (p0[0] + t * du), v - (p0[1] + t * dv))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -30.0, 30.0)))


def render_study(plan: StudyPlan, size: int, seed: int) -> RenderedStudy:
    """Draw a frontal chest radiograph with the plan's findings.

    The drawing works in normalised anatomical coordinates ``(u, v)`` (``u`` across, ``v`` down) that are
    shifted, scaled and rotated per study, composes densities (body, lungs, heart, mediastinum, spine,
    ribs, clavicles, vessels, findings), then applies scanner-like blur, exposure gradient, contrast,
    gamma and noise. Every finding draws from a random stream of its own, so rendering the same plan
    without a finding (``dataclasses.replace(plan, findings=...)``) gives the identical patient, exposure,
    noise and other findings: a counterfactual twin whose difference image is that finding's effect.

    Args:
        plan: the study's plan.
        size: rows = columns = ``size``.
        seed: the dataset seed (the study draws from its own stream of it).

    Returns:
        The image and its ground-truth geometry.
    """
    rng = _rng(seed, _STREAM_IMAGE, plan.index)
    h = w = size
    px = size / 256.0
    scale = rng.uniform(0.92, 1.06)
    cx = 0.5 + rng.uniform(-0.035, 0.035)
    shift = rng.uniform(-0.03, 0.03)
    angle = np.deg2rad(rng.uniform(-3.0, 3.0))
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float32)
    u0, v0 = (cols + 0.5) / w, (rows + 0.5) / h
    ca, sa = np.float32(math.cos(angle)), np.float32(math.sin(angle))
    u = cx + ca * (u0 - cx) + sa * (v0 - 0.5)
    v = 0.5 - sa * (u0 - cx) + ca * (v0 - 0.5)

    thorax = 0.34 * scale
    medial = 0.05 * scale
    v_top = 0.13 + shift
    lung_h = 0.58 * scale
    t = (v - v_top) / lung_h
    across = np.abs(u - cx)

    # lungs: rounded apex, straight walls, diaphragm dome (the patient's right dome sits higher)
    lung: dict[str, np.ndarray] = {}
    q_side: dict[str, np.ndarray] = {}
    apex = np.where(t < 0.5, np.sqrt(np.clip(1.0 - ((t - 0.5) / 0.5) ** 2, 0.0, 1.0)), 1.0)
    for side, sign in (("right", -1.0), ("left", 1.0)):
        q = (sign * (u - cx) - medial) / (thorax - medial)
        dome_height = rng.uniform(0.10, 0.14) + (0.03 if side == "right" else 0.0)
        dome = 1.0 - dome_height * np.exp(-(((q - 0.35) / 0.38) ** 2))
        lung[side] = (np.abs(q - 0.5) <= 0.5 * apex) & (t >= 0.0) & (t <= dome)
        q_side[side] = q

    # heart: a cardiothoracic ratio above 0.5 is cardiomegaly; it extends further to the patient's left
    cardio = next((f for f in plan.findings if f.name == "Cardiomegaly"), None)
    if cardio is None:
        ctr = rng.uniform(0.38, 0.46)
    else:
        ctr = rng.uniform(0.55, 0.60) if cardio.severity == "mild" else rng.uniform(0.60, 0.66)
    heart_width = ctr * 2.0 * thorax
    hx, ha = cx + 0.15 * heart_width, heart_width / 2.0
    hy, hb = v_top + 0.72 * lung_h, 0.22 * lung_h * math.sqrt(ctr / 0.42)
    below = np.maximum(v - hy, 0.0) / (1.6 * hb)  # the lower part is flatter and rests on the diaphragm
    heart = ((((u - hx) / ha) ** 2 + (np.minimum(v - hy, 0.0) / hb) ** 2 + below**2) <= 1.0) & (t <= 0.9)
    visible = {side: lung[side] & ~heart for side in lung}
    lungs_visible = visible["right"] | visible["left"]

    zones: dict[str, list[int]] = {}
    for side in ("right", "left"):
        x, y, bw, bh = _bbox(visible[side])
        edges = [y + round(k * bh / 3.0) for k in range(4)]
        for k, level in enumerate(("upper", "middle", "lower")):
            zones[f"{side} {level}"] = [x, edges[k], bw, edges[k + 1] - edges[k]]

    body = (np.abs((u - cx) / (0.45 * scale)) ** 2.6 + np.abs((v - 0.66 - shift) / 0.64) ** 2.6) <= 1.0
    body |= (across < 0.09 * scale) & (v < 0.25)
    density = np.full((h, w), 0.04, dtype=np.float32)
    density += 0.50 * body
    density += (across < 0.033 * scale) * (0.10 + 0.025 * np.cos(2.0 * np.pi * v / 0.045))
    density += 0.04 * ((across < medial + 0.01) & (t < 0.6))
    density -= 0.13 * ((across < 0.013 * scale) & (t < 0.32))
    density += 0.05 * (np.hypot(u - (cx + 0.055 * scale), v - (v_top + 0.27 * lung_h)) < 0.03 * scale)
    lung_soft = ndimage.gaussian_filter(lungs_visible.astype(np.float32), sigma=1.2 * px)
    density -= 0.36 * lung_soft
    density += 0.08 * heart

    cage = (across > 0.035 * scale) & (across < thorax + 0.03) & (t > -0.08) & (t < 1.02) & body
    spacing = lung_h / 9.0
    posterior = (v - v_top - 1.2 * np.maximum(across - 0.04, 0.0) ** 2) / spacing
    density += 0.09 * cage * np.clip((np.cos(2.0 * np.pi * posterior) - 0.35) / 0.65, 0.0, 1.0)
    anterior = (v - v_top + 0.8 * across**2) / (1.3 * spacing)
    density += 0.035 * (cage & (across > 0.06)) * np.clip((np.cos(2.0 * np.pi * anterior) - 0.5) / 0.5, 0.0, 1.0)
    for sign in (-1.0, 1.0):
        medial_end, lateral_end = (cx + sign * 0.035, v_top + 0.035), (cx + sign * 0.27 * scale, v_top - 0.045)
        clavicle = _segment_distance(u, v, medial_end, lateral_end)
        density += 0.11 * (clavicle < 0.016 * scale)

    texture = ndimage.gaussian_filter(rng.standard_normal((h, w)).astype(np.float32), sigma=1.3 * px)
    texture /= float(texture.std()) + 1e-6
    hilar = sum(
        np.exp(-((u - (cx + sign * 0.11 * scale)) ** 2 + (v - (v_top + 0.45 * lung_h)) ** 2) / (2 * 0.08**2))
        for sign in (-1.0, 1.0)
    )
    markings = (0.022 * texture + 0.05 * hilar) * lung_soft

    findings: list[dict[str, Any]] = []
    ptx_mask = np.zeros((h, w), dtype=bool)
    for f in plan.findings:
        finding_rng = _rng(seed, _STREAM_FINDINGS, plan.index, LABEL_NAMES.index(f.name), _zone_code(f.side, f.level))
        if f.name in ("Lung Opacity", "Consolidation"):
            zone = f"{f.side} {f.level}"
            zx, zy, zw, zh = zones[zone]
            inside = np.zeros((h, w), dtype=bool)
            inside[zy + zh // 5 : zy + zh - zh // 5, zx + zw // 5 : zx + zw - zw // 5] = True
            candidates = np.argwhere(ndimage.binary_erosion(visible[f.side], iterations=max(1, round(3 * px))) & inside)
            if candidates.size == 0:
                candidates = np.argwhere(visible[f.side] & inside)
            r0, c0 = candidates[int(finding_rng.integers(len(candidates)))]
            shape = np.zeros((h, w), dtype=np.float32)
            for _ in range(int(finding_rng.integers(2, 5))):
                br, bc = r0 + finding_rng.normal(0.0, 0.02 * size), c0 + finding_rng.normal(0.0, 0.025 * size)
                ry, rx = finding_rng.uniform(0.03, 0.06) * size, finding_rng.uniform(0.035, 0.065) * size
                shape = np.maximum(shape, np.exp(-0.5 * (((rows - br) / ry) ** 2 + ((cols - bc) / rx) ** 2)))
            if f.name == "Consolidation":
                shape = np.clip((shape - 0.3) / 0.25, 0.0, 1.0)
                amplitude = finding_rng.uniform(0.26, 0.34)
            else:
                amplitude = finding_rng.uniform(0.12, 0.16) if f.uncertain else finding_rng.uniform(0.16, 0.22)
            shape *= ndimage.gaussian_filter(visible[f.side].astype(np.float32), sigma=1.0 * px)
            density += amplitude * shape
            box = _bbox(shape > 0.35)
            findings.append({"name": f.name, "zone": zone, "box": box, "uncertain": f.uncertain})
        elif f.name == "Pneumothorax":
            side_lung, q = lung[f.side], q_side[f.side]
            reference = side_lung | ((q < 0.3) & (t > 0.2)) | (t > 0.75)
            distance = ndimage.distance_transform_edt(reference)
            low, high = (0.065, 0.09) if f.severity == "moderate" else (0.04, 0.06)
            taper = np.clip(1.0 - t / finding_rng.uniform(0.5, 0.85), 0.0, 1.0) ** 0.6  # deepest at the apex
            depth = finding_rng.uniform(low, high) * size * taper
            region = side_lung & (distance <= depth)
            line = side_lung & ~region & (distance <= depth + max(1.0, 1.2 * px)) & (depth >= 1.0)
            density += -0.05 * region + (0.09 if f.uncertain else 0.13) * line + 0.03 * (side_lung & ~region)
            markings *= ~region
            ptx_mask |= region
            findings.append({"name": f.name, "zone": f"{f.side} upper", "box": _bbox(region), "uncertain": f.uncertain})
        elif f.name == "Pleural Effusion":
            side_lung, q = lung[f.side], q_side[f.side]
            depth = finding_rng.uniform(0.24, 0.34) if f.severity == "moderate" else finding_rng.uniform(0.12, 0.20)
            level = 1.0 - depth - finding_rng.uniform(0.06, 0.14) * np.clip(q, 0.0, 1.0) ** 2
            side_soft = ndimage.gaussian_filter(visible[f.side].astype(np.float32), sigma=px)
            fluid = _sigmoid((t - level) / 0.015) * side_soft
            density += 0.32 * fluid
            markings *= 1.0 - fluid
            box = _bbox((fluid > 0.5) & visible[f.side])
            findings.append({"name": f.name, "zone": f"{f.side} lower", "box": box, "uncertain": f.uncertain})
        elif f.name == "Cardiomegaly":
            findings.append({"name": f.name, "zone": None, "box": _bbox(heart), "uncertain": f.uncertain})

    density += markings
    density = ndimage.gaussian_filter(density, sigma=rng.uniform(0.5, 1.1) * px)
    density += rng.uniform(-0.05, 0.05) * (u0 - 0.5)
    image = np.clip(density * rng.uniform(0.9, 1.3) + rng.uniform(-0.03, 0.06), 0.0, 1.0) ** rng.uniform(0.8, 1.2)
    image = image + rng.normal(0.0, rng.uniform(0.006, 0.02), size=(h, w)) * (0.5 + 0.5 * image)
    return RenderedStudy(
        image=np.clip(image, 0.0, 1.0).astype(np.float32),
        pneumothorax_mask=ptx_mask.astype(np.uint8),
        zones=zones,
        findings=findings,
        cardiothoracic_ratio=float(ctr),
    )


# --------------------------------------------------------------------------------------------- encoding
@dataclass(frozen=True)
class EncodingProfile:
    """How one kind of scanner stores its pixels.

    Attributes:
        name: ManufacturerModelName written to the file.
        modality: ``"DX"`` (Digital X-Ray, rescale tags always present) or ``"CR"``.
        photometric: ``"MONOCHROME1"`` (stored values inverted: bone is low) or ``"MONOCHROME2"``.
        bits_allocated: 8 or 16.
        bits_stored: 8, 10, 12, 14 or 16.
        stored_range: fraction of the full stored scale the data occupies (low, high).
        rescale: (RescaleSlope, RescaleIntercept), or ``None`` to leave the tags out.
        window: write WindowCenter/WindowWidth covering the data range.
        spacing_tag: ``"PixelSpacing"`` or ``"ImagerPixelSpacing"``.
        transfer_syntax: the transfer syntax UID.
    """

    name: str
    modality: str
    photometric: str
    bits_allocated: int
    bits_stored: int
    stored_range: tuple[float, float]
    rescale: tuple[float, float] | None
    window: bool
    spacing_tag: str
    transfer_syntax: str


_M1, _M2, _PS, _IPS = "MONOCHROME1", "MONOCHROME2", "PixelSpacing", "ImagerPixelSpacing"
_EXPLICIT, _IMPLICIT, _RLE, _J2K = ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless, JPEG2000Lossless

#: Encodings spread over the studies (each appears n/12 times, in a seeded order).
ENCODING_PROFILES: tuple[EncodingProfile, ...] = tuple(
    EncodingProfile(*row)
    for row in (
        # name          modality, PI, alloc, stored, stored range, rescale, window, spacing tag, syntax
        ("Demo DR 12", "DX", _M2, 16, 12, (0.05, 0.92), (1.0, 0.0), True, _IPS, _EXPLICIT),
        ("Demo CR 12i", "CR", _M1, 16, 12, (0.08, 0.95), None, True, _PS, _EXPLICIT),
        ("Demo CR 8", "CR", _M2, 8, 8, (0.03, 0.97), None, False, _PS, _IMPLICIT),
        ("Demo DR 16r", "DX", _M2, 16, 16, (0.02, 0.90), (0.5, -1024.0), True, _IPS, _RLE),
        ("Demo DR 16i", "DX", _M1, 16, 16, (0.05, 0.85), (1.0, 0.0), False, _IPS, _J2K),
        ("Demo CR 14", "CR", _M2, 16, 14, (0.04, 0.80), (1.0, -512.0), False, _PS, _RLE),
        ("Demo CR 8i", "CR", _M1, 8, 8, (0.05, 0.95), None, True, _PS, _EXPLICIT),
        ("Demo DR 12j", "DX", _M2, 16, 12, (0.10, 0.98), (2.0, 0.0), True, _IPS, _J2K),
        ("Demo DR 12ir", "DX", _M1, 16, 12, (0.02, 0.88), (1.0, 0.0), True, _IPS, _RLE),
        ("Demo CR 10", "CR", _M2, 16, 10, (0.06, 0.94), None, False, _PS, _IMPLICIT),
        ("Demo DR 8", "DX", _M2, 8, 8, (0.04, 0.96), (1.0, 0.0), True, _IPS, _EXPLICIT),
        ("Demo DR 16", "DX", _M2, 16, 16, (0.03, 0.93), (1.0, -32768.0), True, _IPS, _J2K),
    )
)


def _ds(value: float) -> str:
    """A Decimal String value without float noise."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return text if text not in ("", "-0") else "0"


def _stored_pixels(
    image: np.ndarray, profile: EncodingProfile, rng: np.random.Generator
) -> tuple[np.ndarray, int, int]:
    """Stored values for a display image: its range within the bit depth, inverted for MONOCHROME1."""
    full = (1 << profile.bits_stored) - 1
    low = int(round(full * (profile.stored_range[0] + rng.uniform(0.0, 0.02))))
    high = int(round(full * (profile.stored_range[1] - rng.uniform(0.0, 0.02))))
    values = image if profile.photometric == "MONOCHROME2" else 1.0 - image
    stored = np.rint(low + values * (high - low))
    dtype = np.uint8 if profile.bits_allocated == 8 else np.uint16
    return stored.astype(dtype), low, high


def _packbits_rows(plane: np.ndarray) -> bytes:
    """One RLE Lossless segment (DICOM PS3.5 G.3.1): PackBits of a byte plane, row by row, vectorised.

    Runs of two or more equal bytes become replicate packets (at most 128 bytes each), maximal stretches of
    single bytes become literal packets (at most 128 bytes each), no packet crosses a row, and an odd-length
    segment is padded with a zero byte. This is the packing of pydicom's own RLE encoder, byte for byte,
    without its per-row Python loop.
    """
    columns = plane.shape[1]
    data = np.ascontiguousarray(plane, dtype=np.uint8).ravel()
    size = data.size
    index = np.arange(size)
    row_start = index % columns == 0
    run_start = row_start.copy()
    run_start[1:] |= data[1:] != data[:-1]
    starts = np.flatnonzero(run_start)
    run_of = np.cumsum(run_start) - 1
    single = (np.diff(np.append(starts, size)) == 1)[run_of]
    after_single = np.concatenate(([False], single[:-1]))
    block_start = single & (row_start | ~after_single)
    in_block = index - np.maximum.accumulate(np.where(block_start, index, 0))
    in_run = index - starts[run_of]
    packet_start = np.where(single, in_block % 128 == 0, in_run % 128 == 0)
    packets = np.flatnonzero(packet_start)
    length = np.diff(np.append(packets, size))
    literal = single[packets]
    # a replicate packet of one byte (the rest of a run after 128-byte packets) has header 0: a literal of 1
    header = np.where(literal, length - 1, (257 - length) & 0xFF).astype(np.uint8)
    written = 1 + np.where(literal, length, 1)
    offset = np.concatenate(([0], np.cumsum(written)[:-1]))
    total = int(written.sum())
    out = np.zeros(total + total % 2, dtype=np.uint8)
    out[offset] = header
    out[offset[~literal] + 1] = data[packets[~literal]]
    literal_bytes = np.flatnonzero(single)
    packet = (np.cumsum(packet_start) - 1)[literal_bytes]
    out[offset[packet] + 1 + literal_bytes - packets[packet]] = data[literal_bytes]
    return out.tobytes()


def _rle_lossless_frame(stored: np.ndarray) -> bytes:
    """An RLE Lossless frame (PS3.5 G.2): the 64-byte header, then one segment per byte plane, MSB first."""
    if stored.dtype.itemsize == 1:
        planes = [stored]
    else:
        planes = [(stored >> 8).astype(np.uint8), (stored & 0xFF).astype(np.uint8)]
    segments = [_packbits_rows(plane) for plane in planes]
    header = np.zeros(16, dtype="<u4")
    header[0] = len(segments)
    header[1 : 1 + len(segments)] = 64 + np.concatenate(([0], np.cumsum([len(s) for s in segments])[:-1]))
    return header.tobytes() + b"".join(segments)


def _dicom_dataset(
    stored: np.ndarray, low: int, high: int, profile: EncodingProfile, header: dict[str, Any], size: int
) -> Dataset:
    sop_class = _SOP_CLASS[profile.modality]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = header["SOPInstanceUID"]
    ds.file_meta.TransferSyntaxUID = (
        ImplicitVRLittleEndian if profile.transfer_syntax == ImplicitVRLittleEndian else ExplicitVRLittleEndian
    )
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = header["SOPInstanceUID"]
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = header["StudyDate"]
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.AccessionNumber = header["AccessionNumber"]
    ds.Modality = profile.modality
    if profile.modality == "DX":  # type 1 attributes of the DX Image Module
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.PixelIntensityRelationship = "LOG"
        ds.PixelIntensityRelationshipSign = -1 if profile.photometric == "MONOCHROME2" else 1
        ds.PresentationLUTShape = "IDENTITY" if profile.photometric == "MONOCHROME2" else "INVERSE"
    ds.Manufacturer = "SISTA-MONAI synthetic demo"
    if header.get("InstitutionName"):
        ds.InstitutionName = header["InstitutionName"]
    ds.ReferringPhysicianName = header["ReferringPhysicianName"]
    ds.StudyDescription = header["StudyDescription"]
    ds.SeriesDescription = header["StudyDescription"]
    ds.ManufacturerModelName = profile.name
    ds.PatientName = header["PatientName"]
    ds.PatientID = header["PatientID"]
    ds.PatientBirthDate = header["PatientBirthDate"]
    ds.PatientSex = header["PatientSex"]
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = header["ViewPosition"]
    ds.StudyInstanceUID = header["StudyInstanceUID"]
    ds.SeriesInstanceUID = header["SeriesInstanceUID"]
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.PatientOrientation = ["L", "F"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = profile.photometric
    ds.Rows = ds.Columns = size
    spacing = _ds(_FIELD_OF_VIEW_MM / size)
    setattr(ds, profile.spacing_tag, [spacing, spacing])
    ds.BitsAllocated = profile.bits_allocated
    ds.BitsStored = profile.bits_stored
    ds.HighBit = profile.bits_stored - 1
    ds.PixelRepresentation = 0
    if profile.window:
        slope, intercept = profile.rescale or (1.0, 0.0)
        out_low, out_high = sorted((slope * low + intercept, slope * high + intercept))
        ds.WindowCenter = _ds((out_low + out_high) / 2.0)
        ds.WindowWidth = _ds(out_high - out_low + 1.0)
    if profile.rescale is not None:
        ds.RescaleIntercept = _ds(profile.rescale[1])
        ds.RescaleSlope = _ds(profile.rescale[0])
        ds.RescaleType = "US"
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    if profile.transfer_syntax == RLELossless:
        ds.PixelData = encapsulate([_rle_lossless_frame(stored)])
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
        ds.file_meta.TransferSyntaxUID = RLELossless
    elif profile.transfer_syntax == JPEG2000Lossless:
        ds.PixelData = stored.tobytes()
        ds.compress(JPEG2000Lossless, stored, generate_instance_uid=False)
    else:
        ds.PixelData = stored.tobytes()
    return ds


# ------------------------------------------------------------------------------------------ planted PHI
_PATIENT_GIVEN = ("Perpetua", "Ignatius", "Wilhelmina", "Cornelius", "Ottoline", "Barnaby", "Evangeline", "Leopold")
_PATIENT_FAMILY = (
    "Vasquarelli",
    "Thistlewaite",
    "Brunnhofer",
    "Zeferelli",
    "Ostrovidova",
    "Pettigrove",
    "Kallistratou",
    "Wyndecombe",
)
_DOCTOR_GIVEN = ("Ludmila", "Casimir", "Hyacinth", "Ambrosine", "Leocadia", "Florizel")
_DOCTOR_FAMILY = ("Quenby", "Trevelyan-Oakes", "Szczepanik", "Abernathy-Vole", "Rosencrantz", "Mallinckrodt")
_PHI_KEYWORDS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "AccessionNumber",
    "InstitutionName",
    "ReferringPhysicianName",
)
_INSTITUTIONS = (
    "Quarrendon Vale Infirmary",
    "Hollowmere Radiology Institute",
    "St Ysolde Thackeray Hospital",
    "Brackenholt Chest Clinic",
)


def _patient_phi(seed: int, patient: int) -> dict[str, str]:
    rng = _rng(seed, _STREAM_PATIENT_PHI, patient)
    given, family = _pick(rng, _PATIENT_GIVEN), _pick(rng, _PATIENT_FAMILY)
    birth = datetime.date(1930, 1, 1) + datetime.timedelta(days=int(rng.integers(0, 60 * 365)))
    return {
        "PatientName": f"{family}^{given}",
        "PatientID": f"QX{int(rng.integers(10**6, 10**7))}Z",
        "PatientBirthDate": birth.strftime("%Y%m%d"),
    }


def _study_phi(seed: int, index: int) -> dict[str, str]:
    rng = _rng(seed, _STREAM_PHI, index)
    referring = (_pick(rng, _DOCTOR_GIVEN), _pick(rng, _DOCTOR_FAMILY))
    reporting = (_pick(rng, _DOCTOR_GIVEN), _pick(rng, _DOCTOR_FAMILY))
    return {
        "AccessionNumber": f"ACZ{int(rng.integers(10**7, 10**8))}",
        "InstitutionName": _pick(rng, _INSTITUTIONS),
        "ReferringPhysicianName": f"{referring[1]}^{referring[0]}",
        "report_name": f"{reporting[0]} {reporting[1]}",
    }


# ------------------------------------------------------------------------------------------ splitting
def _split_patients(plans: Sequence[StudyPlan], seed: int) -> dict[str, str]:
    """Study id -> split, assigning whole patients in a seeded order until each split's share is met."""
    counts = Counter(p.patient for p in plans)
    order = _rng(seed, _STREAM_SPLIT).permutation(sorted(counts))
    n = len(plans)
    train_end = round(_SPLIT_FRACTIONS[0] * n)
    validation_end = round((_SPLIT_FRACTIONS[0] + _SPLIT_FRACTIONS[1]) * n)
    split_of_patient: dict[int, str] = {}
    cumulative = 0
    for patient in order:
        split = "training" if cumulative < train_end else "validation" if cumulative < validation_end else "test"
        split_of_patient[int(patient)] = split
        cumulative += counts[int(patient)]
    return {p.study_id: split_of_patient[p.patient] for p in plans}


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
    subsets = {}
    for key, fraction in _LABEL_FRACTIONS.items():
        count = min(len(order), max(_MIN_SUBSET, math.ceil(fraction * len(order))))
        subsets[key] = [p.study_id for p in order[:count]]
    return subsets


# --------------------------------------------------------------------------------------------- writing
def _write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` in the project's reproducible JSON form (that of ``sista_monai.data.datalist.dump_json``).

    One-space indent, sorted keys, UTF-8, final newline; written here so that this module stays light to
    import (the datalist module pulls in the transforms and torch).
    """
    path.write_text(json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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

        def write_report(name: str | None) -> str:
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
    _write_json(out / "datalist_pretrain.json", {**common, **pretrain})
    classification = listing(lambda i: {"id": i["plan"].study_id, "image": i["image"], "label": i["labels"][1]})
    _write_json(
        out / "datalist_classification.json",
        {
            **common,
            "description": "Pneumonia-like lung opacity present (1) or absent (0).",
            "labels": {"0": "no opacity", "1": "Lung Opacity"},
            **classification,
        },
    )
    segmentation = listing(lambda i: {"id": i["plan"].study_id, "image": i["image"], "mask": i["mask"]})
    _write_json(
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

    _write_json(
        out / "datalist_detection.json",
        {
            **common,
            "description": "Lung opacity boxes [x, y, width, height] in DICOM pixels.",
            "box_mode": "xywh",
            "labels": {"0": "Lung Opacity"},
            **listing(detection_item),
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
    _write_json(
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
        path.relative_to(out).as_posix(): _sha256(path)
        for path in sorted(out.rglob("*"))
        if path.is_file() and path.name != "manifest.json"
    }
    _write_json(
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
        if not path.is_file() or (verify and _sha256(path) != digest):
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

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        start = time.perf_counter()
        generate_demo_data(staging, n=n, size=size, seed=seed, plant_phi=plant_phi)
        staging.chmod(0o755)
        logger.info("generated %d demo studies (%d px, seed %d) in %.1f s", n, size, seed, time.perf_counter() - start)
        if out.exists():
            if not force and _is_current(out, parameters, verify):  # another process finished first
                shutil.rmtree(staging)
                return out
            retired = Path(tempfile.mkdtemp(prefix=f".{out.name}.retired-", dir=out.parent))
            os.rename(out, retired / out.name)
            os.rename(staging, out)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            try:
                os.rename(staging, out)
            except OSError:
                if _is_current(out, parameters, verify=False):
                    shutil.rmtree(staging)
                    return out
                raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
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


if __name__ == "__main__":
    sys.exit(main())
