"""The classes an image tower names (``labels.json`` of a bundle with ``image_tower.labels``).

One entry per class index of the tower's label outputs: an id (for ImageNet, the WordNet synset
``n02123045``), the name used in text, and broader terms, most specific first (``domestic cat``,
``cat``, ``feline``, ... ``animal``). ``models/`` writes the file; the encoder reads it to name the
classes it returns with each image.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from service.core.errors import ClipsearchError, ErrorType


class ClassLabel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    name: str = Field(min_length=1)
    broader: tuple[str, ...] = ()


class Labels(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format_version: Literal[1] = 1
    source: str = ""  # where the class list and the broader terms come from
    classes: tuple[ClassLabel, ...] = Field(min_length=1)


def load_labels(path: Path) -> Labels:
    try:
        return Labels.model_validate(json.loads(Path(path).read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValidationError) as exc:
        raise ClipsearchError(
            ErrorType.bundle_invalid, f"labels file {path} is unreadable: {exc}"
        ) from exc


def write_labels(path: Path, labels: Labels) -> Path:
    path = Path(path)
    path.write_text(labels.model_dump_json(indent=1) + "\n", encoding="utf-8")
    return path
