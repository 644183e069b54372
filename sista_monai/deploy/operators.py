"""MONAI Deploy App SDK operators for chest radiographs: what the SDK's own operators lack.

The applications of :mod:`sista_monai.deploy.apps` chain the SDK's operators (``DICOMDataLoaderOperator`` to
read the folder, ``DICOMSeriesToVolumeOperator``, ``MonaiBundleInferenceOperator``, the DICOM SEG and SR
writers) with these:

* :class:`InstanceSourceOperator`: one chest radiograph per run of the graph. The SDK's loader groups a
  folder into studies and series and its series-to-volume operator converts only the first selected
  series; a folder of radiographs needs one result per instance (every instance is a one-frame image).
  :func:`screen_instances` first accounts for every other input file (``errors.json``).
* :class:`ChestXrayFrameOperator` (:func:`prepare_frame`): the two things a one-frame series lacks after
  ``DICOMSeriesToVolumeOperator``.

  - The affine. The SDK builds none for a series of one instance (it needs two slice positions), and the
    bundle operator then fails converting ``None`` into a tensor. The frame gets the affine the bundle's
    own loader gives a file: ``diag(column spacing, row spacing, 1, 1)`` from PixelSpacing or
    ImagerPixelSpacing (the identity when absent), and the pixel spacings without which the SDK hands the
    frame on as ``(1, H, W)`` instead of MONAI's ``(W, H, 1)``.
  - The display tags, in the array's metadata, for :class:`~sista_monai.transforms.EnsureChestXrayd`:
    ``PhotometricInterpretation``, ``PresentationLUTShape``, ``WindowCenter``, ``WindowWidth`` and
    ``VOILUTFunction``, exactly as in the file. Without them a MONOCHROME1 image would be fed inverted.
    The SDK (3.5 and later) has already applied a Presentation LUT Shape INVERSE to the array
    (``max - value``, pydicom's ``apply_presentation_lut``), which the bundle's transform would apply a second
    time and which moves the values out of the window's range; the operator restores the modality-LUT values
    (``max - array``, the maximum taken from the instance's decoded pixels, which pydicom keeps) so that the
    array and the tags mean what they mean in the file. A Presentation LUT Sequence is refused with a clear
    error (not supported, as by the bundle's loader).

* :class:`BundleInferenceOperator`: the SDK's ``MonaiBundleInferenceOperator`` with one more output,
  ``postprocessed``: the whole dictionary the bundle's postprocessing returned (e.g. the classification
  probability next to the thresholded class, the detections as named tensors), for the result writers.
* :class:`ClassificationResultOperator`, :class:`DetectionResultOperator`: the per-instance JSON (the same
  content as the bundle's own ``inference.json`` writes, plus the instance's UIDs) and the text of the SR.
* :class:`ReferencingSRWriterOperator`, :class:`InstanceSegWriterOperator`: the SDK's SR and SEG writers,
  with outputs named after the source file; the SR also references its source instance (Current Requested
  Procedure Evidence), which the SDK's SR writer does not.

The tags an application of its own must pass to the bundle operator for a radiograph from
``DICOMSeriesToVolumeOperator`` are the five display tags above (in the ``Image`` metadata, DICOM keywords),
the affine (``nifti_affine_transform``) and the pixel spacings (``row_pixel_spacing``, ``col_pixel_spacing``), and an
array holding modality-LUT values (undo the SDK's INVERSE).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from monai.deploy.core import ConditionType, Fragment, Image, Operator, OperatorSpec
from monai.deploy.core.domain.dicom_series import DICOMSeries
from monai.deploy.core.domain.dicom_series_selection import SelectedSeries, StudySelectedSeries
from monai.deploy.core.domain.dicom_study import DICOMStudy
from monai.deploy.operators.dicom_data_loader_operator import DICOMDataLoaderOperator
from monai.deploy.operators.dicom_seg_writer_operator import DICOMSegmentationWriterOperator
from monai.deploy.operators.dicom_text_sr_writer_operator import DICOMTextSRWriterOperator
from monai.deploy.operators.monai_bundle_inference_operator import MonaiBundleInferenceOperator
from pydicom.pixels.processing import apply_modality_lut

from sista_monai.data.inference import find_images, output_stem
from sista_monai.errors import ChestXrayReadError
from sista_monai.io.files import write_json
from sista_monai.io.predictions import classification_record, detection_record, image_size
from sista_monai.transforms.io import RASTER_SUFFIXES, pixel_spacing, read_chest_xray

__all__ = [
    "DISPLAY_TAGS",
    "Instance",
    "find_instances",
    "screen_instances",
    "InstanceSourceOperator",
    "ChestXrayFrameOperator",
    "prepare_frame",
    "BundleInferenceOperator",
    "Postprocessed",
    "ClassificationResultOperator",
    "DetectionResultOperator",
    "ReferencingSRWriterOperator",
    "InstanceSegWriterOperator",
]

logger = logging.getLogger(__name__)

DISPLAY_TAGS = ("PhotometricInterpretation", "PresentationLUTShape", "WindowCenter", "WindowWidth", "VOILUTFunction")
"""The DICOM keywords :class:`ChestXrayFrameOperator` copies into the array's metadata."""

SERIES_PORT = "study_selected_series_list"


class Instance:
    """One image instance of the input folder: its study, its native dataset and where its outputs go."""

    def __init__(self, study: DICOMStudy, dataset: pydicom.Dataset, root: Path) -> None:
        self.study = study
        self.dataset = dataset
        self.path = Path(str(dataset.filename))
        self.stem = output_stem(self.path, root)

    def selection(self, loader: DICOMDataLoaderOperator) -> list[StudySelectedSeries]:
        """The SDK's ``study_selected_series_list`` holding this instance alone as a one-instance series."""
        series = DICOMSeries(str(self.dataset.SeriesInstanceUID))
        loader.populate_series_attributes(series, self.dataset)
        series.add_sop_instance(self.dataset)
        selected = StudySelectedSeries(self.study)
        selected.add_selected_series(SelectedSeries(str(self.dataset.SOPInstanceUID), series))
        return [selected]


def _instance_of(selection: Sequence[StudySelectedSeries]) -> pydicom.Dataset:
    if not selection or not selection[0].selected_series:
        raise ValueError(f"missing input {SERIES_PORT!r}")
    instances = selection[0].selected_series[0].series.get_sop_instances()
    if len(instances) != 1:
        raise ValueError(f"expected a one-instance series, got {len(instances)} instances")
    return instances[0].get_native_sop_instance()


def find_instances(loader: DICOMDataLoaderOperator, folder: Path) -> list[Instance]:
    """Every image instance under ``folder`` (nested folders included), read by the SDK's loader.

    Instances without pixel data (SR, presentation states) are passed over with a log line naming the file.
    """
    found = []
    for study in loader.load_data_to_studies(folder):
        for series in study.get_all_series():
            for sop in series.get_sop_instances():
                dataset = sop.get_native_sop_instance()
                if "PixelData" not in dataset:
                    logger.warning("%s: no pixel data, passed over", Path(str(dataset.filename)).name)
                    continue
                found.append(Instance(study, dataset, folder))
    return sorted(found, key=lambda instance: instance.stem)


NOT_LOADED = (
    "a readable image that MONAI Deploy's DICOMDataLoaderOperator passes over: it reads DICOM Part 10 files with "
    "the 128-byte preamble and DICM prefix only (the bundle's own inference.json reads it)"
)
NOT_DICOM = "not a DICOM file: the MONAI Deploy application reads DICOM only (the bundle's own inference.json reads it)"


def _reason(path: Path) -> str | None:
    """Why the bundles' reader refuses ``path``, or ``None`` when it reads it."""
    try:
        read_chest_xray(path)
    except ChestXrayReadError as err:
        return err.reason
    except Exception as err:  # noqa: BLE001 - one unforeseen failure must not stop the other instances
        logger.debug("unexpected error reading %s", path.name, exc_info=True)
        return f"cannot be read: unexpected {type(err).__name__}"
    return None


def screen_instances(folder: Path, instances: Sequence[Instance]) -> tuple[list[Instance], list[dict[str, str]]]:
    """The instances the bundle can read, and ``errors.json`` entries for every other input file of ``folder``.

    Every file the bundles' ``inference.json`` would take (:func:`~sista_monai.data.inference.find_images`) is
    accounted for: an image the SDK's loader did not read (no preamble, not DICOM), or one the bundles' own reader
    refuses (multi-frame, colour, a Presentation LUT Sequence, undecodable pixel data...), gets an entry
    ``{"file": path relative to folder, "reason": ...}`` (no header values) instead of stopping the others.
    """
    loaded = {instance.path.resolve() for instance in instances}
    errors = []
    for path in find_images(folder):
        if path.resolve() not in loaded:
            missed = NOT_DICOM if path.suffix.lower() in RASTER_SUFFIXES else (_reason(path) or NOT_LOADED)
            errors.append({"file": path.relative_to(folder).as_posix(), "reason": missed})
    readable: list[Instance] = []
    for instance in instances:
        refused = (
            "a Presentation LUT Sequence is not supported"
            if "PresentationLUTSequence" in instance.dataset
            else _reason(instance.path)
        )
        if refused is None:
            readable.append(instance)
        else:
            errors.append({"file": instance.path.relative_to(folder).as_posix(), "reason": refused})
    return readable, sorted(errors, key=lambda error: error["file"])


class InstanceSourceOperator(Operator):
    """Emits the next instance of ``instances`` as a one-instance ``study_selected_series_list`` each time it runs.

    Run it with ``CountCondition(fragment, len(instances))``; :func:`find_instances` lists them.
    """

    def __init__(
        self,
        fragment: Fragment,
        *args: Any,
        instances: Sequence[Instance],
        loader: DICOMDataLoaderOperator,
        **kwargs: Any,
    ) -> None:
        self.instances = list(instances)
        self.loader = loader
        self.index = 0
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.output(SERIES_PORT)

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        instance = self.instances[self.index]
        self.index += 1
        op_output.emit(instance.selection(self.loader), SERIES_PORT)


def _tag_value(dataset: pydicom.Dataset, keyword: str) -> Any:
    value = dataset.get(keyword)
    if value is None:
        return None
    if isinstance(value, pydicom.multival.MultiValue):
        return [float(v) for v in value]
    if keyword in ("WindowCenter", "WindowWidth"):
        return float(value)
    return str(value)


def frame_affine(dataset: pydicom.Dataset) -> np.ndarray:
    """``diag(column spacing, row spacing, 1, 1)``, the affine the bundle's loader gives the same file."""
    (row_spacing, column_spacing), _ = pixel_spacing(dataset)
    affine = np.eye(4, dtype=np.float64)
    if np.isfinite(row_spacing) and np.isfinite(column_spacing):
        affine[0, 0], affine[1, 1] = column_spacing, row_spacing
    return affine


def modality_values(array: np.ndarray, dataset: pydicom.Dataset) -> np.ndarray:
    """The modality-LUT values of a frame that ``DICOMSeriesToVolumeOperator`` (SDK >= 3.5) returned.

    The SDK applies pydicom's ``apply_presentation_lut``: a Presentation LUT Shape INVERSE gives ``M - v``
    (``M`` the frame's largest modality value), undone here; IDENTITY or no shape leaves the values as they are.

    Raises:
        ChestXrayReadError: a Presentation LUT Sequence (not supported).
    """
    source = Path(str(getattr(dataset, "filename", "") or "<dataset>")).name
    if "PresentationLUTSequence" in dataset:
        raise ChestXrayReadError(source, "a Presentation LUT Sequence is not supported")
    shape = str(dataset.get("PresentationLUTShape", "") or "").strip().upper()
    if shape != "INVERSE":
        return array
    largest = float(np.max(apply_modality_lut(dataset.pixel_array, dataset)))
    return (np.float64(largest) - array.astype(np.float64)).astype(np.float32)


class ChestXrayFrameOperator(Operator):
    """Adds the affine and the display tags to a one-frame ``Image`` and undoes the SDK's INVERSE (module doc).

    Inputs: ``image`` (from ``DICOMSeriesToVolumeOperator``) and ``study_selected_series_list``; output: ``image``.
    """

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("image")
        spec.input(SERIES_PORT)
        spec.output("image")

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        image = op_input.receive("image")
        dataset = _instance_of(op_input.receive(SERIES_PORT))
        op_output.emit(Image(*prepare_frame(image.asnumpy(), image.metadata(), dataset)), "image")


def prepare_frame(
    array: np.ndarray, metadata: Mapping[str, Any], dataset: pydicom.Dataset
) -> tuple[np.ndarray, dict[str, Any]]:
    """What :class:`ChestXrayFrameOperator` does to one frame of ``DICOMSeriesToVolumeOperator`` (module doc).

    Args:
        array: the SDK's ``(1, Rows, Columns)`` array.
        metadata: the SDK image's metadata.
        dataset: the instance's native dataset.

    Returns:
        The modality-LUT values and the metadata with the affine, the pixel spacings and the display tags.

    Raises:
        ChestXrayReadError: not one frame, or a Presentation LUT Sequence.
    """
    if array.ndim != 3 or array.shape[0] != 1:
        raise ChestXrayReadError(
            Path(str(dataset.filename)).name, f"expected one frame, got an array of shape {array.shape}"
        )
    meta = dict(metadata)
    affine = frame_affine(dataset)
    # the SDK's bundle operator reads a DICOM-sourced image (swapping it to MONAI's (W, H, 1)) only when the
    # metadata has the pixel spacings; a file without PixelSpacing would otherwise go in as (1, H, W)
    meta["nifti_affine_transform"], meta["affine"] = affine, affine.copy()
    meta["row_pixel_spacing"], meta["col_pixel_spacing"] = float(affine[1, 1]), float(affine[0, 0])
    meta.setdefault("depth_pixel_spacing", 1.0)
    for keyword in DISPLAY_TAGS:
        value = _tag_value(dataset, keyword)
        if value is not None:
            meta[keyword] = value
    return modality_values(array, dataset), meta


class BundleInferenceOperator(MonaiBundleInferenceOperator):
    """The SDK's bundle operator, also emitting the whole postprocessed dictionary on ``postprocessed``.

    Args:
        output_form: applied to the bundle's postprocessed dictionary before the SDK reads its outputs (the
            segmentation application's :class:`~sista_monai.transforms.SingleFrameVolumed`: the bundle ends with
            the ``(W, H)`` label map generic clients read, the SDK needs a one-frame volume); ``postprocessed`` is
            emitted as the bundle returned it.
    """

    def __init__(
        self, fragment: Fragment, *args: Any, output_form: Callable[[Any], Any] | None = None, **kwargs: Any
    ) -> None:
        self.postprocessed: Any = None
        self.output_form = output_form
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        """The SDK's ports, each output allowed to stay unconnected (an application uses ``pred``, ``postprocessed``
        or both), and ``postprocessed``."""
        for mapping in self._input_mapping:
            spec.input(mapping.label)
        for mapping in self._output_mapping:
            spec.output(mapping.label).condition(ConditionType.NONE)
        spec.output("postprocessed").condition(ConditionType.NONE)

    def post_process(self, data: Any, *args: Any, **kwargs: Any) -> Any:
        """The bundle's postprocessing (the SDK's), its result kept for the ``postprocessed`` output."""
        self.postprocessed = super().post_process(data, *args, **kwargs)
        return self.postprocessed if self.output_form is None else self.output_form(self.postprocessed)

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        super().compute(op_input, op_output, context)
        op_output.emit(Postprocessed(self.postprocessed), "postprocessed")


class Postprocessed:
    """The postprocessed dictionary, wrapped: Holoscan would turn an emitted dictionary of tensors into a tensor
    map, losing the image's metadata (the source size the result writers read)."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self.values = values


class _ResultOperator(Operator):
    """Receives the postprocessed dictionary and the instance; writes ``<stem>.json``; emits the SR text."""

    def __init__(
        self,
        fragment: Fragment,
        *args: Any,
        output_folder: Path,
        root: Path,
        class_names: Mapping[str, str],
        **kwargs: Any,
    ) -> None:
        self.output_folder = Path(output_folder)
        self.root = Path(root)
        self.class_names = {str(k): str(v) for k, v in class_names.items()}
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("postprocessed")
        spec.input(SERIES_PORT)
        spec.output("text")

    def record(self, outputs: Mapping[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def text(self, record: Mapping[str, Any]) -> str:
        raise NotImplementedError

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        outputs = op_input.receive("postprocessed").values
        dataset = _instance_of(op_input.receive(SERIES_PORT))
        path = Path(str(dataset.filename))
        record = {
            **self.record(outputs),
            "image": path.name,
            "sop_instance_uid": str(dataset.SOPInstanceUID),
            "series_instance_uid": str(dataset.SeriesInstanceUID),
        }
        write_json(self.output_folder / f"{output_stem(path, self.root)}.json", record)
        op_output.emit(self.text(record), "text")


class ClassificationResultOperator(_ResultOperator):
    """The classification bundle's result: probability, class and its name
    (:func:`~sista_monai.io.predictions.classification_record`, as the bundle's ``ClassificationJSONWriter``)."""

    def __init__(self, fragment: Fragment, *args: Any, threshold: float, **kwargs: Any) -> None:
        self.threshold = float(threshold)
        self.sdk_result: Any = None
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        super().setup(spec)
        spec.input("pred")

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        """As the other result writers, after checking that the SDK's own reading of ``pred`` (the
        ``"probabilities"`` output, ``{"result": [class name], ...}``, what an application of the stock operators
        hands to its SR writer) names the class this JSON names."""
        self.sdk_result = op_input.receive("pred")
        super().compute(op_input, op_output, context)

    def record(self, outputs: Mapping[str, Any]) -> dict[str, Any]:
        record = classification_record(outputs["probability"], None, self.threshold, self.class_names)
        sdk_label = list(self.sdk_result.get("result", [None]))[0] if isinstance(self.sdk_result, Mapping) else None
        if sdk_label != record.get("label"):
            raise RuntimeError(
                f"the SDK reads the bundle's output as {sdk_label!r}, the probability gives {record.get('label')!r}: "
                "metadata.json's channel_def and inference.json's class_names or threshold disagree"
            )
        return record

    def text(self, record: Mapping[str, Any]) -> str:
        return (
            f"{record['label']} (probability {record['probability']:.4f}, decision threshold "
            f"{record['threshold']:g}). AI result, not verified by a radiologist."
        )


class DetectionResultOperator(_ResultOperator):
    """The detection bundle's result: boxes in the source pixels, scores, labels
    (:func:`~sista_monai.io.predictions.detection_record`, as the bundle's ``DetectionJSONWriter``)."""

    def record(self, outputs: Mapping[str, Any]) -> dict[str, Any]:
        boxes, scores, labels = outputs["pred_box"], outputs["pred_score"], outputs["pred_label"]
        return detection_record(boxes, scores, labels, None, image_size(outputs.get("image")), self.class_names)

    def text(self, record: Mapping[str, Any]) -> str:
        names = record.get("label_names") or [str(v) for v in record["labels"]]
        lines = [
            f"{name}: box x={box[0]:.0f}-{box[2]:.0f}, y={box[1]:.0f}-{box[3]:.0f} (pixels), score {score:.3f}"
            for name, box, score in zip(names, record["boxes"], record["scores"], strict=True)
        ]
        found = f"{len(lines)} finding(s)" if lines else "no finding above the score threshold"
        return "\n".join([f"{found}. AI result, not verified by a radiologist.", *lines])


def _move_single_output(folder: Path, destination: Path) -> Path:
    written = sorted(folder.glob("*.dcm"))
    if len(written) != 1:
        raise RuntimeError(f"expected one DICOM file from the SDK writer, found {len(written)}")
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(written[0]), str(destination))
    return destination


class ReferencingSRWriterOperator(DICOMTextSRWriterOperator):
    """The SDK's text SR writer; the SR is named ``<stem>_sr.dcm`` and references its source instance.

    The reference is the SR's Current Requested Procedure Evidence Sequence (study, series, SOP class and
    instance of the radiograph), which the SDK's writer leaves out.
    """

    def __init__(self, fragment: Fragment, *args: Any, root: Path, **kwargs: Any) -> None:
        self.root = Path(root)
        super().__init__(fragment, *args, **kwargs)

    def write(self, content_text: str, dicom_series: Any, output_dir: Path) -> None:
        source = dicom_series.get_sop_instances()[0].get_native_sop_instance()
        with tempfile.TemporaryDirectory(dir=output_dir) as scratch:
            super().write(content_text, dicom_series, Path(scratch))
            written = _move_single_output(Path(scratch), Path(scratch) / "sr.dcm")
            report = pydicom.dcmread(written)
            report.CurrentRequestedProcedureEvidenceSequence = [_evidence(source)]
            destination = output_dir / f"{output_stem(Path(str(source.filename)), self.root)}_sr.dcm"
            destination.parent.mkdir(parents=True, exist_ok=True)
            report.save_as(destination, enforce_file_format=True)


def _evidence(source: pydicom.Dataset) -> pydicom.Dataset:
    instance = pydicom.Dataset()
    instance.ReferencedSOPClassUID = source.SOPClassUID
    instance.ReferencedSOPInstanceUID = source.SOPInstanceUID
    series = pydicom.Dataset()
    series.SeriesInstanceUID = source.SeriesInstanceUID
    series.ReferencedSOPSequence = [instance]
    study = pydicom.Dataset()
    study.StudyInstanceUID = source.StudyInstanceUID
    study.ReferencedSeriesSequence = [series]
    return study


class InstanceSegWriterOperator(DICOMSegmentationWriterOperator):
    """The SDK's DICOM SEG writer (highdicom), the SEG named ``<stem>_seg.dcm`` after its source file.

    The SEG references its source instance itself (highdicom's Referenced Series and Source Image sequences).
    """

    def __init__(self, fragment: Fragment, *args: Any, root: Path, **kwargs: Any) -> None:
        self.root = Path(root)
        super().__init__(fragment, *args, **kwargs)

    def create_dicom_seg(self, image: np.ndarray, dicom_series: DICOMSeries, output_dir: Path) -> None:
        source = dicom_series.get_sop_instances()[0].get_native_sop_instance()
        with tempfile.TemporaryDirectory(dir=output_dir) as scratch, warnings.catch_warnings():
            # highdicom's person-name check quotes the patient's name in its warning: never on the console
            warnings.filterwarnings("ignore", message=".*person name.*")
            super().create_dicom_seg(image, dicom_series, Path(scratch))
            _move_single_output(
                Path(scratch), output_dir / f"{output_stem(Path(str(source.filename)), self.root)}_seg.dcm"
            )
