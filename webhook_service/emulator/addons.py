"""Deterministic, offline stand-ins for Gladia's audio-intelligence add-ons.

They are not meant to be good at their job; they are meant to produce the
documented shapes from the transcript, the same output for the same input,
without any model or network, so clients can be tested end to end.
"""

from __future__ import annotations

import copy
import re
from collections import Counter

GLOSSARY = {
    "fr": {"hello": "bonjour", "world": "monde", "yes": "oui", "no": "non", "thank": "merci", "you": "vous",
           "the": "le", "and": "et", "is": "est", "good": "bon", "morning": "matin", "today": "aujourd'hui",
           "weather": "temps", "meeting": "réunion", "we": "nous", "i": "je"},
    "es": {"hello": "hola", "world": "mundo", "yes": "sí", "no": "no", "thank": "gracias", "you": "usted",
           "the": "el", "and": "y", "is": "es", "good": "bueno", "morning": "mañana", "today": "hoy",
           "weather": "tiempo", "meeting": "reunión", "we": "nosotros", "i": "yo"},
    "de": {"hello": "hallo", "world": "welt", "yes": "ja", "no": "nein", "thank": "danke", "you": "sie",
           "the": "die", "and": "und", "is": "ist", "good": "gut", "morning": "morgen", "today": "heute",
           "weather": "wetter", "meeting": "besprechung", "we": "wir", "i": "ich"},
}

POSITIVE = {"good", "great", "excellent", "happy", "love", "nice", "thanks", "thank", "wonderful", "best",
            "fine", "glad", "pleased", "perfect", "beautiful", "amazing", "like", "enjoy", "yes"}
NEGATIVE = {"bad", "terrible", "sad", "hate", "awful", "worst", "angry", "poor", "problem", "wrong", "sorry",
            "fail", "failed", "broken", "never", "no", "not", "difficult"}
EMOTIONS = {"positive": "joy", "negative": "sadness", "neutral": "neutral", "mixed": "confusion"}

WEEKDAYS = {"monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"}
MONTHS = {"january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
          "november", "december"}
NUMBERS = {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
           "twelve", "twenty", "thirty", "forty", "fifty", "hundred", "thousand", "million"}
PLACES = {"paris", "london", "berlin", "madrid", "york", "tokyo", "europe", "america", "france", "england",
          "germany", "spain", "china", "india", "africa"}
STOPWORDS = {"the", "a", "an", "and", "or", "of", "to", "in", "on", "at", "is", "it", "that", "this", "was",
             "for", "with", "as", "be", "are", "we", "i", "you", "he", "she", "they", "but", "so", "from", "by",
             "have", "has", "had", "not", "do", "does", "my", "your", "our", "their", "his", "her", "its", "will",
             "would", "can", "could", "there", "what", "which", "who", "all", "if", "then", "than", "them"}

_WORD_RE = re.compile(r"[a-z']+")


def _norm(word: str) -> str:
    return word.strip().lower().strip(".,!?;:\"'")


def translate_utterance(utterance: dict, target: str) -> dict:
    """Word-by-word glossary translation (unknown words kept), timings unchanged."""
    glossary = GLOSSARY.get(target, {})
    out = copy.deepcopy(utterance)
    for word in out["words"]:
        lead = " " if word["word"].startswith(" ") else ""
        key = _norm(word["word"])
        word["word"] = lead + glossary.get(key, key if glossary else word["word"].strip())
    out["text"] = "".join(w["word"] for w in out["words"]) if out["words"] else ""
    out["language"] = target
    return out


def named_entities(utterance: dict) -> list[dict]:
    """Weekdays and months -> DATE, number words or digits -> NUMBER (runs joined), places -> LOCATION."""
    results: list[dict] = []
    run: list[dict] = []

    def close_run() -> None:
        if run:
            results.append({"entity_type": "NUMBER", "text": " ".join(_norm(w["word"]) for w in run),
                            "start": run[0]["start"], "end": run[-1]["end"]})
            run.clear()

    for word in utterance["words"]:
        key = _norm(word["word"])
        if key in NUMBERS or key.isdigit():
            run.append(word)
            continue
        close_run()
        kind = "DATE" if key in WEEKDAYS or key in MONTHS else "LOCATION" if key in PLACES else None
        if kind:
            results.append({"entity_type": kind, "text": key, "start": word["start"], "end": word["end"]})
    close_run()
    return results


def sentiment(utterance: dict) -> list[dict]:
    words = [_norm(w["word"]) for w in utterance["words"]]
    pos = sum(w in POSITIVE for w in words)
    neg = sum(w in NEGATIVE for w in words)
    label = "mixed" if pos and neg else "positive" if pos else "negative" if neg else "neutral"
    return [{"sentiment": label, "emotion": EMOTIONS[label], "text": utterance["text"],
             "start": utterance["start"], "end": utterance["end"], "channel": utterance["channel"]}]


def _keywords(text: str, limit: int = 5) -> list[str]:
    counts = Counter(w for w in _WORD_RE.findall(text.lower()) if w not in STOPWORDS and len(w) > 2)
    return [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]]


def summarize(utterances: list[dict], kind: str) -> str:
    texts = [u["text"].strip() for u in utterances if u["text"].strip()]
    if not texts:
        return ""
    if kind == "bullet_points":
        return "\n".join(f"- {t}" for t in texts[:5])
    if kind == "concise":
        return texts[0]
    keywords = _keywords(" ".join(texts))
    topic = f" Main topics: {', '.join(keywords)}." if keywords else ""
    return " ".join(texts[:3]) + topic


def chapters(utterances: list[dict], span_s: float = 60.0) -> list[dict]:
    """One chapter per ``span_s`` of audio that holds speech."""
    groups: dict[int, list[dict]] = {}
    for u in sorted(utterances, key=lambda u: (u["start"], u["channel"])):
        groups.setdefault(int(u["start"] // span_s), []).append(u)
    result = []
    for _, group in sorted(groups.items()):
        text = " ".join(u["text"].strip() for u in group).strip()
        keywords = _keywords(text)
        headline = " ".join(keywords[:3]).capitalize() or "Untitled"
        result.append({
            "headline": headline,
            "gist": keywords[0] if keywords else "",
            "keywords": keywords,
            "start": group[0]["start"],
            "end": max(u["end"] for u in group),
            "sentences": [{"sentence": u["text"].strip(), "start": u["start"], "end": u["end"],
                           "words": u["words"]} for u in group],
            "text": text,
            "abstractive_summary": group[0]["text"].strip(),
            "extractive_summary": group[0]["text"].strip(),
            "summary": group[0]["text"].strip(),
        })
    return result


def addon_block(results, exec_time: float = 0.0) -> dict:
    """The ``{success, is_empty, exec_time, error, results}`` wrapper of GET /v2/live/:id."""
    empty = not results
    return {"success": True, "is_empty": empty, "exec_time": round(exec_time, 3), "error": None,
            "results": results}
