"""Subtitle cues from utterances: short lines, short cues, timed from the words where Gladia gave them.

Subtitle conventions (the BBC's and Netflix's guidelines agree): at most two lines of about 42
characters, and a cue short enough to read, here at most :data:`MAX_CUE_S` seconds. An utterance is cut
between words: with word timings each cue starts at its first word and ends at its last; without them
the utterance's span is shared among its words in proportion to their length.
"""

from __future__ import annotations

import heapq
import textwrap
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Optional

MAX_LINE_CHARS = 42
MAX_LINES = 2
MAX_CUE_S = 7.0
MIN_CUE_S = 0.001  # a cue ends after it starts, even for a word Gladia timed as instantaneous


@dataclass(frozen=True)
class Line:
    """One final utterance as the formats need it (a row of ``utterances``, detached from the ORM)."""

    start: float
    end: float
    channel: int
    text: str
    words: tuple[tuple[str, float, float], ...] = ()
    language: Optional[str] = None
    confidence: Optional[float] = None
    utterance_id: str = ""


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    channel: int
    lines: tuple[str, ...]


def timed_words(raw: Any) -> tuple[tuple[str, float, float], ...]:
    """Gladia's ``words`` (``[{"word", "start", "end", ...}]``) as (word, start, end); () when unusable."""
    out = []
    if not isinstance(raw, list):
        return ()
    for item in raw:
        if not isinstance(item, dict):
            return ()
        word, start, end = item.get("word"), item.get("start"), item.get("end")
        if not isinstance(word, str) or not isinstance(start, (int, float)) or not isinstance(end, (int, float)):
            return ()
        if word.strip():
            out.append((word.strip(), float(start), float(max(start, end))))
    return tuple(out)


def _spread(line: Line) -> list[tuple[str, float, float]]:
    """Words of an utterance without timings, its span shared in proportion to their length."""
    words = line.text.split()
    if not words:
        return []
    span = max(0.0, line.end - line.start)
    total = sum(len(w) + 1 for w in words)
    out, at = [], line.start
    for word in words:
        share = span * (len(word) + 1) / total
        out.append((word, at, at + share))
        at += share
    return out


def wrap(text: str, width: int = MAX_LINE_CHARS) -> tuple[str, ...]:
    """Text in lines of at most ``width`` characters, cut between words (a longer word stays whole)."""
    return tuple(textwrap.wrap(text, width=width, break_long_words=False, break_on_hyphens=False)) or ("",)


def cues(line: Line, label: str = "") -> Iterator[Cue]:
    """The cues of one utterance: each at most MAX_LINES lines of MAX_LINE_CHARS and MAX_CUE_S seconds.

    ``label`` (a speaker label such as ``"Channel 1: "``) opens the first line of each cue and counts in
    its length.
    """
    words = list(line.words) if line.words else _spread(line)
    budget = MAX_LINE_CHARS * MAX_LINES
    group: list[tuple[str, float, float]] = []

    def fits(candidate: list[tuple[str, float, float]]) -> bool:
        text = label + " ".join(w for w, _, _ in candidate)
        return (len(wrap(text)) <= MAX_LINES and len(text) <= budget
                and candidate[-1][2] - candidate[0][1] <= MAX_CUE_S)

    for word in words:
        if group and not fits(group + [word]):
            yield _cue(group, line.channel, label)
            group = []
        group.append(word)
    if group:
        yield _cue(group, line.channel, label)


def _cue(group: list[tuple[str, float, float]], channel: int, label: str) -> Cue:
    start = group[0][1]
    end = min(max(group[-1][2], start + MIN_CUE_S), start + MAX_CUE_S)
    return Cue(start=start, end=end, channel=channel, lines=wrap(label + " ".join(w for w, _, _ in group)))


def all_cues(lines: Iterable[Line], labelled: bool) -> Iterator[Cue]:
    """Every cue of a session's utterances in start-time order, given the utterances by start time.

    Two channels speak at once: an utterance's later cues may start after the next utterance does, so
    cues wait in a heap until no utterance still to come can start before them (only the cues of
    overlapping utterances are ever held).
    """
    pending: list[tuple[float, int, Cue]] = []
    order = 0
    for line in lines:
        while pending and pending[0][0] <= line.start:
            yield heapq.heappop(pending)[2]
        for cue in cues(line, f"{speaker_label(line.channel)}: " if labelled else ""):
            heapq.heappush(pending, (cue.start, order, cue))
            order += 1
    while pending:
        yield heapq.heappop(pending)[2]


def speaker_label(channel: int) -> str:
    """How a channel is named to a reader: ``Channel 0``, ``Channel 1`` (the numbers `--channel` takes)."""
    return f"Channel {channel}"
