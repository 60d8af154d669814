"""The CLI's output: hits and jobs on stdout whole (file URIs as paths, a video segment's time
range), counts on stderr; ``--json`` the API's JSON unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clipsearch.cli.client import _summary, display_uri, print_hits

LONG = "/home/me/Pictures/summer holidays 2026/" + "a-very-long-file-name-" * 6 + "beach.jpg"


def _answer() -> dict[str, object]:
    return {
        "hits": [
            {"id": "5f25b42a-7514-58f4-84f9-09ca8774c266", "score": 0.8125, "kind": "image",
             "uri": Path(LONG).as_uri(), "caption": 'a "sunny" beach', "media_id": "beach-7"},
            {"id": "v1:3", "score": -0.05, "kind": "video_segment",
             "uri": "https://example.org/clip.mp4", "t_start": 12.0, "t_end": 16.5},
            {"id": "doc-1", "score": 0.5, "kind": None, "uri": None},
        ],
        "took_ms": 3.25,
        "model": "tiny-test@0.1.0",
        "mode": "auto",
        "channels": ["image"],
    }  # fmt: skip


def test_hits_print_one_whole_line_each(capsys: pytest.CaptureFixture[str]) -> None:
    print_hits(_answer())
    out, err = capsys.readouterr()
    assert err == "3 hits · 3.2 ms · tiny-test@0.1.0 · mode auto\n"
    lines = out.splitlines()
    assert len(lines) == 3
    first, video, doc = (line.split() for line in lines)
    assert first[:4] == ["1", "0.8125", "image", "beach-7"]  # the id it was added with
    assert lines[0].endswith(f'{LONG}  "a \\"sunny\\" beach"')  # the path whole, spaces and all
    assert video[:4] == ["2", "-0.0500", "video_segment", "v1:3"]
    assert video[4] == "https://example.org/clip.mp4#t=12,16.5"
    assert doc == ["3", "0.5000", "-", "doc-1", "-"]
    # The columns line up: the ids start at one offset.
    starts = {line.index(h) for line, h in zip(lines, ("beach-7", "v1:3", "doc-1"), strict=True)}
    assert len(starts) == 1


def test_hits_as_json_are_the_answer(capsys: pytest.CaptureFixture[str]) -> None:
    answer = _answer()
    print_hits(answer, as_json=True)
    out, err = capsys.readouterr()
    assert json.loads(out) == answer and err == ""


def test_no_hits_print_nothing_on_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    print_hits({"hits": [], "took_ms": 1.0, "model": "m", "mode": "image"})
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("0 hits")


def test_display_uri() -> None:
    assert display_uri(Path(LONG).as_uri()) == LONG
    assert display_uri("file:///tmp/a%23b%25c.png") == "/tmp/a#b%c.png"
    assert display_uri("https://example.org/a%20b.png") == "https://example.org/a%20b.png"
    assert display_uri("s3://bucket/key.png") == "s3://bucket/key.png"


def test_a_job_summary_names_its_failures_and_tasks_sent_again(
    capsys: pytest.CaptureFixture[str],
) -> None:
    job = {"id": "j", "state": "completed", "done": 11, "failed": 1, "total": 12, "skipped": 0}
    errors = [{"item": "file:///tmp/a%20b.png", "reason": "not an image"}]
    _summary({**job, "errors": errors, "redelivered": 2})
    assert capsys.readouterr().out.splitlines() == [
        "job j: completed, 11 indexed, 1 failed, 12 in all",
        "  failed /tmp/a b.png: not an image",
        "  2 tasks the broker lost were sent again",
    ]
    _summary({**job, "errors": [], "redelivered": 0})
    assert "sent again" not in capsys.readouterr().out
