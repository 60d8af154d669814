"""Bounded reads of uploaded files."""

from __future__ import annotations

from fastapi import UploadFile

from service.core.errors import invalid, too_large


def read_upload(file: UploadFile, limit: int) -> bytes:
    """Read at most ``limit`` bytes; more is a 413, nothing is a 400."""
    data = file.file.read(limit + 1)
    if len(data) > limit:
        raise too_large(f"upload {file.filename!r} is over the {limit}-byte limit")
    if not data:
        raise invalid(f"upload {file.filename!r} is empty")
    return data
