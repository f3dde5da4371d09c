"""A session's transcript in the formats people use: plain text, SubRip (SRT), WebVTT, JSON and CSV.

Each writer is a generator of text chunks over an iterator of :class:`.cues.Line`, so a transcript of
any length is written with bounded memory: one utterance at a time, from a database cursor to a file or
an HTTP response.

SRT: numbered cues from 1, ``HH:MM:SS,mmm --> HH:MM:SS,mmm``, a blank line after each cue. WebVTT: the
``WEBVTT`` header, ``HH:MM:SS.mmm --> HH:MM:SS.mmm``, channels as voice spans (``<v Channel 1>``). In
both, a session with more than one channel names the channel of each cue, and cues are in start-time
order even when channels overlap.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Optional

from .cues import Line, all_cues, speaker_label

FORMATS = ("txt", "srt", "vtt", "json", "csv")
MEDIA_TYPES = {
    "txt": "text/plain; charset=utf-8",
    "srt": "application/x-subrip; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
}


@dataclass(frozen=True)
class Header:
    """What a transcript says about its session, besides the utterances."""

    job_id: str
    gladia_id: Optional[str]
    source_path: str
    channels: tuple[int, ...]  # the channels of the utterances written (after any --channel filter)
    audio_duration_s: Optional[float] = None

    @property
    def labelled(self) -> bool:
        return len(self.channels) > 1


def clock(seconds: float, separator: str) -> str:
    """``HH:MM:SS<sep>mmm``: SRT separates milliseconds with ',', WebVTT with '.'."""
    millis = max(0, int(round(seconds * 1000)))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def write_txt(header: Header, lines: Iterable[Line]) -> Iterator[str]:
    """One line per utterance: ``[HH:MM:SS] text``, with the channel when there are several."""
    for line in lines:
        label = f"{speaker_label(line.channel)}: " if header.labelled else ""
        yield f"[{clock(line.start, '.')[:8]}] {label}{' '.join(line.text.split())}\n"


def write_srt(header: Header, lines: Iterable[Line]) -> Iterator[str]:
    for number, cue in enumerate(all_cues(lines, header.labelled), start=1):
        yield f"{number}\n{clock(cue.start, ',')} --> {clock(cue.end, ',')}\n" + "\n".join(cue.lines) + "\n\n"


def write_vtt(header: Header, lines: Iterable[Line]) -> Iterator[str]:
    yield "WEBVTT\n\n"
    for cue in all_cues(lines, labelled=False):  # the channel goes in a voice span, not in the text
        text = "\n".join(_escape_vtt(part) for part in cue.lines)
        if header.labelled:
            text = f"<v {speaker_label(cue.channel)}>{text}"
        yield f"{clock(cue.start, '.')} --> {clock(cue.end, '.')}\n{text}\n\n"


def _escape_vtt(text: str) -> str:
    """Cue text is markup in WebVTT: '&', '<' and '>' are written as entities; '-->' cannot appear."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def write_json(header: Header, lines: Iterable[Line]) -> Iterator[str]:
    """``{"job_id", "gladia_id", "source_path", "channels", "utterances": [...]}``, streamed."""
    head = {"job_id": header.job_id, "gladia_id": header.gladia_id, "source_path": header.source_path,
            "audio_duration_s": header.audio_duration_s, "channels": list(header.channels)}
    yield json.dumps(head, ensure_ascii=False)[:-1] + ', "utterances": ['
    first = True
    for line in lines:
        item: dict[str, Any] = {"id": line.utterance_id, "channel": line.channel, "start": line.start,
                                "end": line.end, "text": line.text.strip(), "language": line.language,
                                "confidence": line.confidence,
                                "words": [{"word": w, "start": s, "end": e} for w, s, e in line.words]}
        yield ("" if first else ", ") + json.dumps(item, ensure_ascii=False)
        first = False
    yield "]}\n"


CSV_COLUMNS = ("start", "end", "channel", "language", "confidence", "text")


def write_csv(header: Header, lines: Iterable[Line]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for line in lines:
        writer.writerow((f"{line.start:.3f}", f"{line.end:.3f}", line.channel, line.language or "",
                         "" if line.confidence is None else line.confidence, " ".join(line.text.split())))
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()


WRITERS: dict[str, Callable[[Header, Iterable[Line]], Iterator[str]]] = {
    "txt": write_txt, "srt": write_srt, "vtt": write_vtt, "json": write_json, "csv": write_csv,
}
