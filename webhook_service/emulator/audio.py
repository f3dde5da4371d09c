"""Audio as a live session receives it: header stripping, decoding, spooling.

Clients may send raw samples or a WAV file's bytes (header first); both are
accepted. Samples are decoded to 16-bit integers per channel, which both
engines take. Received audio goes to a file on disk as it arrives, so an
hour-long session costs a file, not an hour of audio in RAM.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np

MAX_WAV_HEADER = 64 * 1024


def _ulaw_table() -> np.ndarray:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    sign = u & 0x80
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    sample = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(sign != 0, -sample, sample).astype(np.int16)


def _alaw_table() -> np.ndarray:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    sign = a & 0x80
    exponent = (a >> 4) & 0x07
    mantissa = a & 0x0F
    sample = np.where(exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0))
    return np.where(sign != 0, sample, -sample).astype(np.int16)


ULAW_TO_LINEAR = _ulaw_table()
ALAW_TO_LINEAR = _alaw_table()


def _nearest_code(table: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """Encode by nearest table value (exact inverse of decoding; used to build test audio)."""
    order = np.argsort(table)
    sorted_values = table[order].astype(np.int32)
    idx = np.clip(np.searchsorted(sorted_values, samples.astype(np.int32)), 1, len(sorted_values) - 1)
    left, right = sorted_values[idx - 1], sorted_values[idx]
    idx = np.where(np.abs(samples - left) <= np.abs(samples - right), idx - 1, idx)
    return order[idx].astype(np.uint8)


def encode_ulaw(samples: np.ndarray) -> bytes:
    return _nearest_code(ULAW_TO_LINEAR, samples).tobytes()


def encode_alaw(samples: np.ndarray) -> bytes:
    return _nearest_code(ALAW_TO_LINEAR, samples).tobytes()


def sample_width(encoding: str, bit_depth: int) -> int:
    """Bytes per sample. A-law and mu-law are always 8-bit, whatever ``bit_depth`` says."""
    return 1 if encoding in ("wav/alaw", "wav/ulaw") else bit_depth // 8


def encode_pcm16(samples: np.ndarray, encoding: str, bit_depth: int) -> bytes:
    """Convert int16 samples (already interleaved) to the session's wire format."""
    samples = np.asarray(samples, dtype=np.int16)
    if encoding == "wav/alaw":
        return encode_alaw(samples)
    if encoding == "wav/ulaw":
        return encode_ulaw(samples)
    wide = samples.astype(np.int32)
    if bit_depth == 8:
        return ((wide >> 8) + 128).astype(np.uint8).tobytes()
    if bit_depth == 16:
        return samples.astype("<i2").tobytes()
    if bit_depth == 24:
        as32 = (wide << 8).astype("<i4").view(np.uint8).reshape(-1, 4)
        return as32[:, :3].tobytes()
    return (wide << 16).astype("<i4").tobytes()


class SampleDecoder:
    """Bytes of interleaved samples -> int16 array per channel, keeping partial frames for the next call."""

    def __init__(self, encoding: str, bit_depth: int, channels: int):
        self.encoding = encoding
        self.bit_depth = bit_depth
        self.channels = channels
        self.width = sample_width(encoding, bit_depth)
        self.frame_bytes = self.width * channels
        self._rest = b""

    def decode(self, data: bytes) -> np.ndarray:
        """Return shape (channels, n) int16."""
        data = self._rest + data
        usable = len(data) - len(data) % self.frame_bytes
        self._rest = data[usable:]
        raw = np.frombuffer(data[:usable], dtype=np.uint8)
        if self.encoding == "wav/ulaw":
            samples = ULAW_TO_LINEAR[raw]
        elif self.encoding == "wav/alaw":
            samples = ALAW_TO_LINEAR[raw]
        elif self.bit_depth == 8:
            samples = ((raw.astype(np.int16) - 128) << 8).astype(np.int16)
        elif self.bit_depth == 16:
            samples = raw.view("<i2").astype(np.int16)
        elif self.bit_depth == 24:
            triples = raw.reshape(-1, 3).astype(np.int32)
            value = triples[:, 0] | (triples[:, 1] << 8) | (triples[:, 2] << 16)
            value = np.where(value & 0x800000, value - 0x1000000, value)
            samples = (value >> 8).astype(np.int16)
        else:
            samples = (raw.view("<i4") >> 16).astype(np.int16)
        return samples.reshape(-1, self.channels).T


class WavHeaderStripper:
    """Removes a RIFF/WAVE header at the very start of a session's byte stream.

    The header may arrive split over several chunks; bytes are held back until
    it is complete (or until it is clear there is none).
    """

    def __init__(self) -> None:
        self._pending = b""
        self.done = False
        self.header_bytes = 0

    def feed(self, data: bytes) -> bytes:
        if self.done:
            return data
        buf = self._pending + data
        if len(buf) < 12:
            if b"RIFF"[:len(buf)] == buf[:4]:
                self._pending = buf
                return b""
            self.done = True
            self._pending = b""
            return buf
        if buf[:4] != b"RIFF" or buf[8:12] != b"WAVE":
            self.done = True
            self._pending = b""
            return buf
        pos = 12
        while pos + 8 <= len(buf):
            chunk_id = buf[pos:pos + 4]
            size = struct.unpack("<I", buf[pos + 4:pos + 8])[0]
            if chunk_id == b"data":
                self.header_bytes = pos + 8
                self.done = True
                self._pending = b""
                return buf[pos + 8:]
            pos += 8 + size + (size & 1)
        if len(buf) > MAX_WAV_HEADER:  # not a sane header: treat everything as samples
            self.done = True
            self._pending = b""
            return buf
        self._pending = buf
        return b""

    def flush(self) -> bytes:
        """Bytes held back when the stream ends mid-header (they are audio after all)."""
        rest, self._pending, self.done = self._pending, b"", True
        return rest


WAV_FORMAT_TAGS = {"wav/pcm": 1, "wav/alaw": 6, "wav/ulaw": 7}


def wav_header(encoding: str, bit_depth: int, sample_rate: int, channels: int, data_bytes: int) -> bytes:
    width = sample_width(encoding, bit_depth)
    block = width * channels
    return (b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, WAV_FORMAT_TAGS[encoding], channels, sample_rate,
                                    sample_rate * block, block, width * 8)
            + b"data" + struct.pack("<I", data_bytes))


class Spool:
    """Append-only file of a session's received samples (header stripped).

    Recognition reads back from this file rather than from an in-memory
    queue, so audio that arrives faster than it is recognized waits on disk.
    """

    def __init__(self, path: Path):
        self.path = path
        self._file: BinaryIO | None = None  # opened on the first write: idle sessions hold no file
        self._reader: int | None = None
        self._closed = False
        self.size = 0

    def write(self, data: bytes) -> None:
        if self._closed:
            raise ValueError("spool is closed")
        if self._file is None:
            self._file = open(self.path, "ab", buffering=0)
        self._file.write(data)
        self.size += len(data)

    def read(self, offset: int, size: int) -> bytes:
        """``size`` bytes from ``offset`` (already written; safe from another thread)."""
        if self._reader is None:
            self._reader = os.open(self.path, os.O_RDONLY)
        return os.pread(self._reader, size, offset)

    def close(self) -> None:
        self._closed = True
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._reader is not None:
            os.close(self._reader)
            self._reader = None

    def iter_wav(self, encoding: str, bit_depth: int, sample_rate: int, channels: int,
                 block: int = 256 * 1024) -> Iterator[bytes]:
        """The spooled audio as a WAV file, read in blocks (whole frames only)."""
        frame = sample_width(encoding, bit_depth) * channels
        size = self.size - self.size % frame
        yield wav_header(encoding, bit_depth, sample_rate, channels, size)
        if not size:
            return
        with open(self.path, "rb") as handle:
            left = size
            while left > 0:
                data = handle.read(min(block, left))
                if not data:
                    break
                left -= len(data)
                yield data

    def remove(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)
