"""Any audio file -> raw PCM in the session's format, incrementally.

PyAV (FFmpeg) decodes every common container and codec (wav with 8/16/24/32-bit
integer or float samples, flac, mp3, ogg/vorbis/opus, m4a/aac, the audio track
of a video) and resamples to what the Gladia session was opened with. Three
properties matter to the streamer:

* **bounded memory**: :class:`PcmReader` decodes one codec frame at a time and
  keeps at most what the caller asked for plus one frame, whatever the file's
  length (a 3-hour 48 kHz stereo file is 2 GB of PCM);
* **channels kept** (1 to 8, interleaved): stereo call recordings are
  transcribed per channel by Gladia;
* **resume by seeking**: a reader can start at any acknowledged byte offset.
  It seeks the container a little before that point, feeds the resampler from
  an input sample whose position lines up with the output sample grid, and
  drops the pre-roll, so the bytes it yields are the same as a decode from the
  start would have yielded at that offset (tests check this byte for byte).

Bad input raises :class:`AudioError` whose message is meant to be recorded on
the job as is.
"""

from __future__ import annotations

import array
import hashlib
import math
import os
import re
import sys
import wave
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Optional

import av

from .gladia.session_schema import BIT_DEPTHS, SAMPLE_RATES  # the PCM formats a live session accepts

# Gladia terminates a live session after 3 hours.
MAX_DURATION_S = 3 * 3600
MAX_CHANNELS = 8
# How much audio before a resume point is decoded and thrown away, so that the
# decoder and the resampler are in the same state as in an uninterrupted decode.
RESUME_PREROLL_S = 0.5
# Container seeks land on a packet at or before the target; ask a bit earlier.
SEEK_MARGIN_S = 1.0

# FFmpeg's default channel layout for each channel count (what the session gets
# when the file's own layout is unnamed).
_LAYOUTS = {1: "mono", 2: "stereo", 3: "2.1", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}
# Codecs whose decoded timestamps are sample-exact after a seek (checked by tests).
_EXACT_SEEK_CODECS = {"flac", "mp3", "mp3float", "opus", "vorbis", "alac", "wavpack"}
_SAMPLE_FORMATS = {8: "u8", 16: "s16", 24: "s32", 32: "s32"}


class AudioError(Exception):
    """The file cannot be streamed; ``str(exc)`` is the reason recorded on the job."""


@dataclass(frozen=True)
class PcmFormat:
    """The raw audio format of a live session (Gladia's ``wav/pcm`` encoding)."""

    sample_rate: int = 16000
    channels: int = 1
    bit_depth: int = 16

    def __post_init__(self) -> None:
        if self.sample_rate not in SAMPLE_RATES:
            raise AudioError(f"sample rate {self.sample_rate} is not one of {SAMPLE_RATES}")
        if not 1 <= self.channels <= MAX_CHANNELS:
            raise AudioError(f"{self.channels} channels: Gladia accepts 1 to {MAX_CHANNELS}")
        if self.bit_depth not in BIT_DEPTHS:
            raise AudioError(f"bit depth {self.bit_depth} is not one of {BIT_DEPTHS}")

    @property
    def bytes_per_frame(self) -> int:
        """Bytes of one sample for every channel (the unit no chunk may split)."""
        return self.channels * self.bit_depth // 8

    @property
    def bytes_per_second(self) -> int:
        return self.sample_rate * self.bytes_per_frame

    def chunk_bytes(self, chunk_ms: int, limit: int = 1 << 20) -> int:
        """Bytes in a chunk of ``chunk_ms``, whole frames, at most ``limit`` (Gladia's 1 MiB frame cap)."""
        frames = max(1, self.sample_rate * chunk_ms // 1000)
        frames = min(frames, limit // self.bytes_per_frame)
        return frames * self.bytes_per_frame

    def seconds(self, nbytes: int) -> float:
        return nbytes / self.bytes_per_second


@dataclass(frozen=True)
class AudioInfo:
    """What submit learns about a file before any session exists."""

    path: str
    size: int
    sha256: str
    duration_s: float
    channels: int
    sample_rate: int
    codec: str
    container: str


def _open(path: str | os.PathLike) -> tuple["av.container.InputContainer", "av.audio.stream.AudioStream"]:
    path = str(path)
    if not os.path.isfile(path):
        raise AudioError(f"{path}: no such file")
    if os.path.getsize(path) == 0:
        raise AudioError(f"{path}: empty file")
    try:
        container = av.open(path, mode="r")
    except (av.FFmpegError, OSError, UnicodeDecodeError, ValueError) as exc:
        if type(exc).__name__ in _DAMAGED:
            raise AudioError(f"{path}: not a readable audio file: corrupt, truncated or not audio "
                             f"({_reason(exc)})") from None
        raise AudioError(f"{path}: not a readable audio file ({_reason(exc)})") from None
    audio = [s for s in container.streams if s.type == "audio"]
    if not audio:
        container.close()
        raise AudioError(f"{path}: the file has no audio track")
    return container, audio[0]


def _reason(exc: BaseException) -> str:
    """FFmpeg's own words: without PyAV's ``[Errno N]`` prefix and the path it repeats."""
    text = (getattr(exc, "strerror", None) or str(exc)).strip() or type(exc).__name__
    text = re.sub(r"^\[Errno -?\d+\]\s*", "", text.splitlines()[0])
    text = re.sub(r":\s*'[^']*'$", "", text)
    return text[:200]


# FFmpeg errors that mean the bytes are not (or no longer) a whole audio file.
_DAMAGED = ("InvalidDataError", "EOFError", "PatchWelcomeError")


def _channels(stream) -> int:
    layout = stream.codec_context.layout
    count = len(layout.channels) if layout is not None else 0
    return count or int(getattr(stream.codec_context, "channels", 0) or 0)


def _duration(container, stream) -> Optional[float]:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def sha256_file(path: str | os.PathLike, block: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for piece in iter(lambda: fh.read(block), b""):
            digest.update(piece)
    return digest.hexdigest()


def probe(path: str | os.PathLike, *, max_duration_s: float = MAX_DURATION_S, with_sha256: bool = True) -> AudioInfo:
    """Check that ``path`` is streamable and describe it, without decoding it all.

    The first audio frame is decoded (a header that parses over garbage data
    is caught here); the duration comes from the container and is exact for
    PCM/FLAC, approximate for lossy formats. When a container does not know
    its duration the file is decoded once to measure it, still frame by frame.
    """
    container, stream = _open(path)
    try:
        channels = _channels(stream)
        if not 1 <= channels <= MAX_CHANNELS:
            raise AudioError(f"{path}: {channels} channels; Gladia accepts 1 to {MAX_CHANNELS}")
        rate = stream.codec_context.sample_rate or stream.sample_rate
        if not rate:
            raise AudioError(f"{path}: unknown sample rate")
        duration = _duration(container, stream)
        first = None
        samples = 0
        try:
            for frame in container.decode(stream):
                if first is None:
                    first = frame
                    if duration is not None:
                        break
                samples += frame.samples
                if samples > (max_duration_s + 1) * rate:
                    break
        except av.FFmpegError as exc:
            raise AudioError(f"{path}: cannot decode audio ({_reason(exc)})") from None
        if first is None:
            raise AudioError(f"{path}: no audio in the file (empty audio track)")
        if duration is None:
            duration = samples / rate
        if duration <= 0:
            raise AudioError(f"{path}: no audio in the file (zero duration)")
        if duration > max_duration_s:
            raise AudioError(
                f"{path}: {duration / 3600:.2f} h of audio; a live session is limited to {max_duration_s / 3600:g} h"
            )
        codec = stream.codec_context.name
        fmt = container.format.name
    finally:
        container.close()
    return AudioInfo(
        path=str(path),
        size=os.path.getsize(path),
        sha256=sha256_file(path) if with_sha256 else "",
        duration_s=round(duration, 6),
        channels=channels,
        sample_rate=int(rate),
        codec=codec,
        container=fmt,
    )


def session_format(info: AudioInfo, sample_rate: Optional[int] = None, bit_depth: int = 16) -> PcmFormat:
    """The session format for a file: its channels, and the file's rate when Gladia accepts it.

    Keeping the source rate avoids a lossy resampling step; files at other
    rates go to 16 kHz, Gladia's default and what its models run at.
    """
    if sample_rate is None:
        sample_rate = info.sample_rate if info.sample_rate in SAMPLE_RATES else 16000
    return PcmFormat(sample_rate=sample_rate, channels=info.channels, bit_depth=bit_depth)


def estimated_bytes(info: AudioInfo, fmt: PcmFormat) -> int:
    """PCM bytes the file should decode to (exact for PCM/FLAC; the streamer corrects it at the end)."""
    return int(round(info.duration_s * fmt.sample_rate)) * fmt.bytes_per_frame


class PcmReader:
    """Decode a file into PCM bytes of ``fmt``, from byte ``start`` on, one codec frame at a time.

    ``read(n)`` returns exactly ``n`` bytes except at the end of the audio.
    Memory held: the requested bytes plus one decoded frame (tens of ms).
    """

    def __init__(self, path: str | os.PathLike, fmt: PcmFormat, start: int = 0,
                 *, max_duration_s: float = MAX_DURATION_S):
        if start < 0 or start % fmt.bytes_per_frame:
            raise ValueError(f"start offset {start} is not a whole number of {fmt.bytes_per_frame}-byte frames")
        self.path = str(path)
        self.fmt = fmt
        self.position = start  # bytes of output already returned (or skipped), session-relative
        self._max_bytes = int(max_duration_s * fmt.bytes_per_second)
        self._buffer = bytearray()
        self._eof = False
        self._container = None
        self._wav = _matching_wav(self.path, fmt)
        if self._wav is not None:
            # PCM WAV already in the session format: read the samples as they are, no decoder at all.
            self._wav.setpos(min(start // fmt.bytes_per_frame, self._wav.getnframes()))
            return
        self._container, self._stream = _open(path)
        channels = _channels(self._stream)
        if channels != fmt.channels:
            self.close()
            raise AudioError(f"{self.path}: has {channels} channels, the session expects {fmt.channels}")
        self._layout = self._stream.codec_context.layout
        layout_name = self._layout.name if self._layout is not None and len(self._layout.channels) == channels else ""
        if not layout_name or layout_name.endswith("channels") or layout_name == "unknown":
            layout_name = _LAYOUTS[channels]
        self._resampler = av.AudioResampler(
            format=_SAMPLE_FORMATS[fmt.bit_depth], layout=layout_name, rate=fmt.sample_rate
        )
        self._in_rate = self._stream.codec_context.sample_rate or fmt.sample_rate
        self._frames: Iterator = iter(())
        self._skip = 0  # output bytes still to drop before ``position``
        self._passthrough: Optional[bool] = None
        try:
            self._start_at(start)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ setup

    def _start_at(self, start: int) -> None:
        target = start // self.fmt.bytes_per_frame  # output frame index to resume at
        out_rate, in_rate = self.fmt.sample_rate, self._in_rate
        g = math.gcd(out_rate, in_rate)
        step_in, step_out = in_rate // g, out_rate // g
        preroll = int(RESUME_PREROLL_S * out_rate)
        m = max(0, (target - preroll) // step_out)
        if m == 0 or not self._seekable():
            self._frames = self._decoded()
            self._skip = start
            return
        in_index, out_index = m * step_in, m * step_out
        seek_s = max(0.0, in_index / in_rate - SEEK_MARGIN_S)
        tb = self._stream.time_base
        try:
            self._container.seek(int(seek_s / tb) + (self._stream.start_time or 0), stream=self._stream,
                                 backward=True, any_frame=False)
        except av.FFmpegError:
            self._restart_from_zero(start)
            return
        frames = self._decoded()
        for frame in frames:
            if frame.pts is None:
                self._restart_from_zero(start)
                return
            first = int(round((frame.pts - (self._stream.start_time or 0)) * frame.time_base * in_rate))
            if first > in_index:  # the seek went past the point: cannot line up, decode from zero
                self._restart_from_zero(start)
                return
            if first + frame.samples <= in_index:
                continue
            trimmed = _trim_front(frame, in_index - first)
            self._frames = _chain_one(trimmed, frames)
            self._skip = start - out_index * self.fmt.bytes_per_frame
            return
        # Seeked to the end: the resume point is past the audio.
        self._restart_from_zero(start)

    def _seekable(self) -> bool:
        """Whether a seek can be lined up with the output sample grid exactly.

        That needs timestamps that count input samples exactly (a time base
        of 1/1000 s, as in Matroska, cannot) and a codec without priming
        samples hidden by an edit list (AAC in MP4). Other files resume by
        decoding from the start and dropping bytes: slower, equally exact and
        equally bounded in memory.
        """
        tb = self._stream.time_base
        if tb is None or tb.denominator % self._in_rate:
            return False
        codec = self._stream.codec_context.name
        return codec.startswith("pcm_") or codec in _EXACT_SEEK_CODECS

    def _restart_from_zero(self, start: int) -> None:
        self._container.close()
        self._container, self._stream = _open(self.path)
        self._resampler = av.AudioResampler(
            format=self._resampler.format.name, layout=self._resampler.layout.name, rate=self.fmt.sample_rate
        )
        self._frames = self._decoded()
        self._skip = start

    def _decoded(self) -> Iterator:
        try:
            for packet in self._container.demux(self._stream):
                for frame in packet.decode():
                    yield frame
        except av.FFmpegError as exc:
            raise AudioError(f"{self.path}: cannot decode audio ({_reason(exc)})") from None

    # ---------------------------------------------------------------- reading

    def _is_session_format(self, frame) -> bool:
        """Whether decoded frames can be used as they are; decided on the first frame of the file."""
        if self._passthrough is None:
            self._passthrough = (
                self.fmt.bit_depth != 24 and frame.format.name == _SAMPLE_FORMATS[self.fmt.bit_depth]
                and frame.sample_rate == self.fmt.sample_rate and len(frame.layout.channels) == self.fmt.channels)
        return self._passthrough

    def _pull(self) -> bool:
        """Decode one more codec frame into the buffer; False at the end of the audio."""
        if self._eof:
            return False
        frame = next(self._frames, None)
        if frame is not None and self._is_session_format(frame):
            # Already in the session's format (e.g. 16 kHz 16-bit WAV): no resampler call at all,
            # which is most of the CPU a stream costs.
            out = [frame]
        else:
            if frame is not None:
                frame.pts = None  # the resampler keeps its own timeline; seeks must not confuse it
            out = self._resampler.resample(frame)
            if frame is None:
                self._eof = True
        for piece in out:
            raw = bytes(piece.planes[0])
            if self.fmt.bit_depth == 24:
                data = _s32_to_s24(raw[: piece.samples * self.fmt.channels * 4])
            else:
                data = raw[: piece.samples * self.fmt.bytes_per_frame]
            if self._skip:
                drop = min(self._skip, len(data))
                data = data[drop:]
                self._skip -= drop
            self._buffer += data
        return True

    def read(self, n: int) -> bytes:
        if self._wav is not None:
            data = self._wav.readframes(max(1, n // self.fmt.bytes_per_frame))
        else:
            while len(self._buffer) < n and self._pull():
                pass
            data = bytes(self._buffer[:n])
            del self._buffer[:n]
        self.position += len(data)
        if self.position > self._max_bytes:
            raise AudioError(
                f"{self.path}: more than {self._max_bytes / self.fmt.bytes_per_second / 3600:g} h of audio;"
                " a live session is limited to 3 h"
            )
        return data

    def chunks(self, size: int) -> Iterator[bytes]:
        while True:
            data = self.read(size)
            if not data:
                return
            yield data

    def close(self) -> None:
        wav = getattr(self, "_wav", None)
        if wav is not None:
            wav.close()
            self._wav = None
        container = getattr(self, "_container", None)
        if container is not None:
            container.close()
            self._container = None

    def __enter__(self) -> "PcmReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _matching_wav(path: str, fmt: PcmFormat):
    """A ``wave`` reader when ``path`` is integer PCM WAV in exactly the session format, else None.

    Such a file (the usual 16 kHz mono 16-bit recording) needs no decoding:
    its samples are the bytes to send. Anything else, or a header the
    ``wave`` module cannot read, goes through FFmpeg.
    """
    if not path.lower().endswith((".wav", ".wave")):
        return None
    try:
        reader = wave.open(path, "rb")
    except (wave.Error, EOFError, OSError):
        return None
    matches = (reader.getframerate() == fmt.sample_rate and reader.getnchannels() == fmt.channels
               and reader.getsampwidth() * 8 == fmt.bit_depth and reader.getnframes() > 0
               and reader.getcomptype() == "NONE")
    if not matches:
        reader.close()
        return None
    return reader


def _chain_one(first, rest: Iterator) -> Iterator:
    yield first
    yield from rest


def _trim_front(frame, drop: int):
    """A copy of an audio frame without its first ``drop`` samples."""
    if drop <= 0:
        return frame
    keep = frame.samples - drop
    fmt = frame.format
    width = fmt.bytes
    planar = fmt.is_planar
    channels = len(frame.layout.channels)
    out = av.AudioFrame(format=fmt.name, layout=frame.layout.name, samples=keep)
    out.sample_rate = frame.sample_rate
    per_sample = width if planar else width * channels
    for src, dst in zip(frame.planes, out.planes):
        data = bytes(src)[drop * per_sample:(drop + keep) * per_sample]
        if dst.buffer_size != len(data):
            data = data + bytes(dst.buffer_size - len(data))
        dst.update(data)
    return out


def _s32_to_s24(data: bytes) -> bytes:
    """Little-endian 32-bit samples -> packed 24-bit (the top three bytes of each)."""
    out = bytearray(len(data) // 4 * 3)
    out[0::3] = data[1::4]
    out[1::3] = data[2::4]
    out[2::3] = data[3::4]
    return bytes(out)


# ------------------------------------------------------------- sample files

def synth_speechlike(path: str | os.PathLike, seconds: float, *, sample_rate: int = 16000, channels: int = 1,
                     codec: Optional[str] = None, seed: int = 1) -> Path:
    """Write a deterministic test recording: bursts of voiced sound separated by silences.

    Energy-based voice activity detection sees one utterance per burst, so the
    emulator's ``vad`` engine produces transcripts from it. Used by the tests,
    the benchmarks and the demo so that no binary audio has to be shipped.
    The codec follows the extension unless given (wav -> pcm_s16le).
    """
    path = Path(path)
    ext = path.suffix.lower().lstrip(".")
    codec = codec or {"wav": "pcm_s16le", "flac": "flac", "mp3": "libmp3lame", "ogg": "libopus",
                      "opus": "libopus", "m4a": "aac", "mp4": "aac", "mkv": "flac"}.get(ext, "pcm_s16le")
    layout = _LAYOUTS[channels]
    container = av.open(str(path), mode="w")
    try:
        stream = container.add_stream(codec, rate=sample_rate)
        stream.layout = layout
        total = int(seconds * sample_rate)
        block = 1024 if codec not in ("libopus", "opus") else 960
        state = seed & 0xFFFFFFFF
        burst, gap = int(0.9 * sample_rate), int(0.4 * sample_rate)
        pos = 0
        pts = 0
        while pos < total:
            n = min(block, total - pos)
            samples = array.array("h")
            for i in range(pos, pos + n):
                phase = i % (burst + gap)
                voiced = phase < burst
                for ch in range(channels):
                    state = (1103515245 * state + 12345) & 0x7FFFFFFF
                    noise = (state >> 16) / 32768.0 - 0.5
                    value = 0.0
                    if voiced:
                        f0 = 140.0 + 30 * ch + 40 * math.sin(2 * math.pi * 0.7 * i / sample_rate)
                        value = 0.45 * math.sin(2 * math.pi * f0 * i / sample_rate) + 0.15 * noise
                    else:
                        value = 0.002 * noise
                    samples.append(int(max(-1.0, min(1.0, value)) * 32767))
            if sys.byteorder == "big":
                samples.byteswap()
            frame = av.AudioFrame(format="s16", layout=layout, samples=n)
            frame.sample_rate = sample_rate
            raw = samples.tobytes()
            plane = frame.planes[0]
            plane.update(raw + bytes(plane.buffer_size - len(raw)))
            frame.pts = pts
            frame.time_base = Fraction(1, sample_rate)
            pts += n
            pos += n
            frames = [frame]
            for f in frames:
                for packet in stream.encode(f):
                    container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    finally:
        container.close()
    return path
