"""The comparison of a process's cluster-wide settings with those a collection records."""

from __future__ import annotations

import pytest

from service.core.config import Settings
from service.core.contract import (
    METADATA_KEY,
    CollectionSettings,
    check_settings,
    disagreements,
)
from service.core.errors import ClipsearchError, ErrorType


def own(
    bundle: str | None = "tiny@1", max_chunks: int = 512, **video: object
) -> CollectionSettings:
    return CollectionSettings.of(Settings(video=video), bundle=bundle, max_chunks=max_chunks)  # type: ignore[arg-type]


def test_the_same_settings_agree_and_round_trip_through_metadata():
    recorded = own(segment_s=10)
    back = CollectionSettings.from_metadata(recorded.metadata())
    assert back == recorded
    assert disagreements(back, own(segment_s=10), served=["tiny@1"]) == []
    check_settings("media", back, own(segment_s=10), served=["tiny@1"])


def test_a_collection_that_records_nothing_passes():
    assert CollectionSettings.from_metadata({}) is None
    assert CollectionSettings.from_metadata(None) is None
    check_settings("media", None, own(segment_s=99), served=["other@1"])


def test_segment_length_names_the_variable_both_values_and_the_way_out():
    with pytest.raises(ClipsearchError) as caught:
        check_settings("media", own(segment_s=10), own(segment_s=5), version="media__tiny@1__1")
    exc = caught.value
    assert exc.type is ErrorType.conflict
    assert exc.message == (
        "CLIPSEARCH_VIDEO__SEGMENT_S=5 here, but collection 'media' was built with 10; "
        "set it to 10 or reindex"
    )
    assert exc.detail == {
        "collection": "media",
        "version": "media__tiny@1__1",
        "settings": [{"setting": "CLIPSEARCH_VIDEO__SEGMENT_S", "here": 5.0, "collection": 10.0}],
    }


def test_every_disagreement_is_named_and_where_says_which_process():
    recorded = own(segmenting="shots", sample_fps=2.0, max_chunks=256)
    found = disagreements(recorded, own(), served=["tiny@1"])
    assert [d.setting for d in found] == [
        "CLIPSEARCH_VIDEO__SEGMENTING",
        "CLIPSEARCH_VIDEO__SAMPLE_FPS",
        "caption chunking (max_chunks, this release's)",
    ]
    with pytest.raises(ClipsearchError) as caught:
        check_settings("media", recorded, own(), where="in indexer box-1")
    assert (
        "CLIPSEARCH_VIDEO__SEGMENTING=fixed in indexer box-1, but collection 'media' was built "
        "with shots; set it to shots or reindex" in caught.value.message
    )
    assert "CLIPSEARCH_VIDEO__SAMPLE_FPS=1 in indexer box-1" in caught.value.message
    assert "built with 256; run one release of clipsearch" in caught.value.message


def test_the_bundle_must_be_among_those_served_and_is_skipped_where_nothing_is_embedded():
    recorded = own(bundle="tiny-narrow@1")
    found = disagreements(recorded, own(), served=["tiny@1", "photo@2"])
    assert [(d.setting, d.here, d.recorded) for d in found] == [
        ("CLIPSEARCH_BUNDLE", "tiny@1+photo@2", "tiny-narrow@1")
    ]
    # Served beside the default (CLIPSEARCH_ENCODER__EXTRA_BUNDLES): agrees.
    assert disagreements(recorded, own(), served=["tiny@1", "tiny-narrow@1"]) == []
    # A writer embeds nothing: no bundle to compare.
    assert disagreements(recorded, own(bundle=None), served=None) == []
    with pytest.raises(ClipsearchError) as caught:
        check_settings("media", recorded, own(), served=["tiny@1"])
    message = caught.value.message
    assert message.startswith(
        "CLIPSEARCH_BUNDLE=tiny@1 here, but collection 'media' was built with tiny-narrow@1; "
        "serve tiny-narrow@1"
    )
    assert "CLIPSEARCH_ENCODER__EXTRA_BUNDLES" in message


def test_an_unreadable_record_is_an_error_not_a_pass():
    with pytest.raises(ClipsearchError) as caught:
        CollectionSettings.from_metadata({METADATA_KEY: {"bundle": "x", "video": "?"}})
    assert caught.value.type is ErrorType.internal
    assert "recorded settings cannot be read" in caught.value.message


def test_per_process_video_limits_are_not_part_of_the_contract():
    recorded = own()
    here = CollectionSettings.of(
        Settings(video={"max_duration_s": 60, "max_bytes": 1}),  # type: ignore[arg-type]
        bundle="tiny@1",
        max_chunks=512,
    )
    assert disagreements(recorded, here, served=["tiny@1"]) == []
