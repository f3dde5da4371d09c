"""The transcript formats, read back by subtitle parsers from PyPI (``srt``, ``webvtt-py``), not only compared
as strings: numbering, time stamps, line length, cue duration, speaker labels."""

from __future__ import annotations

import html
import io
import json
from datetime import timedelta

import pytest
import srt
import webvtt

from webhook_service.transcripts.cues import MAX_CUE_S, MAX_LINE_CHARS, Line, timed_words
from webhook_service.transcripts.formats import Header, clock, write_csv, write_json, write_srt, write_txt, write_vtt

pytestmark = pytest.mark.dbless

LONG_TEXT = ("Thank you for calling the support line of the municipal water company, my name is Alexandra "
             "and I will be glad to help you with your question about the invoice you received last month")


def words_of(text: str, start: float, per_word: float) -> tuple:
    out, at = [], start
    for word in text.split():
        out.append({"word": " " + word, "start": round(at, 3), "end": round(at + per_word * 0.9, 3), "confidence": 1})
        at += per_word
    return timed_words(out)


def session(two_channels: bool = False) -> tuple[Header, list[Line]]:
    lines = [
        Line(start=0.5, end=0.5 + 0.4 * len(LONG_TEXT.split()), channel=0, text=" " + LONG_TEXT,
             words=words_of(LONG_TEXT, 0.5, 0.4), utterance_id="00_1"),
        # Without word timings: the span is shared among the words.
        Line(start=3700.25, end=3720.0, channel=1 if two_channels else 0,
             text=" Yes <exactly> & no --> more, and a word that is muchlongerthanfortytwocharactersinonepiece ok",
             utterance_id="01_1"),
        Line(start=3725.0, end=3725.0, channel=0, text=" Hm.", utterance_id="00_2"),
    ]
    header = Header(job_id="job-1", gladia_id="g-1", source_path="/calls/c.wav",
                    channels=(0, 1) if two_channels else (0,), audio_duration_s=3730.0)
    return header, lines


def render(writer, two_channels=False) -> str:
    header, lines = session(two_channels)
    return "".join(writer(header, iter(lines)))


def test_clock_uses_each_formats_separator():
    assert clock(3723.0456, ",") == "01:02:03,046"
    assert clock(3723.0456, ".") == "01:02:03.046"
    assert clock(0, ",") == "00:00:00,000"
    assert clock(-1, ".") == "00:00:00.000"


def test_srt_parses_with_numbered_short_cues():
    text = render(write_srt)
    cues = list(srt.parse(text))
    assert [c.index for c in cues] == list(range(1, len(cues) + 1))
    assert len(cues) > 4  # the long utterance was cut
    assert "-->" in text and ",000 --> " not in text.splitlines()[1][:8]
    assert text.splitlines()[1] == "00:00:00,500 --> " + text.splitlines()[1][17:]
    for cue in cues:
        assert cue.end > cue.start
        assert cue.end - cue.start <= timedelta(seconds=MAX_CUE_S)
        lines = cue.content.split("\n")
        assert 1 <= len(lines) <= 2
        assert all(len(line) <= MAX_LINE_CHARS or " " not in line for line in lines), lines
    # Every word survives, in order.
    spoken = " ".join(c.content.replace("\n", " ") for c in cues)
    assert spoken.startswith("Thank you for calling") and spoken.endswith("Hm.")
    assert "muchlongerthanfortytwocharactersinonepiece" in spoken
    # The cue of the word-less utterance starts at the utterance and is capped at 7 s.
    later = [c for c in cues if c.start >= timedelta(seconds=3700)]
    assert later[0].start == timedelta(seconds=3700.25)
    assert srt.compose(cues, reindex=False) == text  # the file is exactly what the format says


def test_srt_names_channels_only_when_there_are_several():
    assert "Channel" not in render(write_srt)
    cues = list(srt.parse(render(write_srt, two_channels=True)))
    assert cues[0].content.startswith("Channel 0: Thank")
    assert any(c.content.startswith("Channel 1: Yes") for c in cues)
    assert all(len(line) <= MAX_LINE_CHARS or " " not in line for c in cues for line in c.content.split("\n"))


def test_vtt_parses_with_dot_milliseconds_voice_spans_and_escaped_text():
    text = render(write_vtt, two_channels=True)
    assert text.startswith("WEBVTT\n\n")
    assert "00:00:00.500 --> " in text and ",500" not in text
    captions = webvtt.from_buffer(io.StringIO(text)).captions
    assert len(captions) == len(list(srt.parse(render(write_srt, two_channels=True))))
    assert captions[0].start == "00:00:00.500"
    assert captions[0].voice == "Channel 0"
    assert "&lt;exactly&gt; &amp; no --&gt;" in text  # cue text is markup in WebVTT
    for caption in captions:
        start, end = (t.hours * 3600 + t.minutes * 60 + t.seconds + t.milliseconds / 1000
                      for t in (caption.start_time, caption.end_time))
        assert 0 < end - start <= MAX_CUE_S
        shown = html.unescape(caption.text)  # what a player displays
        assert all(len(line) <= MAX_LINE_CHARS or " " not in line for line in shown.split("\n"))


def test_txt_json_and_csv():
    txt = render(write_txt, two_channels=True).splitlines()
    assert txt[0].startswith("[00:00:00] Channel 0: Thank you for calling")
    assert txt[1].startswith("[01:01:40] Channel 1: Yes <exactly>")
    data = json.loads(render(write_json))
    assert data["job_id"] == "job-1" and data["channels"] == [0]
    assert [u["id"] for u in data["utterances"]] == ["00_1", "01_1", "00_2"]
    assert data["utterances"][0]["words"][0] == {"word": "Thank", "start": 0.5, "end": 0.86}
    assert json.loads("".join(write_json(Header("j", None, "x", ()), iter([]))))["utterances"] == []
    rows = render(write_csv).splitlines()
    assert rows[0] == "start,end,channel,language,confidence,text"
    assert rows[3] == "3725.000,3725.000,0,,,Hm."


def test_unusable_word_timings_fall_back_to_the_text():
    assert timed_words([{"word": "a", "start": "x", "end": 1}]) == ()
    assert timed_words("nope") == ()
    assert timed_words([{"word": " a", "start": 1, "end": 0.5}]) == (("a", 1.0, 1.0),)


def test_cues_of_overlapping_channels_come_in_start_time_order():
    long_words = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen"
    lines = [Line(start=0.0, end=12.0, channel=0, text=long_words, words=words_of(long_words, 0.0, 0.8)),
             Line(start=3.0, end=4.0, channel=1, text="overlap"),
             Line(start=9.0, end=9.5, channel=1, text="again")]
    header = Header("j", "g", "x", channels=(0, 1))
    for writer in (write_srt, write_vtt):
        text = "".join(writer(header, iter(lines)))
        starts = [c.start for c in srt.parse(text)] if writer is write_srt else \
            [c.start for c in webvtt.from_buffer(io.StringIO(text)).captions]
        assert starts == sorted(starts) and len(starts) >= 4
    contents = [c.content for c in srt.parse("".join(write_srt(header, iter(lines))))]
    # Channel 0's second cue (from 7.2 s) comes between channel 1's two utterances (3 s and 9 s).
    assert [c.split(":")[0] for c in contents] == ["Channel 0", "Channel 1", "Channel 0", "Channel 1"]
    assert contents[1] == "Channel 1: overlap" and contents[3] == "Channel 1: again"
