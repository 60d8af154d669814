"""Datasets as img2dataset writes them, and a real S3-compatible server on the loopback.

``write_shards`` writes webdataset shards (``KEY.jpg`` + ``KEY.txt`` + ``KEY.json`` members,
keys of 9 digits, a ``.parquet`` beside each shard with ``key``, ``url``, ``caption``, ``status``
...); ``moto_s3`` (from ``loadtests.s3server``, which the ingest benchmark shares) starts moto's
standalone server (the S3 server s3fs's own tests use) in its own process on 127.0.0.1, and
``aws_env`` points the standard AWS variables at it.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from models.data.scenes import COLOURS, COUNT_WORDS, SHAPES, SIZES


def jpeg(seed: int, size: tuple[int, int] = (32, 24)) -> bytes:
    buf = io.BytesIO()
    colour = (seed * 37 % 256, seed * 91 % 256, seed * 53 % 256)
    Image.new("RGB", size, colour).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def caption_of(n: int) -> str:
    """The ``n``-th sample's caption: a distinct set of the tiny bundle's scene words (its text
    tower is a bag of words), so that each caption finds its own image (1008 of them)."""
    counts, sizes, colours, shapes = (list(w) for w in (COUNT_WORDS, SIZES, COLOURS, SHAPES))
    count, n = counts[n % 6], n // 6
    size, n = sizes[n % 3], n // 3
    colour, n = colours[n % 8], n // 8
    return f"{count} {size} {colour} {shapes[n % 7]}"


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 1_700_000_000
    tar.addfile(info, io.BytesIO(data))


def write_shards(
    folder: Path, shards: int, per_shard: int, *, corrupt: tuple[int, int] | None = None
) -> list[str]:
    """``folder/{00000..}.tar`` and ``.parquet`` in img2dataset's layout; ``corrupt`` =
    (shard, index): that sample's jpg is not a JPEG. Returns every key, in order."""
    folder.mkdir(parents=True, exist_ok=True)
    keys: list[str] = []
    for s in range(shards):
        rows: list[dict[str, Any]] = []
        with tarfile.open(folder / f"{s:05}.tar", "w") as tar:
            for i in range(per_shard):
                key = f"{s:05}{i:04}"
                keys.append(key)
                n = s * per_shard + i
                image = jpeg(n)
                if corrupt == (s, i):
                    image = b"\xff\xd8\xff\xe0 this is not really a jpeg" + bytes(64)
                meta = {
                    "url": f"https://images.example.org/{key}.jpg",
                    "key": key,
                    "caption": caption_of(n),
                    "status": "success",
                    "error_message": None,
                    "width": 32,
                    "height": 24,
                    "license": "cc-by",
                }
                _add(tar, f"{key}.jpg", image)
                _add(tar, f"{key}.txt", caption_of(n).encode())
                _add(tar, f"{key}.json", json.dumps(meta).encode())
                rows.append(meta)
        pq.write_table(pa.Table.from_pylist(rows), folder / f"{s:05}.parquet")
    return keys
