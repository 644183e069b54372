"""``python -m sista_monai.package``: the four bundles packaged at tiny sizes and checked as the model zoo checks them.

Each bundle is copied (configs, docs, LICENSE) into a temporary folder with a tiny ``models/`` (the pretraining
bundle: a tiny exported image encoder; a downstream bundle: its ``network_def`` at tiny encoder sizes, the sizes
given to the packager as a ``--layer`` file), packaged, and then checked: the model-zoo file rules, MONAI's own
``verify_metadata`` (local schema), ``verify_net_in_out`` and ``ckpt_export`` in one subprocess (as the zoo's
``ci/verify_bundle.py`` calls them), TorchScript equal to the eager network, no file created by parsing
``network_def``, the packaged ``inference.json`` run from another working folder, and the wheel installed offline.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from bundle_helpers import REPO_ROOT, run_cli
from monai.bundle import ConfigParser
from tiny_models import TINY_ENCODER

from sista_monai.data.demo import ensure_demo_data
from sista_monai.errors import BundlePackagingError
from sista_monai.package.assemble import package_bundle
from sista_monai.package.configs import PRETRAINED_ENCODER
from sista_monai.package.rules import check_bundle_folder

BUNDLES = ("pretrain", "rsna_pneumonia_classification", "siim_pneumothorax_segmentation", "rsna_pneumonia_detection")
DATASET_TERMS = {
    "pretrain": "PhysioNet Credentialed Health Data License 1.5.0",
    "rsna_pneumonia_classification": "RSNA Pneumonia Detection Challenge",
    "siim_pneumothorax_segmentation": "SIIM-ACR Pneumothorax Segmentation",
    "rsna_pneumonia_detection": "RSNA Pneumonia Detection Challenge",
}
SCHEMA = REPO_ROOT.parent / "shared" / "monai" / "meta_schema_20240725.json"
N_IMAGES = 3

pytestmark = pytest.mark.slow


def _tiny_source(name: str, root: Path) -> tuple[Path, list[Path]]:
    """A copy of a bundle with tiny weights in ``models/``, and the layer files those weights need."""
    source = root / "source" / name
    shutil.copytree(REPO_ROOT / "bundles" / name, source, ignore=shutil.ignore_patterns("models", "logs", "eval"))
    (source / "models").mkdir()
    if name == "pretrain":
        return source, [_tiny_pretraining(source, root)]
    layer = root / f"{name}_tiny.json"
    layer.write_text(json.dumps({f"image_encoder#{key}": value for key, value in TINY_ENCODER.items()}))
    parser = ConfigParser()
    parser.read_config([str(source / "configs" / "inference.json"), str(layer)])
    parser.update({"bundle_root": str(source), "device": "$torch.device('cpu')"})
    torch.manual_seed(0)
    torch.save(parser.get_parsed_content("network_def").state_dict(), source / "models" / "model.pt")
    return source, [layer]


TINY_TEXT = {"model_type": "bert", "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2}
REPORTS = ["Small right pleural effusion.", "No pneumothorax. The heart size is normal.", "Left lower lobe opacity."]


def _tiny_pretraining(source: Path, root: Path) -> Path:
    """A tiny SISTA model as the pretraining bundle leaves it (``checkpoint_final.pt``, the exported image encoder)
    and its tokenizer; returns the layer file of its sizes (given to the packager)."""
    from sista_monai.data.tokenizer import train_wordpiece_tokenizer
    from sista_monai.io import export_image_encoder

    tokenizer = train_wordpiece_tokenizer(REPORTS * 4, root / "tokenizer", vocab_size=80)
    layer = root / "pretrain_tiny.json"
    sizes = {f"image_encoder#{key}": value for key, value in TINY_ENCODER.items()}
    layer.write_text(json.dumps({**sizes, "text_encoder#config": {**TINY_TEXT, "intermediate_size": 32}}))
    parser = ConfigParser()
    parser.read_config([str(source / "configs" / "train.json"), str(layer)])
    parser.update({"bundle_root": str(source), "tokenizer": str(tokenizer), "text_pretrained": None})
    torch.manual_seed(0)
    network = parser.get_parsed_content("network_def")
    torch.save({"network": network.state_dict()}, source / "models" / "checkpoint_final.pt")
    export_image_encoder(
        network,
        source / "models",
        normalization={"mean": 0.5, "std": 0.25},
        extra={"preprocessing": {"resize_longest": 144, "pad_square": 144, "crop": 128}},
    )
    return layer


@pytest.fixture(scope="module")
def packaged(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    root = tmp_path_factory.mktemp("package")
    result = {}
    for name in BUNDLES:
        source, layers = _tiny_source(name, root)
        out = root / "out" / name
        tokenizer = root / "tokenizer" if name == "pretrain" else None
        summary = package_bundle(source, out, layers=layers, tokenizer=tokenizer)
        result[name] = {"source": source, "layers": layers, "out": out, "summary": summary}
    return result


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few demo DICOMs (the smallest demo dataset, 20 studies of 64 pixels)."""
    demo = ensure_demo_data(tmp_path_factory.mktemp("data") / "demo", n=20, size=64, seed=0)
    folder = tmp_path_factory.mktemp("inference_images")
    for path in sorted((demo / "images").glob("*.dcm"))[:N_IMAGES]:
        shutil.copy2(path, folder / path.name)
    return folder


def _eager(out: Path) -> torch.nn.Module:
    parser = ConfigParser()
    parser.read_config(str(out / "configs" / "inference.json"))
    parser.update({"bundle_root": str(out), "device": "$torch.device('cpu')"})
    network = parser.get_parsed_content("network_def")
    network.load_state_dict(torch.load(out / "models" / "model.pt", weights_only=True))
    return network.eval()


def _snapshot(*folders: Path) -> dict[str, tuple[int, int]]:
    return {
        str(path): (path.stat().st_size, path.stat().st_mtime_ns) for folder in folders for path in folder.rglob("*")
    }


@pytest.mark.parametrize("name", BUNDLES)
def test_model_zoo_file_rules(packaged: dict[str, dict[str, Any]], name: str) -> None:
    out, source = packaged[name]["out"], packaged[name]["source"]
    assert check_bundle_folder(out) == []
    for file in ("configs/metadata.json", "LICENSE", "models/model.pt", "configs/inference.json"):
        assert (out / file).is_file(), file
    assert all(p.stat().st_size <= 25 * 2**20 for p in out.rglob("*") if p.is_file())
    assert yaml.safe_load((out / "large_files.yml").read_text()) == {"large_files": []}
    assert (out / "LICENSE").read_bytes() == (source / "LICENSE").read_bytes()
    assert (out / "docs" / "README.md").read_text().startswith((source / "docs" / "README.md").read_text())
    data_license = (out / "docs" / "data_license.txt").read_text()
    assert DATASET_TERMS[name] in data_license and "Generated demo data" in data_license

    metadata = json.loads((out / "configs" / "metadata.json").read_text())
    source_metadata = json.loads((source / "configs" / "metadata.json").read_text())
    assert metadata["version"] == source_metadata["version"] and metadata["version"] in metadata["changelog"]
    packages = metadata["required_packages_version"]
    assert packages["sista-monai"] == version("sista-monai")
    assert packages["pytorch-ignite"] == version("pytorch-ignite") and packages["pydicom"] == version("pydicom")
    assert metadata["monai_version"] == version("monai")
    wheel = out / "wheels" / f"sista_monai-{version('sista-monai')}-py3-none-any.whl"
    assert wheel.is_file()
    assert f"pip install wheels/{wheel.name}" in (out / "docs" / "README.md").read_text()

    inference = json.loads((out / "configs" / "inference.json").read_text())
    assert {"bundle_root", "device", "network_def", "inferer", "output_dir"} <= set(inference)
    assert inference["bundle_root"] == "."
    for config in (out / "configs").glob("*.json"):
        text = config.read_text()
        assert "bundles/" not in text, config.name
        content = json.loads(text)
        if "bundle_root" in content:
            assert content["bundle_root"] == ".", config.name
    if name != "pretrain":
        train = json.loads((out / "configs" / "train.json").read_text())
        assert train["pretrained_encoder"] == PRETRAINED_ENCODER
        assert inference["image_encoder"]["hidden_size"] == TINY_ENCODER["hidden_size"]  # the --layer file
        assert (out / "models" / "model.pt").read_bytes() == (source / "models" / "model.pt").read_bytes()
    else:
        assert inference["network_def"]["_target_"] == "sista_monai.networks.GlobalImageFeatures"
        assert set(metadata["network_data_format"]["outputs"]) == {"pred"}
        assert metadata["network_data_format"]["outputs"]["pred"]["num_channels"] == TINY_ENCODER["hidden_size"]
        # the image-only network's state dict is the exported encoder's, tensor for tensor
        encoder = torch.load(source / "models" / "image_encoder.pt", weights_only=True)
        model = torch.load(out / "models" / "model.pt", weights_only=True)
        assert model.keys() == encoder.keys()
        assert all(torch.equal(model[k], encoder[k]) for k in encoder)


def test_large_files_are_listed_with_their_sha256(packaged: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    entry = packaged["rsna_pneumonia_classification"]
    out = tmp_path / "small_limit"
    limit_mb = 0.02
    encoder = packaged["pretrain"]["source"] / "models" / "image_encoder.pt"
    summary = package_bundle(
        entry["source"],
        out,
        layers=entry["layers"],
        pretrained_encoder=encoder,
        size_limit_mb=limit_mb,
        large_file_url="https://example.org/b",
    )
    assert summary["pretrained_encoder"] and summary["inferer"] == ""
    for suffix in (".pt", ".json"):  # shipped for retraining, where the packaged train.json looks
        assert (out / "models" / f"image_encoder{suffix}").read_bytes() == encoder.with_suffix(suffix).read_bytes()
    assert "pretrained encoder shipped in this folder" in (out / "docs" / "README.md").read_text()
    listed = {e["path"]: e for e in yaml.safe_load((out / "large_files.yml").read_text())["large_files"]}
    over = {
        p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p.stat().st_size > limit_mb * 2**20
    }
    assert {"models/model.pt", "models/model.ts"} <= over
    assert set(listed) == over
    for path, item in listed.items():
        assert item["hash_type"] == "sha256"
        assert item["hash_val"] == hashlib.sha256((out / path).read_bytes()).hexdigest()
        assert item["url"] == f"https://example.org/b/{path}"
    assert check_bundle_folder(out, limit_mb) == []
    (out / "models" / "model.pt").write_bytes(b"replaced")
    assert any("models/model.pt SHA-256 differs" in p for p in check_bundle_folder(out, limit_mb))


VERIFY = """
import json, sys
from monai.bundle import ckpt_export, verify_metadata, verify_net_in_out
schema, verify_dir = sys.argv[1], sys.argv[2]
results = {}
for folder in sys.argv[3:]:
    meta, config, result = folder + "/configs/metadata.json", folder + "/configs/inference.json", {}
    for check, call in (
        ("verify_metadata", lambda: verify_metadata(meta_file=meta, filepath=schema)),
        ("verify_net_in_out", lambda: verify_net_in_out(net_id="network_def", meta_file=meta, config_file=config,
                                                       device="cpu", bundle_root=folder)),
        ("ckpt_export", lambda: ckpt_export(net_id="network_def", filepath=verify_dir + "/" + folder.split("/")[-1]
                                            + ".ts", ckpt_file=folder + "/models/model.pt", meta_file=meta,
                                            config_file=config, bundle_root=folder)),
    ):
        try:
            call()
            result[check] = "ok"
        except Exception as err:
            result[check] = type(err).__name__ + ": " + str(err)
    results[folder.split("/")[-1]] = result
print("RESULTS " + json.dumps(results))
"""


def test_monai_bundle_checks_accept_the_packaged_bundles(packaged: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    """MONAI's verify_metadata, verify_net_in_out and ckpt_export on every packaged copy, from another folder."""
    if not SCHEMA.is_file():
        pytest.skip(f"the bundle metadata schema copy is not present at {SCHEMA}")
    folders = [str(packaged[name]["out"]) for name in BUNDLES]
    result = run_cli(["python", "-c", VERIFY, str(SCHEMA), str(tmp_path), *folders], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(x for x in result.stdout.splitlines() if x.startswith("RESULTS "))
    results = json.loads(line[len("RESULTS ") :])
    for name in BUNDLES:
        assert results[name]["verify_metadata"] == "ok", results[name]
        assert results[name]["ckpt_export"] == "ok", results[name]
        assert (tmp_path / f"{name}.ts").is_file()
        applies = name != "rsna_pneumonia_detection"
        source_inference = json.loads((packaged[name]["source"] / "configs" / "inference.json").read_text())
        inferer = json.loads((packaged[name]["out"] / "configs" / "inference.json").read_text())["inferer"]
        if name == "pretrain":  # its packaged inference.json is the committed image-only config
            source_inference = json.loads((packaged[name]["source"] / "configs" / "image_inference.json").read_text())
            assert inferer == source_inference["inferer"] == {"_target_": "SimpleInferer"}
        else:
            # the source's inferer is kept; one is added (and the README says which) only where the source has none
            assert inferer == source_inference.get("inferer", inferer)
            assert bool(packaged[name]["summary"]["inferer"]) is ("inferer" not in source_inference)
        assert (results[name]["verify_net_in_out"] == "ok") is applies, results[name]
        assert (packaged[name]["summary"]["verify_net_in_out"] is None) is applies
        readme = (packaged[name]["out"] / "docs" / "README.md").read_text()
        assert ("`verify_net_in_out` does not apply" in readme) is not applies
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{name}.ts" for name in BUNDLES)


@pytest.mark.parametrize("name", BUNDLES)
def test_torchscript_equals_the_eager_network(packaged: dict[str, dict[str, Any]], name: str) -> None:
    out = packaged[name]["out"]
    assert packaged[name]["summary"]["torchscript"] is None
    scripted = torch.jit.load(str(out / "models" / "model.ts")).eval()
    eager = _eager(out)
    torch.manual_seed(1)
    image = torch.randn(2, 1, 128, 128)
    with torch.no_grad():
        expected, actual = eager(image), scripted(image)
    expected = expected if isinstance(expected, (list, tuple)) else [expected]
    actual = actual if isinstance(actual, (list, tuple)) else [actual]
    assert len(actual) == len(expected) > 0
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e, rtol=0, atol=1e-5)
    if name == "pretrain":
        assert expected[0].shape == (2, TINY_ENCODER["hidden_size"])


@pytest.mark.parametrize("name", BUNDLES)
def test_parsing_network_def_creates_no_file(
    packaged: dict[str, dict[str, Any]], name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = packaged[name]["out"]
    monkeypatch.chdir(tmp_path)
    before = _snapshot(tmp_path, out)
    parser = ConfigParser()
    parser.read_config(str(out / "configs" / "inference.json"))
    parser["bundle_root"] = str(out)
    assert isinstance(parser.get_parsed_content("network_def"), torch.nn.Module)
    assert _snapshot(tmp_path, out) == before
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("name", BUNDLES)
def test_packaged_inference_runs_from_another_folder(
    packaged: dict[str, dict[str, Any]], name: str, images: Path, tmp_path: Path
) -> None:
    out = packaged[name]["out"]
    work, outputs = tmp_path / "work", tmp_path / "outputs"
    work.mkdir()
    config = out / "configs" / "inference.json"
    args = ["python", "-m", "monai.bundle", "run", "--config_file", str(config), "--bundle_root", str(out)]
    result = run_cli(args + ["--dataset_dir", str(images), "--output_dir", str(outputs)], cwd=work)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert not any(work.iterdir())
    stems = sorted(p.stem for p in images.iterdir())
    if name == "siim_pneumothorax_segmentation":
        assert sorted(p.stem for p in outputs.glob("*.png")) == stems
        return
    written = {p.stem: json.loads(p.read_text()) for p in outputs.glob("*.json") if p.name != "errors.json"}
    assert sorted(written) == stems
    record = written[stems[0]]
    if name == "pretrain":
        assert record["embed_dim"] == TINY_ENCODER["hidden_size"] == len(record["embedding"])
        assert all(isinstance(v, float) for v in record["embedding"])
    elif name == "rsna_pneumonia_classification":
        assert 0.0 <= record["probability"] <= 1.0
    else:
        assert {"boxes", "scores", "labels"} <= set(record)


def test_pretraining_image_inference_is_the_same_from_the_source_and_the_package(
    packaged: dict[str, dict[str, Any]], images: Path, tmp_path: Path
) -> None:
    """The committed ``image_inference.json`` is what the package runs: same outputs on one folder (nested, with an
    unreadable file: errors.json and exit status 1 from both)."""
    source, out = packaged["pretrain"]["source"], packaged["pretrain"]["out"]
    packaged_config = json.loads((out / "configs" / "inference.json").read_text())
    committed = json.loads((source / "configs" / "image_inference.json").read_text())
    assert packaged_config == {**committed, "bundle_root": "."}
    folder = tmp_path / "in"
    shutil.copytree(images, folder / "series")
    (folder / "broken.dcm").write_bytes(b"not a DICOM file")
    written = {}
    for label, bundle, config in (
        ("source", source, source / "configs" / "image_inference.json"),
        ("package", out, out / "configs" / "inference.json"),
    ):
        outputs = tmp_path / label
        args = ["python", "-m", "monai.bundle", "run", "--config_file", str(config), "--bundle_root", str(bundle)]
        result = run_cli(args + ["--dataset_dir", str(folder), "--output_dir", str(outputs)], cwd=tmp_path)
        assert result.returncode == 1 and "1 could not be read" in result.stderr, result.stderr[-3000:]
        written[label] = {p.relative_to(outputs).as_posix(): json.loads(p.read_text()) for p in outputs.rglob("*.json")}
    assert written["source"] == written["package"]
    stems = sorted(f"series/{p.stem}.json" for p in images.iterdir())
    assert sorted(written["source"]) == sorted(stems + ["errors.json"])
    record = written["source"][stems[0]]
    assert record["space"] == "image_encoder" and record["embed_dim"] == len(record["embedding"])


def test_zero_shot_retrieval_and_grounding_run_from_the_package_alone(
    packaged: dict[str, dict[str, Any]], images: Path, tmp_path: Path
) -> None:
    """The text side ships: the three configs run in an empty folder with only --bundle_root/--dataset_dir/--output_dir
    (and the report bank or the phrase), and zero-shot gives what the source bundle gives with the same weights."""
    source, out = packaged["pretrain"]["source"], packaged["pretrain"]["out"]
    assert (out / "models" / "sista.pt").is_file() and (
        out / "models" / "tokenizer" / "tokenizer_config.json"
    ).is_file()
    bank = tmp_path / "bank"
    bank.mkdir()
    for index, text in enumerate(REPORTS):
        (bank / f"r{index}.txt").write_text(f"FINDINGS: {text}\nIMPRESSION: {text}")
    work = tmp_path / "work"
    work.mkdir()
    layered = {
        name: ["--config_file", f"['{out}/configs/train.json','{out}/configs/{name}.json']", "--bundle_root", str(out)]
        for name in ("zero_shot", "retrieval", "grounding")
    }
    extra = {"zero_shot": [], "retrieval": ["--report_bank", str(bank)], "grounding": ["--phrase", "pleural effusion"]}
    outputs = {}
    for name, args in layered.items():
        outputs[name] = tmp_path / name
        command = ["python", "-m", "monai.bundle", "run", *args, "--dataset_dir", str(images)]
        result = run_cli(command + ["--output_dir", str(outputs[name]), *extra[name]], cwd=work)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert not any(work.iterdir())
    stems = sorted(p.stem for p in images.iterdir())
    assert sorted(p.stem for p in outputs["zero_shot"].glob("*.json")) == stems
    assert (outputs["zero_shot"] / "zero_shot.csv").is_file()
    assert sorted(p.stem for p in outputs["retrieval"].glob("*.json")) == sorted(stems + ["report_to_image"])
    assert sorted(p.name for p in outputs["grounding"].glob("*_grounding.json")) == [
        f"{s}_grounding.json" for s in stems
    ]
    layer = packaged["pretrain"]["layers"][0]
    config = f"['{source}/configs/train.json','{layer}','{source}/configs/zero_shot.json']"
    overrides = ["--tokenizer", str(out / "models" / "tokenizer"), "--text_pretrained", "None"]
    command = ["python", "-m", "monai.bundle", "run", "--config_file", config, "--bundle_root", str(source)]
    result = run_cli(command + ["--dataset_dir", str(images), "--output_dir", str(tmp_path / "source"), *overrides])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for stem in stems:
        packaged_record = json.loads((outputs["zero_shot"] / f"{stem}.json").read_text())
        source_record = json.loads((tmp_path / "source" / f"{stem}.json").read_text())
        assert packaged_record["probabilities"] == pytest.approx(source_record["probabilities"], abs=1e-6)


def test_wheel_installs_offline_into_a_fresh_environment(packaged: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    wheel = next((packaged["pretrain"]["out"] / "wheels").glob("*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    target = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME")}
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", "--target", target, str(wheel)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    probe = subprocess.run(
        [
            str(python),
            "-c",
            "import importlib.metadata as m, importlib.resources as r, sista_monai.package as p; "
            "print(m.version('sista-monai'), p.__file__, r.files('sista_monai.data.released_splits').is_dir())",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    installed, module, splits = probe.stdout.split()
    assert installed == version("sista-monai") and splits == "True"
    assert Path(module).is_relative_to(target)


def test_command_line_help_and_one_line_errors(tmp_path: Path) -> None:
    result = run_cli(["python", "-m", "sista_monai.package", "--help"], cwd=tmp_path)
    assert result.returncode == 0 and "--out" in result.stdout and "model zoo" in result.stdout.lower()
    missing = tmp_path / "no_such_bundle"
    result = run_cli(["python", "-m", "sista_monai.package", str(missing), "--out", str(tmp_path / "o")], cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"python -m sista_monai.package: error: {missing}: not a bundle folder"
    ]
    assert not (tmp_path / "o").exists()


def test_refusals_name_the_file_and_the_reason(packaged: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    entry = packaged["rsna_pneumonia_classification"]
    with pytest.raises(BundlePackagingError, match=r"model\.pt: does not fit the network_def .*--layer"):
        package_bundle(entry["source"], tmp_path / "no_layer")  # tiny weights, full-size config
    with pytest.raises(BundlePackagingError, match="exists and is not empty"):
        package_bundle(entry["source"], entry["out"], layers=entry["layers"])
    broken = tmp_path / "broken"
    shutil.copytree(entry["source"], broken)
    metadata = json.loads((broken / "configs" / "metadata.json").read_text())
    metadata["version"] = "9.9.9"
    (broken / "configs" / "metadata.json").write_text(json.dumps(metadata))
    with pytest.raises(BundlePackagingError, match=r"metadata\.json: version 9\.9\.9 has no changelog entry"):
        package_bundle(broken, tmp_path / "out", layers=entry["layers"])
    assert not (tmp_path / "no_layer").exists() and not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no half-written folder left
