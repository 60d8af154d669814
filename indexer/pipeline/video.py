"""Video loading for the indexer: header checks, frame sampling, segments, pooling, thumbnails.

As in ``service/core/bundle/preprocess.py`` nothing trusts the input: only listed demuxers may
open a file (FFmpeg's playlist and concat demuxers would fetch other URLs and files), sources are
read through Python file objects so no FFmpeg protocol is involved, frame size and duration are
checked from the header before any frame is decoded, and every FFmpeg failure becomes a
:class:`ClipsearchError` (the whole file) or a :class:`SegmentError` (part of it).

A sample at time ``s`` is the frame a player shows at ``s`` (the last whose pts <= ``s``); times
are exact fractions from pts x time_base, never frame counts. Every frame is decoded (inter-frame
codecs need it) but only sampled ones become RGB. ``skip_frame`` stays off: skipping
non-reference frames would move samples off their grid, and decoding alone runs far above the
20x real-time target (``loadtests/bench/video.py``).

Damage is reported, not fatal. After a packet fails to decode, frames are not trusted until the
next keyframe (decoders conceal errors with plausible garbage), and that span fails the segments
it touches; a file that ends early (truncated, or a demuxer error) keeps its complete segments
and reports the rest with its time range.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, BinaryIO

import av
import av.error
from av.stream import Disposition
from PIL import Image

from indexer.pipeline.video_segments import MAX_SHOT_S as MAX_SHOT_S
from indexer.pipeline.video_segments import SHOT_THRESHOLD as SHOT_THRESHOLD
from indexer.pipeline.video_segments import Mode as Mode
from indexer.pipeline.video_segments import Segment as Segment
from indexer.pipeline.video_segments import Segmenter, check_params
from indexer.pipeline.video_segments import SegmentError as SegmentError
from indexer.pipeline.video_segments import pool_frames as pool_frames
from indexer.pipeline.video_segments import thumbnail_jpeg as thumbnail_jpeg
from service.core.bundle.preprocess import sniff_format
from service.core.errors import ClipsearchError, invalid, too_large, unsupported

MAX_DURATION_S = 4 * 3600.0
MAX_PIXELS = 7680 * 4320  # 8K UHD
MAX_BAD_PACKETS = 64  # a run this long of undecodable packets: the rest is not video
_CONCEALED_GAP = Fraction(1, 2)  # shorter losses are bridged with the last frame, as players do

_DEMUXERS = (
    "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,mpegts,mpeg,flv,ogg,asf,ivf"
    ",wav,mp3,flac,aac"  # audio demuxers only so that an audio file is named as such
)
_CONTAINERS = "MP4/MOV, Matroska/WebM, AVI, MPEG-TS/PS, FLV, Ogg, ASF"
_SIGNATURES = (
    (4, b"ftyp", "MP4/MOV"),
    (0, b"\x1aE\xdf\xa3", "Matroska/WebM"),
    (8, b"AVI ", "AVI"),
    (0, b"FLV", "FLV"),
    (0, b"OggS", "Ogg"),
    (0, b"\x00\x00\x01\xba", "MPEG-PS"),
    (0, b"\x30\x26\xb2\x75", "ASF"),
)
# PyAV raises FFmpegError subclasses, but also plain ValueError/OSError/UnicodeDecodeError.
_AV_ERRORS = (av.error.FFmpegError, ValueError, OSError, RuntimeError)


@dataclass(frozen=True, eq=False)
class VideoResult:
    duration_s: float
    segments: list[Segment]
    errors: list[SegmentError]


@dataclass(frozen=True)
class VideoInfo:
    format: str
    codec: str
    width: int
    height: int
    duration_s: float | None  # from the header; None when the container does not say


def read_segments(
    source: bytes | Path,
    *,
    segment_s: float = 5.0,
    sample_fps: float = 1.0,
    mode: Mode = "fixed",
    max_duration_s: float = MAX_DURATION_S,
    max_pixels: int = MAX_PIXELS,
    shot_threshold: float = SHOT_THRESHOLD,
    max_shot_s: float = MAX_SHOT_S,
) -> VideoResult:
    """All segments of a video, in memory; for long videos iterate ``VideoReader.segments``.

    ``mode="fixed"``: segments of ``segment_s`` (the last shorter), each sampled from its own
    start at ``sample_fps``. ``mode="shots"``: samples on one ``sample_fps`` grid; a segment
    starts where consecutive samples differ by more than ``shot_threshold`` or the segment
    reached ``max_shot_s``. Raises ClipsearchError for a file that cannot be used at all.
    """
    with VideoReader(source, max_duration_s=max_duration_s, max_pixels=max_pixels) as video:
        items = list(
            video.segments(
                segment_s=segment_s,
                sample_fps=sample_fps,
                mode=mode,
                shot_threshold=shot_threshold,
                max_shot_s=max_shot_s,
            )
        )
        segments = [item for item in items if isinstance(item, Segment)]
        errors = [item for item in items if isinstance(item, SegmentError)]
        return VideoResult(video.info.duration_s or video.decoded_end_s, segments, errors)


@dataclass
class _Frame:
    t: Fraction
    end: Fraction
    frame: av.VideoFrame | None
    _image: Image.Image | None = None

    def image(self) -> Image.Image:
        """RGB, converted on first use: the only RGB conversion a frame ever gets."""
        if self._image is None:
            assert self.frame is not None
            try:
                self._image, self.frame = self.frame.to_image(), None
            except _AV_ERRORS as exc:  # a pixel format swscale cannot convert
                raise unsupported(f"cannot convert video frames to RGB: {exc}") from exc
        return self._image


class VideoReader:
    """An opened video whose header passed the checks; a context manager.

    Raises ClipsearchError: ``invalid_input`` (empty, corrupt header), ``unsupported_media``
    (not a video container we accept, audio only, no decoder), ``payload_too_large`` (frame
    size over ``max_pixels`` or duration over ``max_duration_s``, both from the header).
    A path that cannot be read raises the OSError, as any file read does.
    """

    def __init__(
        self,
        source: bytes | Path,
        *,
        max_duration_s: float = MAX_DURATION_S,
        max_pixels: int = MAX_PIXELS,
    ) -> None:
        self._max_duration = Fraction(max_duration_s)
        self._max_pixels = max_pixels
        self._stop_reason: str | None = None
        self.decoded_end_s = 0.0
        # A Python file object keeps FFmpeg's protocols (and their URL handling) out of the
        # way. The reader owns it until close(), hence no context manager.
        fh: BinaryIO = (
            io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")  # noqa: SIM115
        )
        self._file = fh
        head = fh.read(512)
        fh.seek(0)
        if not head:
            fh.close()
            raise invalid("empty file")
        try:
            self._container = av.open(
                fh, "r", container_options={"format_whitelist": _DEMUXERS}, metadata_errors="ignore"
            )
        except Exception as exc:  # PyAV raises many types; all mean "cannot open this"
            fh.close()
            raise _open_error(head, exc) from exc
        try:
            self.info = self._check_header()
        except BaseException:
            self.close()
            raise

    def _check_header(self) -> VideoInfo:
        container = self._container
        fmt = container.format.name
        streams = [
            s for s in container.streams.video if not s.disposition & Disposition.attached_pic
        ]  # cover art in an audio file is a one-picture "video" stream
        if not streams:
            if container.streams.audio:
                raise unsupported("audio-only file: it has no video stream", {"format": fmt})
            raise unsupported("the file has no video stream", {"format": fmt})
        stream = self._stream = streams[0]
        ctx = stream.codec_context
        if ctx is None:
            raise unsupported("no decoder for this video codec", {"format": fmt})
        width, height = ctx.width, ctx.height
        if width <= 0 or height <= 0 or stream.time_base is None:
            # FFmpeg zeroes a frame size too big for it to decode at all (over ~16k x 16k).
            raise invalid("corrupt video header: no usable frame size", {"format": fmt})
        if width * height > self._max_pixels:
            raise too_large(
                f"video frames are {width}x{height} = {width * height} pixels;"
                f" the limit is {self._max_pixels}",
                {"width": width, "height": height, "max_pixels": self._max_pixels},
            )
        self._total: Fraction | None = None
        if stream.duration:
            self._total = stream.duration * stream.time_base
        elif container.duration:
            self._total = Fraction(container.duration, av.time_base)
        if self._total is not None and self._total > self._max_duration:
            raise too_large(
                f"video is {float(self._total):.0f} s long;"
                f" the limit is {float(self._max_duration):.0f} s",
                {"duration_s": float(self._total), "max_duration_s": float(self._max_duration)},
            )
        # The decoder itself then refuses an in-stream size change past the limit.
        ctx.options = {"max_pixels": str(self._max_pixels)}
        stream.thread_type = "AUTO"
        total = None if self._total is None else float(self._total)
        return VideoInfo(fmt, ctx.name, width, height, total)

    def segments(
        self,
        *,
        segment_s: float = 5.0,
        sample_fps: float = 1.0,
        mode: Mode = "fixed",
        shot_threshold: float = SHOT_THRESHOLD,
        max_shot_s: float = MAX_SHOT_S,
    ) -> Iterator[Segment | SegmentError]:
        """Segments and errors in time order, holding one segment's frames at a time."""
        check_params(segment_s, sample_fps, mode, shot_threshold, max_shot_s)
        step = 1 / Fraction(sample_fps).limit_denominator(1000)
        segment = Fraction(segment_s).limit_denominator(1000)
        seg = Segmenter(mode, segment, step, shot_threshold, Fraction(max_shot_s))
        held: _Frame | None = None
        gap_start: Fraction | None = None  # start of the span nothing trustworthy came from
        gap_reason = ""
        for event in self._decode():
            if isinstance(event, str):
                if gap_start is None:
                    gap_start = held.end if held else Fraction(0)
                gap_reason = event
                continue
            if gap_start is not None and event.t - gap_start > _CONCEALED_GAP:
                if held:
                    seg.fill(gap_start, held.image)
                seg.hole(gap_start, event.t, gap_reason)
            gap_start = None
            seg.fill(event.t, (held or event).image)
            held = event
            yield from seg.drain()
        end = held.end if held else Fraction(0)
        if held:
            seg.fill(end, held.image)
        failure = self._stop_reason
        if failure is None and gap_start is not None:
            failure = f"undecodable from {float(gap_start):.2f} s to the end ({gap_reason})"
        if (
            failure is None
            and self._total is not None
            and self._total - end > max(step, Fraction(1))
        ):
            total = float(self._total)
            failure = f"the video data ends at {float(end):.2f} s of {total:.2f} s (truncated)"
        seg.finish(end, failure, self._total)
        self.decoded_end_s = float(end)
        yield from seg.drain()

    def _decode(self) -> Iterator[_Frame | str]:
        """Frames in presentation order; a string stands for a frame that cannot be trusted."""
        stream = self._stream
        tb = stream.time_base or Fraction(1)
        origin = stream.start_time
        rate = stream.average_rate
        default_duration = 1 / Fraction(rate) if rate else Fraction(1, 25)
        last: Fraction | None = None
        bad_run, poisoned = 0, ""
        packets = self._container.demux(stream)
        while True:
            flushing = False
            try:
                packet = next(packets, None)
                if packet is None:
                    return  # PyAV's last packets were the empty ones that flush the decoder
            except _AV_ERRORS as exc:
                self._stop_reason = f"the file cannot be read past here: {exc}"
                packet, flushing = None, True
            try:
                frames = (
                    packet.decode() if packet is not None else stream.codec_context.decode(None)
                )
            except _AV_ERRORS as exc:
                bad_run += 1
                if flushing or bad_run > MAX_BAD_PACKETS:
                    self._stop_reason = self._stop_reason or f"undecodable video data: {exc}"
                    return
                poisoned = f"undecodable packet: {exc}"
                yield poisoned
                continue
            bad_run = 0
            for frame in frames:
                if not isinstance(frame, av.VideoFrame) or frame.pts is None:
                    continue  # no time to place it at; the containers we accept give one
                origin = frame.pts if origin is None else origin
                t = (frame.pts - origin) * tb
                if t < 0 or (last is not None and t <= last):
                    continue  # pre-roll or out of order: never on screen
                if t > self._max_duration or frame.width * frame.height > self._max_pixels:
                    self._stop_reason = f"the frame at {float(t):.2f} s is past the limits"
                    return
                last = t
                if frame.key_frame:
                    poisoned = ""  # a keyframe references nothing: the damage ends here
                if poisoned or frame.is_corrupt:
                    yield poisoned or "corrupt frame"
                    continue
                duration = frame.duration * tb if frame.duration else default_duration
                yield _Frame(t, t + duration, frame)
            if flushing:
                return

    def close(self) -> None:
        container = getattr(self, "_container", None)
        if container is not None:
            container.close()
        self._file.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _sniff_video(head: bytes) -> str | None:
    for offset, magic, name in _SIGNATURES:
        if head[offset : offset + len(magic)] == magic:
            return name
    if len(head) > 188 and head[0] == head[188] == 0x47:
        return "MPEG-TS"
    return None


def _open_error(head: bytes, exc: Exception) -> ClipsearchError:
    detail: dict[str, Any] = {"ffmpeg": str(exc)}
    container = _sniff_video(head)
    if container:
        # The signature says what it is, so this is damage, not an unknown format.
        return invalid(f"corrupt or truncated {container} file: its header cannot be read", detail)
    image = sniff_format(head)
    if image:
        return unsupported(f"this is a {image} image, not a video", detail)
    return unsupported(f"not a recognised video format; accepted: {_CONTAINERS}", detail)
