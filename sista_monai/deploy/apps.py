"""MONAI Deploy applications of the three downstream bundles, run from their exported ``model.ts`` alone.

Each application reads a folder of DICOM files (one or more studies, nested folders allowed) and writes, for
every image instance, its result into the output folder under the instance's name (its path relative to the
input folder without the extension, as the bundles' own ``inference.json`` names outputs). Every other file the
bundles' ``inference.json`` would take (one the SDK's loader does not read, a PNG, an image the bundles' reader
refuses) is listed with its reason in ``errors.json``, as ``inference.json`` lists unreadable inputs:

================ ================================================ =====================================
task             outputs per instance                             SDK writer
================ ================================================ =====================================
classification   ``<name>.json`` (probability, class) + ``<name>_sr.dcm`` (text SR)  ``DICOMTextSRWriterOperator``
segmentation     ``<name>_seg.dcm`` (binary DICOM SEG, one segment)  ``DICOMSegmentationWriterOperator``
detection        ``<name>.json`` (boxes in the source pixels) + ``<name>_sr.dcm``      ``DICOMTextSRWriterOperator``
================ ================================================ =====================================

The graph, run once per instance: :class:`~sista_monai.deploy.operators.InstanceSourceOperator` (the
instances the SDK's ``DICOMDataLoaderOperator`` finds) → ``DICOMSeriesToVolumeOperator`` →
:class:`~sista_monai.deploy.operators.ChestXrayFrameOperator` (affine, display tags) →
:class:`~sista_monai.deploy.operators.BundleInferenceOperator` (the SDK's bundle operator on ``model.ts``:
the bundle's ``inference.json`` preprocessing, inferer and postprocessing travel inside it) → the writers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from monai.deploy.conditions import CountCondition
from monai.deploy.core import Application, Image, IOType
from monai.deploy.operators.dicom_data_loader_operator import DICOMDataLoaderOperator
from monai.deploy.operators.dicom_seg_writer_operator import SegmentDescription
from monai.deploy.operators.dicom_series_to_volume_operator import DICOMSeriesToVolumeOperator
from monai.deploy.operators.dicom_utils import ModelInfo
from monai.deploy.operators.monai_bundle_inference_operator import IOMapping, get_bundle_config
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from sista_monai.data.inference import ERRORS_FILE
from sista_monai.io.files import write_json
from sista_monai.transforms import SingleFrameVolumed

from .operators import (
    SERIES_PORT,
    BundleInferenceOperator,
    ChestXrayFrameOperator,
    ClassificationResultOperator,
    DetectionResultOperator,
    InstanceSegWriterOperator,
    InstanceSourceOperator,
    ReferencingSRWriterOperator,
    find_instances,
    screen_instances,
)

__all__ = ["TASKS", "ChestXrayApp", "PNEUMOTHORAX"]

TASKS = ("classification", "segmentation", "detection")

PNEUMOTHORAX = Code("36118008", "SCT", "Pneumothorax")
"""SNOMED CT code of the segmentation bundle's segment (its Segmented Property Type)."""

# the type of the bundle's ``pred`` output in its metadata (network_data_format.outputs.pred.type)
_PRED_TYPES: dict[str, Any] = {"classification": dict, "segmentation": Image, "detection": object}


class ChestXrayApp(Application):
    """The application of one task (``classification``, ``segmentation`` or ``detection``).

    Args:
        task: one of :data:`TASKS`.
        input_folder: the DICOM folder.
        output_folder: where the results go (created).
        model_path: the bundle's exported ``model.ts`` (``ckpt_export`` puts its configs inside).
        log_level: the SDK's log level (``DEBUG``, ``INFO``, ``WARN``, ``ERROR``).
    """

    def __init__(
        self, task: str, input_folder: Path, output_folder: Path, model_path: Path, log_level: str = "WARN"
    ) -> None:
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        self.task = task
        self.input_folder = Path(input_folder)
        self.output_folder = Path(output_folder)
        self.model_path = Path(model_path)
        self.instances_found = 0
        self.errors: list[dict[str, str]] = []
        self.sdk_argv = ["sista_monai.deploy", "--input", str(input_folder), "--output", str(output_folder)]
        self.sdk_argv += ["--model", str(model_path), "--log-level", log_level]
        super().__init__()

    def compose(self) -> None:
        """Build the graph described in the module docstring."""
        context = Application.init_app_context(self.sdk_argv)
        bundle = get_bundle_config(str(self.model_path), ["inference"])
        meta = bundle["_meta_"]
        model_info = ModelInfo("sista-monai", str(meta.get("name", self.task)), str(meta.get("version", "")), "")

        loader = DICOMDataLoaderOperator(self, input_folder=self.input_folder, name="loader")
        instances, self.errors = screen_instances(self.input_folder, find_instances(loader, self.input_folder))
        self.instances_found = len(instances)
        errors_file = self.output_folder / ERRORS_FILE
        if self.errors:
            write_json(errors_file, self.errors)
        else:
            errors_file.unlink(missing_ok=True)  # a list from an earlier run in the same folder would mislead
        if not instances:
            raise FileNotFoundError(f"{self.input_folder}: no readable DICOM image instance (see {errors_file})")
        source = InstanceSourceOperator(
            self, CountCondition(self, len(instances)), instances=instances, loader=loader, name="instances"
        )
        volume = DICOMSeriesToVolumeOperator(self, name="volume")
        frame = ChestXrayFrameOperator(self, name="frame")
        inference = BundleInferenceOperator(
            self,
            app_context=context,
            input_mapping=[IOMapping("image", Image, IOType.IN_MEMORY)],
            output_mapping=[IOMapping("pred", _PRED_TYPES[self.task], IOType.IN_MEMORY)],
            bundle_path=self.model_path,
            output_form=SingleFrameVolumed("pred") if self.task == "segmentation" else None,
            name="bundle",
        )
        self.add_flow(source, volume, {(SERIES_PORT, SERIES_PORT)})
        self.add_flow(source, frame, {(SERIES_PORT, SERIES_PORT)})
        self.add_flow(volume, frame, {("image", "image")})
        self.add_flow(frame, inference, {("image", "image")})

        if self.task == "segmentation":
            segment = SegmentDescription(
                segment_label="pneumothorax",
                segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
                segmented_property_type=PNEUMOTHORAX,
                algorithm_name=str(meta.get("name", "SISTA pneumothorax segmentation"))[:64],
                algorithm_version=str(meta.get("version", "")),
            )
            writer = InstanceSegWriterOperator(
                self,
                segment_descriptions=[segment],
                output_folder=self.output_folder,
                model_info=model_info,
                omit_empty_frames=False,
                root=self.input_folder,
                name="seg_writer",
            )
            self.add_flow(inference, writer, {("pred", "seg_image")})
            self.add_flow(source, writer, {(SERIES_PORT, SERIES_PORT)})
            return

        class_names = bundle["class_names"] if "class_names" in bundle else {}
        if self.task == "classification":
            result: Any = ClassificationResultOperator(
                self,
                output_folder=self.output_folder,
                root=self.input_folder,
                class_names=class_names,
                threshold=float(bundle.get_parsed_content("decision_threshold")),
                name="result",
            )
        else:
            result = DetectionResultOperator(
                self, output_folder=self.output_folder, root=self.input_folder, class_names=class_names, name="result"
            )
        report = ReferencingSRWriterOperator(
            self, output_folder=self.output_folder, model_info=model_info, root=self.input_folder, name="sr_writer"
        )
        self.add_flow(inference, result, {("postprocessed", "postprocessed")})
        if self.task == "classification":
            self.add_flow(inference, result, {("pred", "pred")})
        self.add_flow(source, result, {(SERIES_PORT, SERIES_PORT)})
        self.add_flow(result, report, {("text", "text")})
        self.add_flow(source, report, {(SERIES_PORT, SERIES_PORT)})
