"""The committed speech recordings (tests/data) and what the emulator's sphinx engine makes of them.

The WAVs were synthesized once (espeak-ng, voice en-us+klatt, 150 words/min,
resampled to 16 kHz mono) and are committed with their text; using them
needs neither espeak nor the network. :func:`sphinx_finals` runs the engine
itself on the same samples: the reference a client of the emulator must
receive, word for word (the engine is deterministic, and the emulator feeds
it the same samples however the audio was chunked, cut or resent).
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

DATA = Path(__file__).parent / "data"
RATE = 16000


def samples(name: str) -> np.ndarray:
    """One recording's int16 samples (16 kHz mono)."""
    with wave.open(str(DATA / f"{name}.wav")) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (RATE, 1, 2)
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")


def speech(*names: str) -> np.ndarray:
    """The recordings end to end (each starts and ends with silence: one utterance each)."""
    return np.concatenate([samples(name) for name in names])


def sphinx_events(pcm: np.ndarray) -> list:
    """The sphinx engine's own events for ``pcm`` (16 kHz mono), fed at once and flushed."""
    from webhook_service.emulator.engines import RecognizerParams, SphinxRecognizer

    recognizer = SphinxRecognizer(RecognizerParams(sample_rate=RATE))
    return recognizer.feed(pcm) + recognizer.flush()


def sphinx_finals(pcm: np.ndarray) -> list[str]:
    """The text of each final utterance the sphinx engine makes of ``pcm``."""
    return [" ".join(word.word for word in event.words) for event in sphinx_events(pcm) if event.kind == "final"]
