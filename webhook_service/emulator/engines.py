"""Speech recognition engines, one recognizer per audio channel.

A recognizer takes int16 samples of one channel at the session's sample rate
and reports speech boundaries and words with times in seconds from the start
of the session (absolute, as Gladia reports them). Two engines:

* ``vad``: energy detection only; each utterance gets deterministic
  placeholder words (one per ~0.4 s of speech). Costs almost nothing, for load
  tests and for tests that only care about the protocol.
* ``sphinx``: real recognition with the English model shipped in the
  pocketsphinx wheel, utterances cut by its Endpointer (WebRTC VAD). Nothing is
  downloaded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class Word:
    word: str
    start: float
    end: float
    confidence: float


@dataclass
class Event:
    """``kind`` is speech_start, speech_end, partial or final; words only for transcripts."""

    kind: str
    time: float
    words: list[Word] = field(default_factory=list)


class Recognizer(Protocol):
    def feed(self, samples: np.ndarray) -> list[Event]: ...

    def flush(self) -> list[Event]: ...


@dataclass(frozen=True)
class RecognizerParams:
    sample_rate: int
    endpointing: float = 0.05
    max_utterance_s: float = 5.0
    speech_threshold: float = 0.6


PLACEHOLDER_WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
                     "juliet", "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo",
                     "sierra", "tango", "uniform", "victor", "whiskey", "xray", "yankee", "zulu")


class VadRecognizer:
    """Energy-based utterances with placeholder words.

    Speech is a 20 ms frame louder than a threshold set by ``speech_threshold``
    (0.6 -> -35 dBFS). An utterance ends after max(endpointing, 0.2 s) of
    silence (the floor keeps 50 ms word gaps from splitting every word) or
    when it reaches ``max_utterance_s``.
    """

    FRAME_S = 0.02
    WORD_S = 0.4
    PARTIAL_EVERY_S = 0.5

    def __init__(self, params: RecognizerParams):
        self.p = params
        self.frame = max(1, int(round(params.sample_rate * self.FRAME_S)))
        self.threshold_db = -50.0 + 25.0 * params.speech_threshold
        self.hangover = max(params.endpointing, 0.2)
        self._buf = np.zeros(0, dtype=np.int16)
        self._t = 0.0  # time at the start of self._buf
        self._in_speech = False
        self._start = 0.0
        self._last_voice = 0.0
        self._next_partial = 0.0
        self._word_index = 0

    def _words(self, start: float, end: float) -> list[Word]:
        count = max(1, int(round((end - start) / self.WORD_S)))
        step = (end - start) / count
        words = []
        for i in range(count):
            name = PLACEHOLDER_WORDS[(self._word_index + i) % len(PLACEHOLDER_WORDS)]
            words.append(Word(name, round(start + i * step, 3), round(start + (i + 1) * step, 3), 1.0))
        return words

    def _close(self, end: float) -> list[Event]:
        words = self._words(self._start, end)
        self._word_index += len(words)
        self._in_speech = False
        return [Event("final", end, words), Event("speech_end", end)]

    def feed(self, samples: np.ndarray) -> list[Event]:
        events: list[Event] = []
        buf = np.concatenate([self._buf, samples.astype(np.int16)]) if len(self._buf) else samples
        n = len(buf) // self.frame
        rate = self.p.sample_rate
        if n:
            frames = buf[: n * self.frame].astype(np.float32).reshape(n, self.frame)
            rms = np.sqrt(np.mean(frames * frames, axis=1)) / 32768.0
            db = 20.0 * np.log10(np.maximum(rms, 1e-9))
            for i, level in enumerate(db):
                t0 = self._t + i * self.frame / rate
                t1 = t0 + self.frame / rate
                voiced = level > self.threshold_db
                if not self._in_speech:
                    if voiced:
                        self._in_speech = True
                        self._start = round(t0, 3)
                        self._last_voice = t1
                        self._next_partial = t0 + self.PARTIAL_EVERY_S
                        events.append(Event("speech_start", self._start))
                    continue
                if voiced:
                    self._last_voice = t1
                if t1 - self._last_voice >= self.hangover:
                    events += self._close(round(self._last_voice, 3))
                elif t1 - self._start >= self.p.max_utterance_s:
                    events += self._close(round(t1, 3))
                elif t1 >= self._next_partial:
                    self._next_partial += self.PARTIAL_EVERY_S
                    events.append(Event("partial", t1, self._words(self._start, round(self._last_voice, 3))))
            self._t += n * self.frame / rate
        self._buf = buf[n * self.frame:].copy()
        return events

    def flush(self) -> list[Event]:
        if self._in_speech:
            return self._close(round(self._last_voice, 3))
        return []


class SphinxRecognizer:
    """pocketsphinx 5 with its bundled en-us model, endpointed by its WebRTC-VAD Endpointer.

    Audio is resampled to 16 kHz (the model's rate). Word times from the
    decoder are in 10 ms frames from the start of the utterance; the
    utterance's start time in the stream is added to make them absolute.
    """

    RATE = 16000
    PARTIAL_EVERY_S = 0.5

    def __init__(self, params: RecognizerParams):
        from pocketsphinx import Decoder, Endpointer  # heavy import, only for this engine

        self.p = params
        self.decoder = Decoder(loglevel="FATAL")
        self.logmath = self.decoder.get_logmath()
        window = min(max(params.endpointing, 0.3), 1.0)
        self.ep = Endpointer(window=window, ratio=0.9, sample_rate=self.RATE)
        self.frame_bytes = self.ep.frame_bytes
        self._resampler = _Resampler(params.sample_rate, self.RATE)
        self._buf = b""
        self._in_utt = False
        self._last_partial: list[Word] = []
        self._utt_start = 0.0
        self._next_partial = 0.0
        self._stream_t = 0.0

    def _words(self, offset: float) -> list[Word]:
        words = []
        for seg in self.decoder.seg():
            text = seg.word
            if text.startswith(("<", "[")) or text in ("<s>", "</s>", "<sil>"):
                continue
            if "(" in text:  # alternate pronunciation marker: word(2)
                text = text[: text.index("(")]
            confidence = min(1.0, max(0.0, self.logmath.exp(seg.prob)))
            words.append(Word(text, round(offset + seg.start_frame / 100.0, 3),
                              round(offset + (seg.end_frame + 1) / 100.0, 3), round(confidence, 3)))
        return words

    def _start_utt(self, events: list[Event]) -> None:
        self._in_utt = True
        self._utt_start = float(self.ep.speech_start)
        self._next_partial = self._utt_start + self.PARTIAL_EVERY_S
        self.decoder.start_utt()
        events.append(Event("speech_start", round(self._utt_start, 3)))

    def _end_utt(self, end: float, events: list[Event]) -> None:
        self.decoder.end_utt()
        self._in_utt = False
        # A final must follow any partial of the same utterance (they share an id); when the
        # full-utterance search keeps no word, the last partial hypothesis stands.
        words = self._words(self._utt_start) or self._last_partial
        self._last_partial = []
        if words:
            events.append(Event("final", round(end, 3), words))
        events.append(Event("speech_end", round(end, 3)))

    def _process_frame(self, frame: bytes, events: list[Event]) -> None:
        prev_in_speech = self.ep.in_speech
        speech = self.ep.process(frame)
        self._stream_t += self.ep.frame_length
        if speech is not None:
            if not prev_in_speech and not self._in_utt:
                self._start_utt(events)
            self.decoder.process_raw(speech)
            if not self.ep.in_speech:
                self._end_utt(float(self.ep.speech_end), events)
            elif self._stream_t - self._utt_start >= self.p.max_utterance_s:
                # Force an utterance boundary; the endpointer stays in speech.
                self._end_utt(self._stream_t, events)
                self.decoder.start_utt()
                self._in_utt = True
                self._utt_start = self._stream_t
                self._next_partial = self._utt_start + self.PARTIAL_EVERY_S
                events.append(Event("speech_start", round(self._utt_start, 3)))
            elif self._stream_t >= self._next_partial:
                self._next_partial += self.PARTIAL_EVERY_S
                hyp = self.decoder.hyp()
                words = self._words(self._utt_start) if hyp is not None and hyp.hypstr else []
                if words:
                    self._last_partial = words
                    events.append(Event("partial", round(self._stream_t, 3), words))

    def feed(self, samples: np.ndarray) -> list[Event]:
        events: list[Event] = []
        self._buf += self._resampler.resample(samples)
        fb = self.frame_bytes
        usable = len(self._buf) - len(self._buf) % fb
        for pos in range(0, usable, fb):
            self._process_frame(self._buf[pos:pos + fb], events)
        self._buf = self._buf[usable:]
        return events

    def flush(self) -> list[Event]:
        events: list[Event] = []
        tail = self._buf + self._resampler.flush()
        fb = self.frame_bytes
        usable = len(tail) - len(tail) % fb
        for pos in range(0, usable, fb):
            self._process_frame(tail[pos:pos + fb], events)
        self._buf = b""
        if self.ep.in_speech:
            # The Endpointer still holds the speech of its window: end_stream hands it over. It takes
            # the last partial frame, and needs at least one sample: when the audio ended on the frame
            # grid (nothing is left over) one silent sample stands in (62.5 µs, no effect on times).
            speech = self.ep.end_stream(tail[usable:] or bytes(2))
            if speech is not None and self._in_utt:
                self.decoder.process_raw(speech)
        if self._in_utt:
            self._end_utt(float(self.ep.speech_end or self._stream_t), events)
        return events


class _Resampler:
    """Streaming resampler to 16 kHz mono int16 (libswresample via PyAV; identity at 16 kHz)."""

    def __init__(self, source_rate: int, target_rate: int):
        self.source_rate = source_rate
        self.target_rate = target_rate
        self._av = None
        if source_rate != target_rate:
            import av

            self._av = av
            self._resampler = av.AudioResampler(format="s16", layout="mono", rate=target_rate)
            self._pts = 0

    def resample(self, samples: np.ndarray) -> bytes:
        if self._av is None:
            return np.ascontiguousarray(samples, dtype="<i2").tobytes()
        if not len(samples):
            return b""
        frame = self._av.AudioFrame.from_ndarray(np.ascontiguousarray(samples, dtype=np.int16).reshape(1, -1),
                                                 format="s16", layout="mono")
        frame.sample_rate = self.source_rate
        frame.pts = self._pts
        self._pts += len(samples)
        return b"".join(out.to_ndarray().astype("<i2").tobytes() for out in self._resampler.resample(frame))

    def flush(self) -> bytes:
        if self._av is None:
            return b""
        return b"".join(out.to_ndarray().astype("<i2").tobytes() for out in self._resampler.resample(None))


def create_recognizer(engine: str, params: RecognizerParams) -> Recognizer:
    if engine == "vad":
        return VadRecognizer(params)
    if engine == "sphinx":
        return SphinxRecognizer(params)
    raise ValueError(f"unknown engine {engine!r}")


def utterance_confidence(words: list[Word]) -> float:
    if not words:
        return 0.0
    return round(math.fsum(w.confidence for w in words) / len(words), 3)
