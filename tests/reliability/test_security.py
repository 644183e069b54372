"""Security: no checkpoint can run code on load, and nothing reaches the network.

* Every ``torch.load`` of the project, of the bundle configs and of the MONAI/Ignite code the configs name uses
  ``weights_only=True`` (an audit of the source, counted).
* A checkpoint carrying a malicious pickle (its ``__reduce__`` creates a marker file) is refused by every
  loader with a message naming the file, through the real loaders and a real bundle run; the marker never
  appears, while the same file loaded trustingly does create it (so the payload is real).
* The test process and every Python subprocess it starts cannot connect beyond loopback.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import inspect
import json
import pathlib
import pickle
import shutil
import socket
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from bundle_helpers import REPO_ROOT, as_cli, run_cli, tiny_pretrain_overrides
from ignite.engine import Engine
from monai.bundle.config_item import ComponentLocator
from monai.handlers import CheckpointLoader

from sista_monai.errors import EncoderMismatchError
from sista_monai.handlers import WeightsOnlyCheckpointLoader, load_checkpoint
from sista_monai.io import export_image_encoder, load_network_weights, load_pretrained_encoder, load_weights_only
from sista_monai.networks import ViTImageEncoder
from sista_monai.offline import NetworkAccessError

PROJECT_SOURCES = ("sista_monai", "transforms")
ENTRY_POINTS = ("monai.bundle.scripts",)  # `python -m monai.bundle run` and `ckpt_export` load through it
UNROUTABLE = ("203.0.113.7", 443)  # TEST-NET-3: never a real host


class CreatesMarker:
    """A pickled object whose unpickling creates ``marker`` (what a malicious checkpoint would do, harmlessly)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def _malicious(path: Path, marker: Path, state: dict[str, Any] | None = None) -> Path:
    torch.save({**(state or {"weight": torch.zeros(2)}), "payload": CreatesMarker(marker)}, path)
    return path


@pytest.fixture
def marker(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "code_ran_on_load"
    yield path
    assert not path.exists(), "a loader ran the pickled payload"


def test_the_crafted_checkpoint_runs_code_when_loaded_trustingly(tmp_path: Path) -> None:
    control = tmp_path / "control_marker"
    path = _malicious(tmp_path / "control.pt", control)
    torch.load(path, weights_only=False)
    assert control.is_file()


def _refusal(path: Path) -> str:
    return rf"{path}: refused: the (checkpoint|model weights) holds pickled objects other than weights, which could run code on load \(Unsupported global"


def test_project_loaders_refuse_a_malicious_checkpoint(tmp_path: Path, marker: Path) -> None:
    network = torch.nn.Linear(2, 2)
    checkpoint = _malicious(tmp_path / "checkpoint_final.pt", marker, {"network": network.state_dict()})
    with pytest.raises(ValueError, match=_refusal(checkpoint)):
        load_weights_only(checkpoint)
    with pytest.raises(ValueError, match=_refusal(checkpoint)):
        load_checkpoint(checkpoint, {"network": network})
    with pytest.raises(ValueError, match=_refusal(checkpoint)):
        load_network_weights(checkpoint, network)
    with pytest.raises(ValueError, match=_refusal(checkpoint)):
        WeightsOnlyCheckpointLoader(load_path=str(checkpoint), load_dict={"model": network})(Engine(lambda e, b: None))
    with pytest.raises(
        pickle.UnpicklingError, match="Unsupported global"
    ):  # MONAI's own loader refuses too, without the name
        CheckpointLoader(load_path=str(checkpoint), load_dict={"model": network})(Engine(lambda e, b: None))


def test_load_pretrained_encoder_refuses_a_malicious_file_with_a_matching_sidecar(tmp_path: Path, marker: Path) -> None:
    """The SHA-256 in the sidecar is made to match, so only ``weights_only=True`` stands between file and code."""
    encoder = ViTImageEncoder(img_size=32, patch_size=16, hidden_size=16, mlp_dim=32, num_layers=1, num_heads=2)
    weights, sidecar = export_image_encoder(encoder, tmp_path)
    _malicious(weights, marker, encoder.state_dict())
    meta = json.loads(sidecar.read_text())
    meta["sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    sidecar.write_text(json.dumps(meta))
    with pytest.raises(
        EncoderMismatchError, match=rf"(?s){weights}: not a loadable weights-only state dict .*Unsupported global"
    ):
        load_pretrained_encoder(encoder, weights)


@pytest.mark.slow
def test_pretrain_inference_bundle_refuses_a_malicious_checkpoint(
    tiny_demo: Path, tmp_path: Path, marker: Path
) -> None:
    images = tmp_path / "in"
    images.mkdir()
    item = json.loads((tiny_demo / "datalist_pretrain.json").read_text())["test"][0]
    shutil.copy(tiny_demo / item["image"], images / "study.dcm")
    (images / "study.txt").write_text(item["report"])
    checkpoint = _malicious(tmp_path / "checkpoint_final.pt", marker)
    out = tmp_path / "out"
    overrides = {
        "bundle_root": str(tmp_path / "bundle"),
        **tiny_pretrain_overrides(images),
        "output_dir": str(out),
        "tokenizer": str(tiny_demo / "tokenizer"),
        "checkpoint": str(checkpoint),
    }
    config = "['bundles/pretrain/configs/train.json','bundles/pretrain/configs/inference.json']"
    result = run_cli(["python", "-m", "monai.bundle", "run", "--config_file", config, *as_cli(overrides)])
    console = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"ValueError: {checkpoint}: refused: the model weights holds pickled objects other than weights" in console
    assert not out.exists() or not list(out.iterdir())


def _torch_load_calls(tree: ast.AST) -> Iterator[ast.Call]:
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "load"
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "torch"
        ):
            yield node


def _weights_only(call: ast.Call) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == "weights_only"), None)


def _config_values(node: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from _config_values(value)
    elif isinstance(node, list):
        for value in node:
            yield "", value
            yield from _config_values(value)


def _target_module(target: str) -> ModuleType | None:
    if "." not in target:
        name = ComponentLocator().get_component_module_name(target)
        if name is None:
            return None
        module = importlib.import_module(name if isinstance(name, str) else name[0])
        return inspect.getmodule(getattr(module, target, module))
    module_name, _, attr = target.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    return inspect.getmodule(getattr(module, attr, module))


def test_every_torch_load_is_weights_only(record_property: Callable[[str, Any], None]) -> None:
    """Project code: ``weights_only=True`` literally. Configs: no ``torch.load`` without it. MONAI/Ignite code
    named by any config (``_target_``) or running it: ``weights_only=True``, or a parameter that defaults to
    True and that no config sets."""
    audited: list[str] = []
    for folder in PROJECT_SOURCES:
        for path in sorted((REPO_ROOT / folder).rglob("*.py")):
            for call in _torch_load_calls(ast.parse(path.read_text(), str(path))):
                value = _weights_only(call)
                where = f"{path.relative_to(REPO_ROOT)}:{call.lineno}"
                assert isinstance(value, ast.Constant) and value.value is True, (
                    f"{where}: torch.load without weights_only=True"
                )
                audited.append(where)

    configs = sorted((REPO_ROOT / "bundles").glob("*/configs/*.json"))
    targets: set[str] = set()
    for path in configs:
        for key, value in _config_values(json.loads(path.read_text())):
            assert key != "weights_only", f"{path}: sets weights_only"
            if isinstance(value, str) and "torch.load(" in value:
                assert "weights_only=True" in value, f"{path}: {value}"
                audited.append(f"{path.relative_to(REPO_ROOT)}: {value[:60]}")
            if key == "_target_" and isinstance(value, str):
                targets.add(value)

    modules = {m for m in (_target_module(t) for t in sorted(targets)) if m is not None}
    modules |= {importlib.import_module(name) for name in ENTRY_POINTS}
    third_party = [m for m in modules if m.__name__.split(".")[0] in ("monai", "ignite")]
    # the inference configs' WeightsOnlyCheckpointLoader loads through MONAI's CheckpointLoader (its base class)
    assert "sista_monai.handlers.WeightsOnlyCheckpointLoader" in targets
    third_party.append(importlib.import_module("monai.handlers.checkpoint_loader"))
    assert any(m.__name__ == "monai.handlers.checkpoint_loader" for m in third_party)
    for module in sorted(third_party, key=lambda m: m.__name__):
        for call in _torch_load_calls(ast.parse(inspect.getsource(module))):
            value = _weights_only(call)
            where = f"{module.__name__}:{call.lineno}"
            assert value is not None, f"{where}: torch.load without weights_only"
            if not (isinstance(value, ast.Constant) and value.value is True):
                defaults = [
                    inspect.signature(obj).parameters["weights_only"].default
                    for _, obj in inspect.getmembers(module, inspect.isclass)
                    if obj.__module__ == module.__name__ and "weights_only" in inspect.signature(obj).parameters
                ]
                assert defaults and all(d is True for d in defaults), f"{where}: weights_only={ast.unparse(value)}"
            audited.append(where)
    record_property("torch_load_call_sites", audited)
    assert len(audited) >= 8, audited


def test_sockets_beyond_loopback_are_refused_in_the_test_process() -> None:
    with pytest.raises(NetworkAccessError, match=r"connect to \('203\.0\.113\.7', 443\) refused"):
        socket.socket().connect(UNROUTABLE)
    with pytest.raises(NetworkAccessError, match="name resolution of 'huggingface.co' refused"):
        socket.getaddrinfo("huggingface.co", 443)
    with pytest.raises(urllib.error.URLError) as refused:
        urllib.request.urlopen("https://huggingface.co/api/models", timeout=5)
    assert isinstance(refused.value.reason, NetworkAccessError)
    with socket.socket() as server:  # loopback stays open (torchrun's store, gloo)
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.create_connection(server.getsockname(), timeout=5) as client:
            assert client.getpeername() == server.getsockname()


def test_python_subprocesses_are_offline_too() -> None:
    probe = (
        "import os, socket, urllib.request\n"
        "from sista_monai.offline import NetworkAccessError, network_blocked\n"
        "try:\n"
        f"    socket.create_connection({UNROUTABLE!r}, timeout=5)\n"
        "except NetworkAccessError as err:\n"
        "    print('refused:', err)\n"
        "print('guard', network_blocked(), 'hf_offline', os.environ.get('HF_HUB_OFFLINE'))\n"
        "import transformers\n"
        "try:\n"
        "    transformers.AutoTokenizer.from_pretrained('bert-base-uncased')\n"
        "except OSError as err:\n"
        "    print('hub:', type(err).__name__)\n"
    )
    result = run_cli(["python", "-c", probe])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "refused: network access is disabled: name resolution of '203.0.113.7' refused" in result.stdout
    assert "guard True hf_offline 1" in result.stdout and "hub: OSError" in result.stdout
