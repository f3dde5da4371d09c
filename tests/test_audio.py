"""Audio decoding: formats, channels, bounded reads, exact resume, bad files."""

from __future__ import annotations

import array
from pathlib import Path

import av
import pytest

from webhook_service.audio import (
    AudioError,
    PcmFormat,
    PcmReader,
    estimated_bytes,
    probe,
    session_format,
    synth_speechlike,
)

pytestmark = pytest.mark.dbless

FORMATS = [
    ("mono16k.wav", 16000, 1),
    ("stereo44k.wav", 44100, 2),
    ("stereo48k.flac", 48000, 2),
    ("stereo44k.mp3", 44100, 2),
    ("mono48k.ogg", 48000, 1),
    ("stereo44k.m4a", 44100, 2),
    ("six22k.mkv", 22050, 6),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("formats")
    return {name: synth_speechlike(folder / name, 2.5, sample_rate=rate, channels=ch) for name, rate, ch in FORMATS}


def full_decode(path: Path, fmt: PcmFormat) -> bytes:
    with PcmReader(path, fmt) as reader:
        return b"".join(reader.chunks(3200))


@pytest.mark.parametrize("name,rate,channels", FORMATS)
def test_every_format_decodes_with_its_channels(files, name, rate, channels):
    info = probe(files[name])
    assert info.channels == channels and info.sample_rate == rate
    assert abs(info.duration_s - 2.5) < 0.1
    assert len(info.sha256) == 64
    fmt = session_format(info)
    assert fmt.channels == channels
    assert fmt.sample_rate == (rate if rate in (8000, 16000, 32000, 44100, 48000) else 16000)
    pcm = full_decode(files[name], fmt)
    assert len(pcm) % fmt.bytes_per_frame == 0
    # Within a codec frame or two of the nominal length (lossy codecs pad a little).
    assert abs(len(pcm) - estimated_bytes(info, fmt)) <= 2048 * fmt.bytes_per_frame
    assert max(abs(s) for s in array.array("h", pcm[:32000])) > 1000  # real signal, not silence


@pytest.mark.parametrize("name,rate,channels", FORMATS)
def test_resume_at_any_byte_equals_the_uninterrupted_decode(files, name, rate, channels):
    info = probe(files[name])
    for out_rate in {16000, session_format(info).sample_rate}:
        fmt = PcmFormat(out_rate, channels, 16)
        full = full_decode(files[name], fmt)
        for seconds in (0.2, 0.9, 1.77, 2.4):
            offset = int(seconds * out_rate) * fmt.bytes_per_frame
            with PcmReader(files[name], fmt, offset) as reader:
                tail = b"".join(reader.chunks(4096))
            assert tail == full[offset:], (name, out_rate, seconds)


def test_reads_are_exact_sized_and_memory_bounded(files):
    fmt = PcmFormat(16000, 2, 16)
    with PcmReader(files["stereo44k.wav"], fmt) as reader:
        sizes = []
        while True:
            chunk = reader.read(6400)
            if not chunk:
                break
            sizes.append(len(chunk))
            # The reader never holds more than the request plus one decoded codec frame.
            assert len(reader._buffer) < 6400 + 8192 * fmt.bytes_per_frame
    assert all(size == 6400 for size in sizes[:-1]) and 0 < sizes[-1] <= 6400
    assert reader.position == sum(sizes)


@pytest.mark.parametrize("bit_depth,width", [(8, 1), (16, 2), (24, 3), (32, 4)])
def test_bit_depths(files, bit_depth, width):
    fmt = PcmFormat(16000, 1, bit_depth)
    pcm = full_decode(files["mono16k.wav"], fmt)
    assert len(pcm) == int(2.5 * 16000) * width


def test_float_and_24_bit_wav_sources(tmp_path):
    for codec in ("pcm_f32le", "pcm_s24le", "pcm_s32le"):
        path = synth_speechlike(tmp_path / f"{codec}.wav", 0.5, codec=codec)
        info = probe(path)
        pcm = full_decode(path, session_format(info))
        assert len(pcm) == 8000 * 2
        assert max(abs(s) for s in array.array("h", pcm)) > 1000


def test_eight_channels_are_kept_interleaved(tmp_path):
    eight = synth_speechlike(tmp_path / "eight.wav", 0.3, channels=8)
    info = probe(eight)
    assert info.channels == 8
    fmt = session_format(info)
    pcm = full_decode(eight, fmt)
    assert len(pcm) == int(0.3 * 16000) * 16
    samples = array.array("h", pcm)
    # Each channel has its own pitch in the synthetic file: channels are not mixed down.
    assert samples[0::8] != samples[1::8]


@pytest.mark.parametrize("content,reason", [
    (b"", "empty file"),
    (b"this is not audio at all" * 100, "not a readable audio file"),
    (b"RIFF\x24\x00\x00\x00WAVEfmt ", "not a readable audio file"),
])
def test_bad_files_give_a_clear_reason(tmp_path, content, reason):
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(AudioError, match=reason):
        probe(path)


def test_missing_file(tmp_path):
    with pytest.raises(AudioError, match="no such file"):
        probe(tmp_path / "nope.wav")
    with pytest.raises(AudioError, match="no such file"):
        PcmReader(tmp_path / "nope.wav", PcmFormat())


def test_video_without_audio_is_refused(tmp_path):
    path = tmp_path / "video.mkv"
    container = av.open(str(path), mode="w")
    stream = container.add_stream("ffv1", rate=5)
    stream.width, stream.height = 16, 16
    for i in range(3):
        frame = av.VideoFrame(16, 16, "yuv420p")
        frame.pts = i
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)
    container.close()
    with pytest.raises(AudioError, match="no audio track"):
        probe(path)


def test_over_three_hours_is_refused(files):
    with pytest.raises(AudioError, match="limited to"):
        probe(files["mono16k.wav"], max_duration_s=2.0)
    with pytest.raises(AudioError, match="limited to 3 h"):
        with PcmReader(files["mono16k.wav"], PcmFormat(), max_duration_s=1.0) as reader:
            list(reader.chunks(3200))


def test_channel_mismatch_and_bad_offsets_are_refused(files):
    with pytest.raises(AudioError, match="channels"):
        PcmReader(files["stereo44k.wav"], PcmFormat(16000, 1, 16))
    with pytest.raises(ValueError):
        PcmReader(files["mono16k.wav"], PcmFormat(), start=3)


def test_chunk_sizes_respect_the_frame_limit():
    assert PcmFormat(16000, 1, 16).chunk_bytes(100) == 3200
    big = PcmFormat(48000, 8, 32)
    assert big.chunk_bytes(5000) <= 1 << 20
    assert big.chunk_bytes(5000) % big.bytes_per_frame == 0
    with pytest.raises(AudioError):
        PcmFormat(22050, 1, 16)


def test_pcm_wav_read_directly_equals_the_decoder_output(tmp_path):
    """A session-format WAV skips FFmpeg; its bytes must be what a lossless decode of the same audio gives."""
    wav = synth_speechlike(tmp_path / "same.wav", 1.3, sample_rate=16000, channels=2)
    flac = synth_speechlike(tmp_path / "same.flac", 1.3, sample_rate=16000, channels=2)
    fmt = PcmFormat(16000, 2, 16)
    with PcmReader(wav, fmt) as reader:
        assert reader._wav is not None  # the direct path
        direct = b"".join(reader.chunks(6400))
    with PcmReader(flac, fmt) as reader:
        assert reader._wav is None
        decoded = b"".join(reader.chunks(6400))
    assert direct == decoded and len(direct) == int(1.3 * 16000) * 4
    offset = 12345 * fmt.bytes_per_frame
    with PcmReader(wav, fmt, offset) as reader:
        assert b"".join(reader.chunks(4096)) == direct[offset:]
