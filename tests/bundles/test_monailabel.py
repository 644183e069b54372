"""MONAI Label serves the packaged segmentation bundle, and its masks are the bundle's own (issue 28, docs/MONAI_LABEL.md).

The recipe of docs/MONAI_LABEL.md, run for real: a throwaway virtual environment gets ``docs/monailabel-requirements.txt``
(monailabel 0.8.5 and what its server imports, ``--no-deps``), the packaged bundle's own ``sista_monai`` wheel and the
pydicom 3 shim's ``.pth`` file; it borrows torch, MONAI and the rest from this environment's ``site-packages`` (a
``.pth`` line after its own, so what it installs wins). The ``monaibundle`` sample app is copied out of the installed
monailabel, a packaged bundle whose tiny model was trained on the demo data goes into its ``model/`` folder, and the
``monailabel start_server`` command of the docs serves it on 127.0.0.1 (offline: the session's network guard holds in
the server). MONAI Label's own Python client (``monailabel.client.MONAILabelClient``, what its viewer plug-ins use)
asks ``/info`` and ``/infer`` for every image: demo DICOMs of every encoding profile, PNGs, a non-square PNG and the
real SIIM DICOMs. Each result (PNG, requested with ``result_extension``: the bundle's own mask format, lossless, in
the source's rows x columns) must equal the mask ``python -m monai.bundle run`` writes from the same package.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import torch
from bundle_helpers import (
    REALDATA,
    REPO_ROOT,
    SEGMENTATION_NETWORK,
    VISIBLE_MASKS,
    flat_deploy_inputs,
    run_packaged_inference,
    train_tiny_segmentation_bundle,
)
from monai.bundle import ConfigParser
from PIL import Image

from sista_monai.package.assemble import package_bundle
from sista_monai.transforms.display import dicom_to_display

pytestmark = pytest.mark.slow

MODEL = "siim_pneumothorax_segmentation"
REQUIREMENTS = REPO_ROOT / "docs" / "monailabel-requirements.txt"
SERVER_START_TIMEOUT = 180
RESULT_EXTENSION = ".png"

CLIENT = """
import json, shutil, sys
from pathlib import Path
from monailabel.client import MONAILabelClient

url, model, out, extension = sys.argv[1], sys.argv[2], Path(sys.argv[3]), sys.argv[4]
(out / "tmp").mkdir(parents=True)
client = MONAILabelClient(url, tmpdir=str(out / "tmp"))
results = {}
for image_id in sys.argv[5:]:
    result, params = client.infer(model, image_id, {"result_extension": extension})
    target = out / (image_id + extension)
    shutil.move(result, target)
    results[image_id] = {"file": str(target), "label_names": params.get("label_names")}
print("RESULTS " + json.dumps({"info": client.info(), "results": results}))
"""
"""Run by the throwaway environment's Python: MONAI Label's client asks for every image id given."""


def _pip(python: Path, args: list[str], step: str, cwd: Path) -> None:
    """``pip install --no-deps`` into the environment of ``python`` (this pip, ``--python``): the one networked step,
    run without the session's network guard (the registry); fails naming ``step``."""
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME")}
    command = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-input"]
    result = subprocess.run(command + args, capture_output=True, text=True, env=env, cwd=cwd, timeout=900)
    assert result.returncode == 0, f"pip failed at {step}: {result.stderr[-3000:]}"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _server_log_tail(log: Path, lines: int = 60) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.is_file() else "(no server log)"


def _demo_pngs(sources: list[Path], folder: Path) -> list[Path]:
    """8-bit PNGs of demo DICOMs (display-normalised with the project's own DICOM display transform): two whole
    images, and one cropped non-square (all rows, the left 44 columns)."""
    written = []
    for index, source in enumerate(sources):
        ds = pydicom.dcmread(source)
        display, _ = dicom_to_display(ds, ds.pixel_array.astype(np.float64), source=source)
        pixels = np.round(np.clip(display, 0.0, 1.0) * 255).astype(np.uint8)
        name = f"png_{source.stem}.png"
        if index == len(sources) - 1:
            pixels, name = pixels[:, :44], f"png_nonsquare_{source.stem}.png"
        Image.fromarray(pixels).save(folder / name)
        written.append(folder / name)
    return written


def _visible_mask_threshold(bundle_root: Path, images: list[Path], foreground: float = 0.1) -> float:
    """The probability the tiny network exceeds on a ``foreground`` fraction of the pixels of ``images`` (after
    the bundle's preprocessing): a mask threshold that draws masks neither empty nor full, whatever the run learnt
    (its probabilities stay far below the bundle's 0.5 after two tiny epochs)."""
    parser = ConfigParser()
    parser.read_config(str(bundle_root / "configs" / "inference.json"))
    parser.update({"bundle_root": str(bundle_root), "device": "$torch.device('cpu')", **SEGMENTATION_NETWORK})
    network = parser.get_parsed_content("network_def")
    network.load_state_dict(torch.load(bundle_root / "models" / "model.pt", weights_only=True))
    preprocessing = parser.get_parsed_content("preprocessing")
    with torch.no_grad():
        batch = torch.stack([torch.as_tensor(preprocessing({"image": str(path)})["image"]) for path in images])
        probabilities = network.eval()(batch)
    return float(torch.quantile(probabilities.flatten(), 1.0 - foreground))


@pytest.fixture(scope="module")
def packaged(tiny_demo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The segmentation bundle trained tiny on the demo data and packaged by ``sista_monai.package``; the layer: the
    tiny sizes, no size filter and a threshold at which the demo masks are neither empty nor full."""
    root = tmp_path_factory.mktemp("monailabel_bundle")
    trained = train_tiny_segmentation_bundle(tiny_demo, root / "trained")
    threshold = _visible_mask_threshold(trained["bundle_root"], sorted((tiny_demo / "images").glob("*.dcm")))
    layer = root / "layer.json"
    layer.write_text(json.dumps({**SEGMENTATION_NETWORK, **VISIBLE_MASKS, "mask_threshold": threshold}))
    out = root / "packaged" / MODEL
    package_bundle(trained["bundle_root"], out, layers=[layer])
    return out


@pytest.fixture(scope="module")
def studies(tiny_demo: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One flat folder of images: a demo DICOM of every encoding profile, PNGs (one non-square) and, when
    ``../shared/realdata`` is present, the 4 real SIIM DICOMs (file names full of dots)."""
    folder = tmp_path_factory.mktemp("monailabel_inputs") / "images"
    files = flat_deploy_inputs(folder, tiny_demo, ["siim/dicoms/*.dcm"])
    real = [path for path in files if path.name.startswith("1.2.")]
    demo = [path for path in files if path not in real]
    pngs = _demo_pngs(demo[:3], folder)
    return {"folder": folder, "demo": demo, "png": pngs, "real": real}


@pytest.fixture(scope="module")
def own_masks(packaged: Path, studies: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The masks ``python -m monai.bundle run`` writes with the packaged ``inference.json`` (``<stem>.png`` each)."""
    work = tmp_path_factory.mktemp("own_masks")
    result = run_packaged_inference(packaged, studies["folder"], work / "out", cwd=work)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return work / "out"


@pytest.fixture(scope="module")
def monailabel_env(packaged: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The throwaway environment of docs/MONAI_LABEL.md; returns its Python."""
    root = tmp_path_factory.mktemp("monailabel_env")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    _pip(python, ["-r", str(REQUIREMENTS)], f"installing {REQUIREMENTS.relative_to(REPO_ROOT)}", root)
    wheels = sorted((packaged / "wheels").glob("sista_monai-*.whl"))
    assert len(wheels) == 1, wheels
    _pip(python, [str(wheels[0])], "installing the packaged bundle's wheel", root)
    probe = "from sista_monai.deploy.pydicom_compat import write_pth_file; print(write_pth_file())"
    result = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    site_packages = Path(result.stdout.strip()).parent
    # this environment's site-packages after the throwaway one's: torch, MONAI, ... without reinstalling them; a
    # plain path line, so that none of its .pth files (the editable sista_monai install) is processed
    (site_packages / "zz_borrowed_site_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


@pytest.fixture(scope="module")
def server(
    monailabel_env: Path, packaged: Path, studies: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """``monailabel start_server`` of the docs serving the packaged bundle from the ``monaibundle`` sample app copied
    out of the installed monailabel, on a free port of 127.0.0.1; stopped (its process group) at teardown."""
    root = tmp_path_factory.mktemp("monailabel_server")
    bin_dir = monailabel_env.parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}
    copied = subprocess.run(
        ["monailabel", "apps", "--download", "--name", "monaibundle", "--output", str(root / "apps")],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
    )
    app = root / "apps" / "monaibundle"
    assert copied.returncode == 0 and (app / "main.py").is_file(), copied.stdout[-3000:] + copied.stderr[-3000:]
    shutil.copytree(packaged, app / "model" / MODEL)
    server_studies = root / "studies"
    shutil.copytree(studies["folder"], server_studies)
    port = _free_port()
    env["MONAI_LABEL_DATASTORE_FILE_EXT"] = '["*.png", "*.dcm"]'
    env["MONAI_LABEL_SESSION_PATH"] = str(root / "sessions")
    conf = ["--conf", "models", MODEL, "--conf", "zoo_source", "local", "--conf", "sam2", "false"]
    conf += ["--conf", "skip_trainers", "true"]
    log = root / "server.log"
    with log.open("w") as log_file:
        process = subprocess.Popen(
            ["monailabel", "start_server", "--app", str(app), "--studies", str(server_studies), *conf]
            + ["--host", "127.0.0.1", "--port", str(port)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=root,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            assert process.poll() is None, f"the MONAI Label server exited ({process.returncode}):\n" + (
                _server_log_tail(log)
            )
            try:
                with urllib.request.urlopen(f"{url}/info/", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"no answer in {SERVER_START_TIMEOUT} s:\n" + _server_log_tail(log)
            time.sleep(0.5)
        yield {"url": url, "python": monailabel_env, "log": log, "root": root}
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.fixture(scope="module")
def served(server: dict[str, Any], studies: dict[str, Any]) -> dict[str, Any]:
    """MONAI Label's client: ``/info``, then ``/infer`` of every image (its id: the file name without extension)."""
    ids = [path.stem for group in ("demo", "png", "real") for path in studies[group]]
    out = server["root"] / "results"
    args = [str(server["python"]), "-c", CLIENT, server["url"], MODEL, str(out), RESULT_EXTENSION, *ids]
    result = subprocess.run(args, capture_output=True, text=True, cwd=server["root"], timeout=600)
    assert result.returncode == 0, result.stderr[-3000:] + "\nserver:\n" + _server_log_tail(server["log"])
    line = next(x for x in result.stdout.splitlines() if x.startswith("RESULTS "))
    return json.loads(line[len("RESULTS ") :])


def _assert_masks_equal(served: dict[str, Any], own_masks: Path, files: list[Path]) -> list[np.ndarray]:
    """Every result equals the bundle's own mask of the same file, pixel for pixel, in the source's rows x columns."""
    masks = []
    for path in files:
        entry = served["results"][path.stem]
        assert entry["label_names"] == {"pneumothorax": 1}, entry
        returned = np.asarray(Image.open(entry["file"]))
        expected = np.asarray(Image.open(own_masks / f"{path.stem}.png"))
        if path.suffix == ".dcm":
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            shape = (ds.Rows, ds.Columns)
        else:
            shape = np.asarray(Image.open(path)).shape
        assert expected.shape == shape, path.name
        assert returned.dtype == np.uint8 and set(np.unique(returned)) <= {0, 1}, path.name
        np.testing.assert_array_equal(returned, expected, err_msg=path.name)
        masks.append(returned)
    return masks


def test_the_server_runs_the_packaged_wheel_and_the_shim(server: dict[str, Any], packaged: Path) -> None:
    probe = (
        "import sista_monai, pydicom._storage_sopclass_uids as m; print(sista_monai.__file__, m.SegmentationStorage)"
    )
    result = subprocess.run([str(server["python"]), "-c", probe], capture_output=True, text=True, cwd=server["root"])
    assert result.returncode == 0, result.stderr[-3000:]
    module, uid = result.stdout.split()
    assert Path(module).is_relative_to(server["python"].parents[1])  # the wheel, not this checkout
    assert uid == "1.2.840.10008.5.1.4.1.1.66.4"
    log = server["log"].read_text()
    assert f"+++ Adding Bundle from Local: {MODEL}" in log and "Adding Bundle from NGC" not in log


def test_info_lists_the_model_with_pneumothorax_as_label_1(served: dict[str, Any], packaged: Path) -> None:
    info = served["info"]
    model = info["models"][MODEL]
    metadata = json.loads((packaged / "configs" / "metadata.json").read_text())
    assert model["type"] == "segmentation" and model["dimension"] == 2
    assert model["labels"] == {"pneumothorax": 1}  # background (0) is not listed by MONAI Label
    assert model["version"] == metadata["version"]
    assert info["labels"] == ["pneumothorax"] and info["trainers"] == {}
    assert set(info["models"]) == {MODEL}  # no SAM2 model (--conf sam2 false)


def test_masks_of_demo_dicoms_and_pngs_equal_the_bundle_masks(
    served: dict[str, Any], own_masks: Path, studies: dict[str, Any]
) -> None:
    files = studies["demo"] + studies["png"]
    masks = _assert_masks_equal(served, own_masks, files)
    assert len(masks) == len(files) >= 9
    drawn = [m for m in masks if m.any() and not m.all()]
    assert len(drawn) >= 3, "too few masks with both values: the comparison would see nothing"
    nonsquare = next(m for m, p in zip(masks, files, strict=True) if p.name.startswith("png_nonsquare_"))
    assert nonsquare.shape == (64, 44)  # rows x columns of the source, not transposed
    assert any(not np.array_equal(m, m.T) for m in drawn)  # masks a transposition would change


@pytest.mark.realdata
def test_masks_of_real_siim_dicoms_equal_the_bundle_masks(
    realdata: Path, served: dict[str, Any], own_masks: Path, studies: dict[str, Any]
) -> None:
    """The SIIM file names are full of dots (``1.2.276.0.7230010....dcm``): the image id is the name without
    ``.dcm``, and the result asked as PNG has the bundle's own mask name."""
    assert REALDATA == realdata and len(studies["real"]) == 4
    masks = _assert_masks_equal(served, own_masks, studies["real"])
    assert all(m.shape == (1024, 1024) for m in masks)
