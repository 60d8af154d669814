"""Bundle loading refuses anything it cannot trust, and says which file is wrong."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from service.core.bundle.manifest import (
    MANIFEST_NAME,
    Manifest,
    load_bundle,
    sha256_file,
    write_manifest,
)
from service.core.errors import ClipsearchError, ErrorType


@pytest.fixture
def bundle_copy(tiny_bundle_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_bundle_dir, tmp_path / "bundle"))


def _edit_manifest(root: Path, edit: Any) -> None:
    path = root / MANIFEST_NAME
    raw = json.loads(path.read_text())
    edit(raw)
    path.write_text(json.dumps(raw))


def _load_error(root: Path, **kwargs: Any) -> ClipsearchError:
    with pytest.raises(ClipsearchError) as info:
        load_bundle(root, **kwargs)
    assert info.value.type is ErrorType.bundle_invalid
    return info.value


def test_loads_a_valid_bundle(tiny_bundle_dir: Path) -> None:
    bundle = load_bundle(tiny_bundle_dir)
    assert bundle.root == tiny_bundle_dir
    assert bundle.manifest.ref == "tiny-test@0.1.0"
    assert bundle.path("text.onnx").is_file()
    assert bundle.manifest.referenced_files() == ["image.onnx", "text.onnx", "tokenizer.json"]


def test_checksum_mismatch_names_the_file(bundle_copy: Path) -> None:
    path = bundle_copy / "text.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    err = _load_error(bundle_copy)
    assert "text.onnx" in err.message and "checksum" in err.message
    assert err.detail["file"] == "text.onnx"
    assert err.detail["actual"] == sha256_file(path)
    # Skipping verification is an explicit choice of the caller.
    assert load_bundle(bundle_copy, verify=False).manifest.name == "tiny-test"


def test_missing_file(bundle_copy: Path) -> None:
    (bundle_copy / "tokenizer.json").unlink()
    assert "missing file 'tokenizer.json'" in _load_error(bundle_copy).message


def test_missing_manifest(tmp_path: Path) -> None:
    assert "no manifest.json" in _load_error(tmp_path).message


def test_invalid_json(bundle_copy: Path) -> None:
    (bundle_copy / MANIFEST_NAME).write_text("{ not json")
    assert "not valid JSON" in _load_error(bundle_copy).message


def test_inconsistent_dims_rejected(bundle_copy: Path) -> None:
    def edit(raw: dict[str, Any]) -> None:
        raw["spaces"]["image"] = 32

    _edit_manifest(bundle_copy, edit)
    err = _load_error(bundle_copy)
    assert err.message.endswith("invalid manifest")
    assert any("spaces.image" in problem for problem in err.detail)


def test_sentence_output_required_for_text_tower_description(bundle_copy: Path) -> None:
    def edit(raw: dict[str, Any]) -> None:
        raw["text_tower"]["sentence_output_name"] = None

    _edit_manifest(bundle_copy, edit)
    assert any("sentence_output_name" in p for p in _load_error(bundle_copy).detail)


def test_referenced_file_needs_a_checksum(bundle_copy: Path) -> None:
    def edit(raw: dict[str, Any]) -> None:
        del raw["files"]["tokenizer.json"]

    _edit_manifest(bundle_copy, edit)
    assert any("tokenizer.json" in p for p in _load_error(bundle_copy).detail)


def test_unknown_field_rejected(bundle_copy: Path) -> None:
    def edit(raw: dict[str, Any]) -> None:
        raw["image_tower"]["colour_space"] = "bgr"

    _edit_manifest(bundle_copy, edit)
    assert any("colour_space" in p for p in _load_error(bundle_copy).detail)


def test_path_escaping_the_folder_rejected(bundle_copy: Path) -> None:
    outside = bundle_copy.parent / "outside.bin"
    outside.write_bytes(b"secret")

    def edit(raw: dict[str, Any]) -> None:
        raw["files"]["../outside.bin"] = sha256_file(outside)

    _edit_manifest(bundle_copy, edit)
    assert "escapes the bundle folder" in _load_error(bundle_copy).message


def test_write_manifest_round_trips(bundle_copy: Path) -> None:
    manifest = load_bundle(bundle_copy).manifest
    write_manifest(bundle_copy, manifest.model_copy(update={"version": "0.2.0"}))
    reloaded = load_bundle(bundle_copy).manifest
    assert reloaded.version == "0.2.0"
    assert Manifest.model_validate(reloaded.model_dump()) == reloaded


def test_visual_features_and_labels_are_declared_consistently(
    tiny_labelled_bundle_dir: Path, tmp_path: Path
) -> None:
    def copy(name: str) -> Path:
        return Path(shutil.copytree(tiny_labelled_bundle_dir, tmp_path / name))

    assert load_bundle(tiny_labelled_bundle_dir).manifest.spaces.visual == 48
    wrong_space = copy("space")
    _edit_manifest(wrong_space, lambda m: m["spaces"].update(visual=32))
    assert "spaces.visual" in str(_load_error(wrong_space).detail)
    half = copy("half")
    _edit_manifest(half, lambda m: m["image_tower"].update(visual_output_name=None))
    assert "go together" in str(_load_error(half).detail)
    unlisted = copy("unlisted")
    _edit_manifest(unlisted, lambda m: m["files"].pop("labels.json"))
    assert "labels.json" in str(_load_error(unlisted).detail)
    tampered = copy("tampered")
    (tampered / "labels.json").write_text("{}")
    assert "labels.json" in _load_error(tampered).message
