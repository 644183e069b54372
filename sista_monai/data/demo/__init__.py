"""Synthetic chest radiograph demo data: real DICOM files, reports, labels, boxes, masks and datalists.

Every bundle trains on this data when nothing else is configured. Because the generator draws the findings
itself, the ground truth is exact: which findings a study has, where (a lung zone and a box in pixels), the
pneumothorax mask, and a report that says so in varied words. The data therefore measures what SISTA
claims: false-negative flags against finding agreement, patch-word grounding against the finding's zone,
and the downstream tasks against real boxes and masks.

Command::

    python -m sista_monai.data.demo --out data/demo [--n 600] [--size 256] [--seed 0] [--plant-phi] [--force]

The generator is a small package, one module per step: :mod:`.plan` (what each study shows),
:mod:`.render` (drawing it), :mod:`.reports` (the report text), :mod:`.dicom` (scanner-like DICOM encoding,
planted identifiers), :mod:`.splits` (by patient, with :mod:`sista_monai.data.splits`), :mod:`.counterfactual`
(twins with one finding moved), and :mod:`.generate`
(writing, the manifest, :func:`ensure_demo_data` and the command line).

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

    images/<id>.dcm  masks/<id>.png  reports/<id>.txt  tokenizer/  counterfactual/<id>_<lesion class>.dcm
    datalist_pretrain.json  datalist_classification.json  datalist_segmentation.json
    datalist_detection.json  datalist_counterfactual.json  manifest.json  [phi_manifest.json]

``counterfactual/`` holds the twins of the validation and test studies (:mod:`.counterfactual`): the same
radiograph with one finding moved, for the counterfactual grounding test; ``datalist_counterfactual.json`` pairs
each with its study and keeps the study's report.

The output is byte-for-byte reproducible for a seed: UIDs are derived from the seed, dates are fixed,
JSON keys are sorted, and nothing records the time or the machine.
"""

from __future__ import annotations

from .dicom import ENCODING_PROFILES, EncodingProfile
from .generate import GENERATOR_NAME, GENERATOR_VERSION, ensure_demo_data, generate_demo_data, main
from .plan import LABEL_NAMES, ZONE_NAMES, StudyPlan, plan_studies
from .render import RenderedStudy, render_study

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
