"""Video loading: segments, shots, damage, refusals, pooling, thumbnails — on videos made here.

The videos are generated with PyAV: 12 s at 10 fps, 160x120, four 3 s shots of solid colour
(red, green, blue, yellow) with a white square moving across. No timing is asserted.
"""

from __future__ import annotations

import io
import itertools
import struct
from pathlib import Path

import av
import numpy as np
import pytest
from av.audio.stream import AudioStream
from av.video.stream import VideoStream
from PIL import Image

from indexer.pipeline.video import (
    VideoReader,
    VideoResult,
    pool_frames,
    read_segments,
    thumbnail_jpeg,
)
from indexer.pipeline.video_segments import Segment, Segmenter, SegmentError
from service.core.errors import ClipsearchError, ErrorType

COLOURS = [(220, 30, 30), (30, 200, 30), (30, 30, 220), (230, 220, 30)]
SECONDS, FPS, SHOT_S = 12, 10, 3
WIDTH, HEIGHT = 160, 120


def pick_encoder() -> str:
    for name in ("libx264", "mpeg4", "libvpx-vp9"):
        try:
            av.codec.Codec(name, "w")
        except Exception:
            continue
        return name
    pytest.skip("this PyAV build has none of libx264, mpeg4, libvpx-vp9")


def make_video(
    path: Path, *, codec: str | None = None, audio: bool = False, faststart: bool = False
) -> bytes:
    """Write the four-shot video to ``path`` (the suffix picks the container); its bytes."""
    options = {"movflags": "+faststart"} if faststart else {}  # a second pass: needs a file
    with av.open(str(path), "w", container_options=options) as container:
        stream = container.add_stream(codec or pick_encoder(), rate=FPS)
        assert isinstance(stream, VideoStream)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        sound = container.add_stream("pcm_s16le", rate=8000) if audio else None
        assert sound is None or isinstance(sound, AudioStream)
        for i in range(SECONDS * FPS):
            image = np.empty((HEIGHT, WIDTH, 3), np.uint8)
            image[:] = COLOURS[i // (SHOT_S * FPS)]
            x = (i * 3) % (WIDTH - 20)
            image[50:70, x : x + 20] = 255  # rows 50-70 only: row 5 always shows the shot colour
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
            if sound is not None:
                tone = av.AudioFrame.from_ndarray(
                    np.zeros((1, 800), np.int16), format="s16", layout="mono"
                )
                tone.sample_rate, tone.pts = 8000, i * 800
                for packet in sound.encode(tone):
                    container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if sound is not None:
            for packet in sound.encode():
                container.mux(packet)
    return path.read_bytes()


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("videos")


@pytest.fixture(scope="module")
def mp4(videos: Path) -> bytes:
    # moov first, as a web-ready file has it: a truncated copy still has its header.
    return make_video(videos / "shots.mp4", faststart=True)


@pytest.fixture(scope="module")
def mkv(videos: Path) -> bytes:
    return make_video(videos / "shots.mkv")


def colour_of(image: Image.Image) -> int:
    pixel = np.asarray(image.getpixel((5, 5)), dtype=float)
    return int(np.argmin([np.abs(pixel - c).sum() for c in COLOURS]))


def test_fixed_mode_cuts_5_5_2_seconds(mp4: bytes) -> None:
    result = read_segments(mp4)
    assert result.errors == []
    assert result.duration_s == pytest.approx(SECONDS)
    spans = [(s.index, s.t_start, s.t_end, len(s.frames)) for s in result.segments]
    assert spans == [(0, 0.0, 5.0, 5), (1, 5.0, 10.0, 5), (2, 10.0, 12.0, 2)]
    assert result.segments[2].frame_times == [10.0, 11.0]
    for segment in result.segments:
        assert all(f.mode == "RGB" and f.size == (WIDTH, HEIGHT) for f in segment.frames)
        assert segment.keyframe is segment.frames[len(segment.frames) // 2]
    # Middle samples at 2 s, 7 s and 11 s: red, blue, yellow.
    assert [colour_of(s.keyframe) for s in result.segments] == [0, 2, 3]


def test_sampling_follows_sample_fps_and_segment_start(mkv: bytes) -> None:
    result = read_segments(mkv, sample_fps=2.0, segment_s=4.0)
    assert [s.frame_times[:3] for s in result.segments] == [
        [0.0, 0.5, 1.0], [4.0, 4.5, 5.0], [8.0, 8.5, 9.0]
    ]  # fmt: skip
    assert [len(s.frames) for s in result.segments] == [8, 8, 8]
    # Below one sample per segment, each segment still gets the frame at its start.
    sparse = read_segments(mkv, sample_fps=0.1, segment_s=4.0)
    assert [s.frame_times for s in sparse.segments] == [[0.0], [4.0], [8.0]]


@pytest.mark.parametrize("container", ["mp4", "mkv"])
def test_shot_mode_finds_the_four_shots(container: str, request: pytest.FixtureRequest) -> None:
    data = request.getfixturevalue(container)
    result = read_segments(data, mode="shots")
    assert result.errors == []
    assert len(result.segments) == 4
    for k, segment in enumerate(result.segments):
        assert abs(segment.t_start - k * SHOT_S) <= 1.0  # within one sample interval
        assert {colour_of(f) for f in segment.frames} == {k}
        assert colour_of(segment.keyframe) == k
    assert result.segments[-1].t_end == pytest.approx(SECONDS)
    assert [s.t_end for s in result.segments[:-1]] == [s.t_start for s in result.segments[1:]]


def test_shot_mode_caps_segment_length(mkv: bytes) -> None:
    result = read_segments(mkv, mode="shots", max_shot_s=2.0)
    assert all(s.t_end - s.t_start <= 2.0 for s in result.segments)
    assert {0.0, 3.0, 6.0, 9.0} <= {s.t_start for s in result.segments}


def test_path_and_bytes_agree(tmp_path: Path, mp4: bytes) -> None:
    path = tmp_path / "clip.mp4"
    path.write_bytes(mp4)
    from_path, from_bytes = read_segments(path), read_segments(mp4)
    assert [(s.t_start, s.t_end) for s in from_path.segments] == [
        (s.t_start, s.t_end) for s in from_bytes.segments
    ]


def test_a_video_with_an_audio_stream_reads_the_same(tmp_path: Path) -> None:
    result = read_segments(make_video(tmp_path / "with-audio.mkv", audio=True))
    assert [(s.t_start, s.t_end) for s in result.segments] == [(0, 5), (5, 10), (10, 12)]


@pytest.mark.parametrize("container", ["mp4", "mkv"])
def test_truncated_file_keeps_the_readable_segments(
    container: str, request: pytest.FixtureRequest
) -> None:
    data = request.getfixturevalue(container)
    result = read_segments(data[: int(len(data) * 0.6)])
    assert result.duration_s == pytest.approx(SECONDS)  # from the header
    assert result.segments, "the first segments are readable"
    assert [s.index for s in result.segments] == list(range(len(result.segments)))
    assert len(result.errors) == 1
    error = result.errors[0]
    assert error.index == len(result.segments)
    assert error.t_start == result.segments[-1].t_end
    assert error.t_end == pytest.approx(SECONDS)
    assert error.reason


def test_mp4_cut_before_its_index_is_a_corrupt_mp4(tmp_path: Path) -> None:
    data = make_video(
        tmp_path / "plain.mp4"
    )  # moov at the end: a truncated copy has no header at all
    with pytest.raises(ClipsearchError) as info:
        read_segments(data[: len(data) // 2])
    assert info.value.type is ErrorType.invalid_input
    assert "MP4" in info.value.message


@pytest.mark.parametrize("container", ["mp4", "mkv"])
def test_damage_in_the_middle_fails_only_what_it_touches(
    container: str, request: pytest.FixtureRequest
) -> None:
    data = bytearray(request.getfixturevalue(container))
    start = len(data) // 2
    data[start : start + 300] = np.random.default_rng(1).integers(0, 256, 300, np.uint8).tobytes()
    for mode in ("fixed", "shots"):
        result = read_segments(bytes(data), mode=mode)  # type: ignore[arg-type]
        assert result.errors, "the damage is reported"
        spans: list[tuple[float | None, float | None]]
        spans = [(s.t_start, s.t_end) for s in result.segments]
        spans += [(e.t_start, e.t_end) for e in result.errors]
        spans.sort(key=lambda span: span[0] or 0.0)
        # Segments and errors tile the video: nothing vanishes silently, nothing overlaps.
        assert spans[0][0] == 0.0
        assert spans[-1][1] == pytest.approx(SECONDS)
        assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))


def test_random_damage_never_escapes_as_an_ffmpeg_error(mp4: bytes, mkv: bytes) -> None:
    rng = np.random.default_rng(7)
    for trial in range(40):
        data = bytearray(mp4 if trial % 2 else mkv)
        for _ in range(int(rng.integers(1, 20))):
            data[int(rng.integers(0, len(data)))] = int(rng.integers(0, 256))
        try:
            result = read_segments(bytes(data), mode="shots" if trial % 4 < 2 else "fixed")
        except ClipsearchError:
            continue
        assert isinstance(result, VideoResult)


def png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("data", "kind", "words"),
    [
        (b"", ErrorType.invalid_input, "empty"),
        (b"this is not a video at all\n" * 40, ErrorType.unsupported_media, "not a recognised"),
        (png_bytes(), ErrorType.unsupported_media, "image, not a video"),
        (b"\x00\x00\x00\x18ftypisom" + b"\xde\xad" * 200, ErrorType.invalid_input, "corrupt"),
    ],
)
def test_files_that_are_not_videos(data: bytes, kind: ErrorType, words: str) -> None:
    with pytest.raises(ClipsearchError) as info:
        read_segments(data)
    assert info.value.type is kind
    assert words in info.value.message


def test_audio_only_file_is_named_as_such() -> None:
    buf = io.BytesIO()
    with av.open(buf, "w", format="wav") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, 8000), np.int16), format="s16", layout="mono"
        )
        frame.sample_rate = 8000
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    with pytest.raises(ClipsearchError) as info:
        read_segments(buf.getvalue())
    assert info.value.type is ErrorType.unsupported_media
    assert "audio-only" in info.value.message


def test_frame_size_is_refused_from_the_header(mp4: bytes) -> None:
    with pytest.raises(ClipsearchError) as info:
        VideoReader(mp4, max_pixels=WIDTH * HEIGHT - 1)  # opening decodes nothing
    assert info.value.type is ErrorType.payload_too_large
    assert info.value.detail["width"] == WIDTH


def huge_header_video(side: int) -> bytes:
    """A one-frame 256x256 raw video whose Matroska header then claims ``side`` x ``side``."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="matroska") as container:
        stream = container.add_stream("rawvideo", rate=1)
        stream.width, stream.height, stream.pix_fmt = 256, 256, "yuv420p"
        frame = av.VideoFrame.from_ndarray(np.zeros((256, 256, 3), np.uint8), format="rgb24")
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    data = bytearray(buf.getvalue())
    for element in (b"\xb0\x82\x01\x00", b"\xba\x82\x01\x00"):  # PixelWidth, PixelHeight = 256
        at = data.index(element)
        data[at + 2 : at + 4] = struct.pack(">H", side)
    return bytes(data)


def test_an_enormous_header_is_refused_before_any_decoding() -> None:
    with pytest.raises(ClipsearchError) as info:
        read_segments(huge_header_video(12_000))
    assert info.value.type is ErrorType.payload_too_large
    assert (info.value.detail["width"], info.value.detail["height"]) == (12_000, 12_000)
    # Past what FFmpeg itself can address, the size reads as absent: still a clear refusal.
    with pytest.raises(ClipsearchError):
        read_segments(huge_header_video(20_000))


def test_over_long_video_is_refused_from_the_header(mkv: bytes) -> None:
    with pytest.raises(ClipsearchError) as info:
        VideoReader(mkv, max_duration_s=5)
    assert info.value.type is ErrorType.payload_too_large
    assert info.value.detail["duration_s"] == pytest.approx(SECONDS)


@pytest.mark.parametrize(
    "kwargs",
    [{"mode": "scenes"}, {"sample_fps": 0}, {"segment_s": 0.01}, {"shot_threshold": 2}],
)
def test_bad_parameters_are_invalid_input(mkv: bytes, kwargs: dict[str, object]) -> None:
    with pytest.raises(ClipsearchError) as info:
        read_segments(mkv, **kwargs)  # type: ignore[arg-type]
    assert info.value.type is ErrorType.invalid_input


def red() -> Image.Image:
    return Image.new("RGB", (4, 4), (255, 0, 0))


def test_segmenter_hole_fails_every_fixed_segment_it_touches() -> None:
    from fractions import Fraction as F

    seg = Segmenter("fixed", F(5), F(1), 0.3, F(20))
    seg.fill(F(4), red)
    seg.hole(F(4), F(16), "damaged")  # touches segments 0 (4-5), 1, 2 (whole) and 3 (15-16)
    seg.fill(F(22), red)
    seg.finish(F(22), None, F(22))
    out = seg.drain()
    errors = [(e.index, e.t_start, e.t_end) for e in out if isinstance(e, SegmentError)]
    assert errors == [(0, 0.0, 5.0), (1, 5.0, 10.0), (2, 10.0, 15.0), (3, 15.0, 20.0)]
    kept = [s for s in out if isinstance(s, Segment)]
    assert [(s.index, s.t_start, s.t_end, s.frame_times) for s in kept] == [
        (4, 20.0, 22.0, [20.0, 21.0])
    ]


def test_pool_frames_is_the_renormalised_mean_of_unit_vectors() -> None:
    vectors = np.array([[3.0, 4.0], [0.0, 2.0]])
    pooled = pool_frames(vectors)
    expected = np.array([0.3, 0.9]) / np.linalg.norm([0.3, 0.9])
    np.testing.assert_allclose(pooled, expected, rtol=1e-6)
    assert pooled.dtype == np.float32
    # Scaling a frame's vector changes nothing: each frame counts once.
    np.testing.assert_allclose(pool_frames(vectors * [[10.0], [0.1]]), expected, rtol=1e-6)
    # Ranking by the pooled vector is ranking by the mean frame similarity.
    rng = np.random.default_rng(0)
    frames, query = rng.normal(size=(6, 16)), rng.normal(size=16)
    units = frames / np.linalg.norm(frames, axis=1, keepdims=True)
    norm = np.linalg.norm(units.mean(axis=0))
    assert float(pool_frames(frames) @ query) == pytest.approx((units @ query).mean() / norm)
    np.testing.assert_allclose(pool_frames(np.array([[0.0, 5.0]])), [0.0, 1.0])
    # Frames that cancel out: the middle frame stands for the segment.
    np.testing.assert_allclose(pool_frames(np.array([[1.0, 0.0], [-1.0, 0.0]])), [-1.0, 0.0])
    with pytest.raises(ValueError):
        pool_frames(np.zeros((0, 4)))


def test_thumbnail_jpeg_is_a_small_rgb_jpeg() -> None:
    with Image.open(io.BytesIO(thumbnail_jpeg(Image.new("RGB", (640, 480), (0, 128, 255))))) as t:
        assert t.format == "JPEG" and t.size == (256, 192)
    grey = Image.new("L", (100, 300))
    with Image.open(io.BytesIO(thumbnail_jpeg(grey))) as thumb:
        assert thumb.size == (85, 256) and thumb.mode == "RGB"
    assert grey.size == (100, 300)  # the caller's image is untouched


@pytest.mark.parametrize("codec", ["mpeg4", "libvpx-vp9"])
def test_other_codecs_segment_the_same(codec: str, tmp_path: Path) -> None:
    try:
        av.codec.Codec(codec, "w")
    except Exception:
        pytest.skip(f"{codec} is not in this PyAV build")
    data = make_video(tmp_path / "clip.mkv", codec=codec)
    shots = read_segments(data, mode="shots")
    assert [colour_of(s.keyframe) for s in shots.segments] == [0, 1, 2, 3]
    assert [s.t_start for s in shots.segments] == [0.0, 3.0, 6.0, 9.0]
