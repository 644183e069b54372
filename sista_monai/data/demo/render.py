"""Rendering a planned study: a frontal chest radiograph with its findings, boxes, zones and pneumothorax mask."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from .plan import _STREAM_FINDINGS, _STREAM_IMAGE, LABEL_NAMES, StudyPlan, _rng, _zone_code

__all__ = ["RenderedStudy", "render_study"]


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


def _segment_distance(u: np.ndarray, v: np.ndarray, p0: tuple[float, float], p1: tuple[float, float]) -> np.ndarray:
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
