"""Model bundles: a folder with ``manifest.json`` and the files it names.

``models/`` writes bundles; the serving side only reads them through :func:`load_bundle`, which
verifies that every listed file exists and matches its sha256 before any session is created.

A text tower exposes a joint-space output (CLIP space: searched against ``image`` and ``caption``)
and may expose a second, sentence-embedding output that serves as the description embedder, so
that one text forward answers every search mode. A bundle may instead name a separate ONNX file
for the description embedder.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from service.core.errors import ClipsearchError, ErrorType

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION: Literal[1] = 1
# OpenAI CLIP's normalisation constants, shared by most CLIP-family image towers.
CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
ResizeMode = Literal["shortest_edge_center_crop", "squash"]
Interpolation = Literal["bicubic", "bilinear", "nearest"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LabelsSpec(_Strict):
    """Classes the image tower names: its ``ids_output_name`` (int64 [n, top_k]) and
    ``scores_output_name`` (float32 [n, top_k], probabilities, best first) outputs index the
    classes of ``file`` (``labels.json``, see ``service.core.bundle.labels``). The encoder returns
    them with each image; ingestion writes an uncaptioned image's description from them."""

    file: str
    ids_output_name: str = "label_ids"
    scores_output_name: str = "label_scores"
    top_k: int = Field(gt=0, le=100)


class ImageTower(_Strict):
    file: str
    input_name: str = "pixel_values"
    output_name: str = "image_embeds"
    image_size: int = Field(gt=0)
    resize: ResizeMode = "shortest_edge_center_crop"
    interpolation: Interpolation = "bicubic"
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    output_dim: int = Field(gt=0)
    normalized: bool = False
    # A second output of the same graph: visual features for image→image search (near
    # duplicates, "more like this"), stored as the ``visual`` vector. The joint-space output
    # stays what text queries search.
    visual_output_name: str | None = None
    visual_dim: int | None = Field(None, gt=0)
    labels: LabelsSpec | None = None


class TextTower(_Strict):
    file: str
    tokenizer: str = "tokenizer.json"
    input_ids_name: str = "input_ids"
    attention_mask_name: str | None = "attention_mask"
    output_name: str = "text_embeds"
    max_tokens: int = Field(gt=1)
    pad_id: int = 0
    output_dim: int = Field(gt=0)
    normalized: bool = False
    # Second output of the same graph used as the description embedder (one forward, two spaces).
    sentence_output_name: str | None = None
    sentence_dim: int | None = Field(None, gt=0)


class DescriptionEmbedder(_Strict):
    """Vision-free path: either an output of the text tower or an ONNX file of its own."""

    source: Literal["text_tower", "onnx"]
    output_dim: int = Field(gt=0)
    normalized: bool = False
    # For source == "onnx" only:
    file: str | None = None
    tokenizer: str | None = None
    input_ids_name: str = "input_ids"
    attention_mask_name: str | None = "attention_mask"
    output_name: str = "sentence_embeds"
    max_tokens: int = Field(256, gt=1)
    pad_id: int = 0

    @model_validator(mode="after")
    def _check(self) -> DescriptionEmbedder:
        if self.source == "onnx" and not (self.file and self.tokenizer):
            raise ValueError("description_embedder with source 'onnx' needs file and tokenizer")
        return self


class Spaces(_Strict):
    image: int = Field(gt=0)
    caption: int = Field(gt=0)
    description: int = Field(gt=0)
    visual: int | None = Field(None, gt=0)


class Component(_Strict):
    """Where one part of a bundle comes from, so an operator can judge it."""

    part: str  # "image backbone", "text tower", "vocabulary", ...
    origin: str  # package and version, or "trained here"
    license: str
    notes: str = ""  # e.g. the published ImageNet top-1 accuracy


class Card(_Strict):
    """What a bundle is for and what it was measured to do (its EVAL.md has the detail)."""

    domain: str  # e.g. "real photographs, ImageNet-1k vocabulary"
    # Who should use it for what, and what not: shown at start-up, by /health/ready, by
    # GET /v1/collections and by the admin dashboard.
    intended_use: str = ""
    components: tuple[Component, ...] = ()
    # Measured figures, name -> value (e.g. "real_photos.object.r_at_1": 0.9).
    figures: dict[str, float] = Field(default_factory=dict)
    limitations: str = ""


class Manifest(_Strict):
    format_version: Literal[1] = FORMAT_VERSION
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    version: str
    summary: str = ""
    trained: bool = False
    image_tower: ImageTower
    text_tower: TextTower
    description_embedder: DescriptionEmbedder
    spaces: Spaces
    files: dict[str, str] = Field(description="relative path -> sha256 hex of every file")
    card: Card | None = None

    @property
    def ref(self) -> str:
        """``name@version``: what the payload's ``model`` field records."""
        return f"{self.name}@{self.version}"

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        if self.spaces.image != self.image_tower.output_dim:
            raise ValueError("spaces.image must equal image_tower.output_dim")
        if self.spaces.caption != self.text_tower.output_dim:
            raise ValueError("spaces.caption must equal text_tower.output_dim")
        if self.spaces.image != self.spaces.caption:
            raise ValueError("image and caption live in one joint space: dims must match")
        if self.spaces.description != self.description_embedder.output_dim:
            raise ValueError("spaces.description must equal description_embedder.output_dim")
        it = self.image_tower
        if (it.visual_output_name is None) != (it.visual_dim is None):
            raise ValueError("image_tower.visual_output_name and visual_dim go together")
        if self.spaces.visual != it.visual_dim:
            raise ValueError("spaces.visual must equal image_tower.visual_dim (or both be unset)")
        if self.description_embedder.source == "text_tower":
            tt = self.text_tower
            if not tt.sentence_output_name or tt.sentence_dim != self.spaces.description:
                raise ValueError(
                    "description_embedder from the text tower needs "
                    "text_tower.sentence_output_name and a matching sentence_dim"
                )
        for needed in self.referenced_files():
            if needed not in self.files:
                raise ValueError(f"file {needed!r} is used but has no sha256 in 'files'")
        return self

    def referenced_files(self) -> list[str]:
        names = [self.image_tower.file, self.text_tower.file, self.text_tower.tokenizer]
        if self.image_tower.labels is not None:
            names.append(self.image_tower.labels.file)
        de = self.description_embedder
        if de.source == "onnx":
            names += [de.file or "", de.tokenizer or ""]
        return names


class Bundle(BaseModel):
    """A verified bundle on disk."""

    model_config = ConfigDict(frozen=True)

    root: Path
    manifest: Manifest

    def path(self, name: str) -> Path:
        return self.root / name


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _bundle_error(root: Path, message: str, detail: object = None) -> ClipsearchError:
    return ClipsearchError(ErrorType.bundle_invalid, f"bundle {root}: {message}", detail)


def load_bundle(root: Path, *, verify: bool = True) -> Bundle:
    """Read and validate ``root/manifest.json``; with ``verify``, check every file's sha256."""
    root = Path(root)
    manifest_path = root / MANIFEST_NAME
    if not manifest_path.is_file():
        raise _bundle_error(root, f"no {MANIFEST_NAME}")
    try:
        raw = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _bundle_error(root, f"{MANIFEST_NAME} is not valid JSON: {exc}") from exc
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as exc:
        problems = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        raise _bundle_error(root, "invalid manifest", problems) from exc
    for rel, expected in manifest.files.items():
        path = (root / rel).resolve()
        if root.resolve() not in path.parents:
            raise _bundle_error(root, f"file {rel!r} escapes the bundle folder")
        if not path.is_file():
            raise _bundle_error(root, f"missing file {rel!r}")
        if verify:
            actual = sha256_file(path)
            if actual != expected.lower():
                raise _bundle_error(
                    root,
                    f"checksum mismatch for {rel!r}: the file is corrupt or was replaced",
                    {"file": rel, "expected": expected, "actual": actual},
                )
    return Bundle(root=root, manifest=manifest)


def write_manifest(root: Path, manifest: Manifest) -> Path:
    """Write ``manifest.json`` (used by ``models/``; kept here so both sides share one format)."""
    path = Path(root) / MANIFEST_NAME
    path.write_text(manifest.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return path


def hash_files(root: Path, names: list[str]) -> dict[str, str]:
    return {name: sha256_file(Path(root) / name) for name in names}
