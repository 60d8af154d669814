"""Source specs and how each kind of source reads into entries (nothing fetched or decoded)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from indexer.sources.read import SourceEntry, SourceError, iter_source
from service.core.config import LimitsSettings, Settings, SourcesSettings
from service.core.errors import ClipsearchError, ErrorType
from service.core.schemas.sources import MAX_SOURCE_ITEMS, SourceSpec


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "media"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.png").write_bytes(b"png")
    (folder / "a.txt").write_text("  a red cube \n")
    (folder / "a.desc.txt").write_text("a scene with one red cube")
    (folder / "sub" / "b.JPG").write_bytes(b"jpg")
    (folder / "sub" / "clip.mp4").write_bytes(b"mp4")
    (folder / "notes.md").write_text("not media")
    (folder / "orphan.txt").write_text("a caption without its image")
    return folder


@pytest.fixture
def settings(root: Path) -> Settings:
    return Settings(sources=SourcesSettings(allowed_roots=[root]))


def _read(spec: object, settings: Settings) -> list[SourceEntry | SourceError]:
    return list(iter_source(SourceSpec.model_validate(spec), settings))


def _lines(*objects: object) -> dict[str, list[str]]:
    return {"manifest_lines": [o if isinstance(o, str) else json.dumps(o) for o in objects]}


# -- the spec -----------------------------------------------------------------------------------


def test_spec_kinds_and_shorthand() -> None:
    assert SourceSpec.model_validate({"directory": "/d"}).kind == "directory"
    assert SourceSpec.model_validate("/d").directory == "/d"  # the foundation's plain string
    assert SourceSpec.model_validate({"manifest": "/m.jsonl"}).kind == "manifest"
    assert SourceSpec.model_validate({"manifest_lines": ['{"uri": "/x"}']}).kind == (
        "manifest_lines"
    )
    assert SourceSpec.model_validate({"urls": [" https://a.example/x.png "]}).urls == [
        "https://a.example/x.png"
    ]


@pytest.mark.parametrize(
    "spec",
    [
        {},
        {"directory": "/d", "urls": ["https://a.example/x.png"]},
        {"urls": []},
        {"urls": ["https://a.example/" + "x" * 2048]},
        {"urls": ["https://a.example/x.png"] * (MAX_SOURCE_ITEMS + 1)},
        {"manifest_lines": ["{}"] * (MAX_SOURCE_ITEMS + 1)},
        {"directory": ""},
        {"bucket": "s3://b"},
    ],
)
def test_spec_rejects(spec: object) -> None:
    with pytest.raises(ValidationError):
        SourceSpec.model_validate(spec)


# -- directories --------------------------------------------------------------------------------


def test_directory_yields_images_and_videos_with_texts(root: Path, settings: Settings) -> None:
    entries = _read({"directory": str(root)}, settings)
    assert all(isinstance(e, SourceEntry) for e in entries)
    by_name = {Path(e.uri or e.id).name: e for e in entries if isinstance(e, SourceEntry)}
    assert sorted(by_name) == ["a.png", "b.JPG", "clip.mp4", "orphan.txt"]
    # A .txt with no image or video of its name is a text-only document, named by its file.
    orphan = by_name["orphan.txt"]
    assert (orphan.kind, orphan.uri, orphan.id) == ("text", None, (root / "orphan.txt").as_uri())
    assert (orphan.caption, orphan.description) == (None, "a caption without its image")
    a = by_name["a.png"]
    assert (a.caption, a.description) == ("a red cube", "a scene with one red cube")
    assert a.kind == "image"
    assert a.id == a.uri == (root / "a.png").as_uri()
    assert by_name["clip.mp4"].kind == "video"
    assert by_name["b.JPG"].caption is None


def test_directory_text_documents(tmp_path: Path) -> None:
    """Lone texts: KEY.txt is a document (its text the description); with a lone KEY.desc.txt
    too, that is the description and KEY.txt the caption; a lone KEY.desc.txt alone is a
    document; an empty one, one past the limit, a link: each its own error, the rest read."""
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "recipe.txt").write_text("lemon cake: flour, sugar, three lemons\n")
    (folder / "trip.txt").write_text("a train to Geneva")
    (folder / "trip.desc.txt").write_text("notes from a rail journey through the Alps")
    (folder / "only.desc.txt").write_text("a description kept on its own")
    (folder / "empty.txt").write_text("  \n")
    (folder / "long.txt").write_text("x" * 10_001)
    (folder / "link.txt").symlink_to(folder / "recipe.txt")
    (folder / "photo.png").write_bytes(b"png")
    (folder / "photo.txt").write_text("a caption, not a document")
    settings = Settings(sources=SourcesSettings(allowed_roots=[folder]))
    read = _read({"directory": str(folder)}, settings)
    docs = {Path(e.id).name: e for e in read if isinstance(e, SourceEntry) and e.kind == "text"}
    assert sorted(docs) == ["only.desc.txt", "recipe.txt", "trip.txt"]
    assert (docs["recipe.txt"].caption, docs["recipe.txt"].description) == (
        None,
        "lemon cake: flour, sugar, three lemons",
    )
    assert (docs["trip.txt"].caption, docs["trip.txt"].description) == (
        "a train to Geneva",
        "notes from a rail journey through the Alps",
    )
    assert docs["only.desc.txt"].description == "a description kept on its own"
    [photo] = [e for e in read if isinstance(e, SourceEntry) and e.kind == "image"]
    assert photo.caption == "a caption, not a document"
    errors = {Path(e.item).name: e.reason for e in read if isinstance(e, SourceError)}
    assert sorted(errors) == ["empty.txt", "link.txt", "long.txt"]
    assert "is empty" in errors["empty.txt"]
    assert "not a link" in errors["link.txt"]
    assert "longer than 2000 characters (limits.max_text_chars)" in errors["long.txt"]


def test_directory_outside_roots_is_forbidden(tmp_path: Path, settings: Settings) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    with pytest.raises(ClipsearchError) as info:
        iter_source(SourceSpec(directory=str(outside)), settings)
    assert info.value.type == ErrorType.forbidden


def test_directory_caption_over_the_limit_fails_only_that_image(
    root: Path, settings: Settings
) -> None:
    (root / "a.txt").write_text("x" * 10_001)
    entries = _read({"directory": str(root)}, settings)
    errors = [e for e in entries if isinstance(e, SourceError)]
    assert [Path(e.item).name for e in errors] == ["a.png"]
    assert "10001 characters; the limit is 10000 (limits.max_caption_chars)" in errors[0].reason
    assert len(entries) == 4


def test_directory_link_leaving_the_root_is_reported(
    tmp_path: Path, root: Path, settings: Settings
) -> None:
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"png")
    (root / "link.png").symlink_to(secret)
    errors = [e for e in _read({"directory": str(root)}, settings) if isinstance(e, SourceError)]
    assert [Path(e.item).name for e in errors] == ["link.png"]


def test_directory_walk_order_links_and_special_files(
    tmp_path: Path, root: Path, settings: Settings
) -> None:
    """Folders depth first by name, each one's files before its subfolders; a link to a file
    inside the root is followed, a linked folder is not walked, a fifo is reported (reading
    it would block the job)."""
    (root / "sub" / "deeper").mkdir()
    (root / "sub" / "deeper" / "c.webp").write_bytes(b"webp")
    (root / "z-first.png").write_bytes(b"png")
    (root / "same.png").symlink_to(root / "sub" / "b.JPG")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "hidden.png").write_bytes(b"png")
    (root / "linked-folder").symlink_to(outside, target_is_directory=True)
    os.mkfifo(root / "pipe.png")
    reads = _read({"directory": str(root)}, settings)
    names = [Path(r.uri or r.id if isinstance(r, SourceEntry) else r.item).name for r in reads]
    assert names == [
        *("a.png", "orphan.txt", "pipe.png", "same.png", "z-first.png"),
        *("b.JPG", "clip.mp4", "c.webp"),
    ]
    by_name = dict(zip(names, reads, strict=True))
    assert isinstance(by_name["same.png"], SourceEntry)
    pipe = by_name["pipe.png"]
    assert isinstance(pipe, SourceError) and pipe.reason == "not a regular file"


def test_directory_caption_file_that_is_a_folder_is_no_caption(
    root: Path, settings: Settings
) -> None:
    (root / "sub" / "b.txt").mkdir()  # listed as a folder, so never read as a caption
    entries = _read({"directory": str(root)}, settings)
    (b,) = [e for e in entries if isinstance(e, SourceEntry) and e.uri and e.uri.endswith("b.JPG")]
    assert b.caption is None


# -- manifests ----------------------------------------------------------------------------------


def test_manifest_lines_good_and_bad(root: Path, settings: Settings) -> None:
    entries = _read(
        _lines(
            {"uri": str(root / "a.png"), "id": "cube-1", "caption": "a cube", "metadata": {"k": 1}},
            "{not json",
            {"uri": "https://cdn.example/v/clip.webm?sig=1", "description": "a clip"},
            {"caption": "text only"},
            {"id": "lonely"},
            "",
            {"uri": str(root / "sub" / "b.JPG"), "colour": "red"},
            [1, 2],
        ),
        settings,
    )
    assert len(entries) == 7  # the blank line is no entry
    first, bad_json, video, text, lonely, unknown, not_object = entries
    assert first == SourceEntry(
        (root / "a.png").as_uri(), "cube-1", "a cube", None, {"k": 1}, "image"
    )
    assert isinstance(bad_json, SourceError)
    assert bad_json.line == 2 and bad_json.reason.startswith("line 2: invalid JSON")
    assert isinstance(video, SourceEntry)
    assert (video.kind, video.id, video.is_url) == ("video", video.uri, True)
    assert isinstance(text, SourceEntry)
    assert (text.kind, text.uri, text.caption) == ("text", None, "text only")
    assert isinstance(lonely, SourceError) and "needs a uri" in lonely.reason
    assert isinstance(unknown, SourceError) and "unknown keys ['colour']" in unknown.reason
    assert unknown.line == 7
    assert isinstance(not_object, SourceError) and "JSON object" in not_object.reason


def test_inline_objects_are_accepted(root: Path, settings: Settings) -> None:
    (entry,) = _read({"manifest_lines": [{"uri": str(root / "a.png")}]}, settings)
    assert isinstance(entry, SourceEntry) and entry.id == (root / "a.png").as_uri()


def test_caption_over_the_limit_is_refused_with_the_limit_named(
    root: Path, settings: Settings
) -> None:
    uri = str(root / "a.png")
    ok, too_long, long_description = _read(
        _lines(
            {"uri": uri, "id": "ok", "caption": "x" * 10_000},
            {"uri": uri, "id": "long", "caption": "x" * 10_001},
            {"uri": uri, "id": "desc", "description": "y" * 2_001},
        ),
        settings,
    )
    assert isinstance(ok, SourceEntry) and len(ok.caption or "") == 10_000  # never truncated
    assert isinstance(too_long, SourceError)
    assert "caption is 10001 characters; the limit is 10000 (limits.max_caption_chars)" in (
        too_long.reason
    )
    assert isinstance(long_description, SourceError)
    assert "(limits.max_text_chars)" in long_description.reason


def test_caption_limit_follows_settings(root: Path) -> None:
    settings = Settings(
        sources=SourcesSettings(allowed_roots=[root]), limits=LimitsSettings(max_caption_chars=5)
    )
    (error,) = _read(_lines({"caption": "123456"}), settings)
    assert isinstance(error, SourceError) and "the limit is 5" in error.reason


def test_local_paths_are_checked_per_line(tmp_path: Path, root: Path, settings: Settings) -> None:
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"png")
    good, out, missing, relative, scheme, remote_file = _read(
        _lines(
            {"uri": (root / "a.png").as_uri()},
            {"uri": str(outside)},
            {"uri": str(root / "nope.png")},
            {"uri": "a.png"},
            {"uri": "s3://bucket/a.png"},
            {"uri": "file://fileserver/share/a.png"},
        ),
        settings,
    )
    assert isinstance(good, SourceEntry)
    assert isinstance(out, SourceError) and "outside the allowed roots" in out.reason
    assert isinstance(missing, SourceError) and "does not exist" in missing.reason
    assert isinstance(relative, SourceError) and "absolute" in relative.reason
    assert isinstance(scheme, SourceError) and "unsupported uri scheme 's3'" in scheme.reason
    assert isinstance(remote_file, SourceError) and "another host" in remote_file.reason


def test_bad_urls_in_a_manifest_fail_their_line(settings: Settings) -> None:
    ok, creds, long = _read(
        _lines(
            {"uri": "http://cdn.example/a.png"},
            {"uri": "https://user:pw@cdn.example/a.png"},
            {"uri": "https://cdn.example/" + "x" * 2048},
        ),
        settings,
    )
    assert isinstance(ok, SourceEntry)
    assert isinstance(creds, SourceError) and "credentials" in creds.reason
    assert isinstance(long, SourceError) and "2048" in long.reason


def test_ids_are_stable_and_repeats_are_reported(root: Path, settings: Settings) -> None:
    lines = _lines(
        {"uri": str(root / "a.png")},
        {"uri": str(root / "sub" / "b.JPG"), "id": 42},
        {"caption": "only words", "description": "and more"},
        {"uri": str(root / ".." / root.name / "a.png")},  # another spelling of line 1's file
    )
    first = _read(lines, settings)
    again = _read(lines, settings)
    assert first == again
    a, b, text, repeat = first
    assert isinstance(a, SourceEntry) and isinstance(b, SourceEntry)
    assert isinstance(text, SourceEntry)
    assert a.id == (root / "a.png").as_uri()
    assert b.id == "42"
    assert text.id.startswith("text:") and len(text.id) == len("text:") + 64
    # The manifest's id for a file is the one a directory scan gives it.
    scanned = {e.uri: e.id for e in _read({"directory": str(root)}, settings)}
    assert scanned[a.uri] == a.id
    assert isinstance(repeat, SourceError) and "repeats line 1" in repeat.reason


def test_manifest_file(root: Path, settings: Settings) -> None:
    manifest = root / "list.jsonl"
    manifest.write_text(
        "\n".join(
            [
                json.dumps({"uri": "a.png", "caption": "relative to the manifest"}),
                "{broken",
                json.dumps({"uri": "sub/clip.mp4"}),
            ]
        )
    )
    a, broken, clip = _read({"manifest": str(manifest)}, settings)
    assert isinstance(a, SourceEntry) and a.uri == (root / "a.png").as_uri()
    assert isinstance(broken, SourceError) and broken.line == 2
    assert isinstance(clip, SourceEntry) and clip.kind == "video"


def test_manifest_file_problems_fail_the_whole_spec(
    tmp_path: Path, root: Path, settings: Settings
) -> None:
    outside = tmp_path / "outside.jsonl"
    outside.write_text("{}\n")
    cases = {
        str(outside): ErrorType.forbidden,
        str(root / "missing.jsonl"): ErrorType.invalid_input,
        str(root): ErrorType.invalid_input,
        "\0": ErrorType.invalid_input,  # a NUL in a path (the gRPC fuzzer's find): a 400, not 500
        f"{root}/a\0.jsonl": ErrorType.invalid_input,
    }
    for path, expected in cases.items():
        with pytest.raises(ClipsearchError) as info:
            iter_source(SourceSpec(manifest=path), settings)
        assert info.value.type == expected, path
        if expected is ErrorType.forbidden:  # and the refusal says how to allow the folder
            assert f"--allow-root {tmp_path}" in info.value.message
            assert "CLIPSEARCH_SOURCES__ALLOWED_ROOTS" in info.value.message
    # No cap on its lines (issue 22): read a range of lines at a time, each line its own item.
    huge = root / "huge.jsonl"
    huge.write_bytes(b"{}\n" * (MAX_SOURCE_ITEMS + 1))
    reads = iter_source(SourceSpec(manifest=str(huge)), settings)
    assert sum(1 for _ in reads) == MAX_SOURCE_ITEMS + 1


def test_manifest_file_bad_bytes_fail_their_line(root: Path, settings: Settings) -> None:
    manifest = root / "bytes.jsonl"
    good = json.dumps({"caption": "fine"}).encode()
    manifest.write_bytes(good + b"\n\xff\xfe\n" + b"x" * (2 << 20) + b"\n" + good + b"x\n")
    entries = _read({"manifest": str(manifest)}, settings)
    assert [type(e).__name__ for e in entries] == [
        "SourceEntry",
        "SourceError",
        "SourceError",
        "SourceError",
    ]
    assert "not UTF-8" in entries[1].reason
    assert "longer than" in entries[2].reason
    assert entries[3].line == 4


def test_no_roots_means_no_local_manifests(root: Path) -> None:
    with pytest.raises(ClipsearchError) as info:
        iter_source(SourceSpec(manifest=str(root / "x.jsonl")), Settings())
    assert info.value.type == ErrorType.forbidden
    assert f"--allow-root {root}" in info.value.message


# -- URL lists ----------------------------------------------------------------------------------


def test_url_list(settings: Settings) -> None:
    urls = [
        "https://cdn.example/a.png",
        "https://cdn.example/movie.MOV",
        "ftp://cdn.example/a.png",
        "https://cdn.example/a.png",
    ]
    image, video, ftp, repeat = _read({"urls": urls}, settings)
    assert image == SourceEntry(urls[0], urls[0], kind="image")
    assert isinstance(video, SourceEntry) and video.kind == "video"
    assert isinstance(ftp, SourceError) and "only http and https" in ftp.reason
    assert isinstance(repeat, SourceError) and "more than once" in repeat.reason


def test_non_json_constants_and_deep_nesting_fail_their_line(settings: Settings) -> None:
    nan, deep, ok = _read(
        _lines('{"caption": "x", "metadata": {"score": NaN}}', "[" * 100_000, {"caption": "y"}),
        settings,
    )
    assert isinstance(nan, SourceError) and "NaN" in nan.reason
    assert isinstance(deep, SourceError) and deep.line == 2
    assert isinstance(ok, SourceEntry)


def test_an_unlistable_folder_is_reported(
    root: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    locked = root / "locked"
    locked.mkdir()
    (locked / "c.png").write_bytes(b"png")
    real_scandir = os.scandir

    def scandir(path: str) -> object:  # permissions do not stop root, so refuse by name
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    entries = _read({"directory": str(root)}, settings)
    errors = [e for e in entries if isinstance(e, SourceError)]
    assert [e.item for e in errors] == [str(locked)]
    assert "cannot list the folder: Permission denied" in errors[0].reason
    assert len(entries) == 5  # the three media files and the text document still come through
