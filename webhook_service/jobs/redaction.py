"""What of a stored row never leaves the service through the API or the dashboard.

Two credentials can sit in what the store holds: the job's callback token (in
``callback_config.url``, which Gladia echoes in ``request_params``, and in any
text that quotes that URL) and the token of Gladia's WebSocket URL. Rows
written before the store stripped them still hold them, so every answer is
cleaned on the way out, whatever the row's age.
"""

from __future__ import annotations

from typing import Any, Optional

from ..tokens import redact_tokens


def public_copy(value: Any) -> Any:
    """A JSON value without any ``callback_config.url`` and with every token in its strings redacted."""
    if isinstance(value, dict):
        return _public_dict(value)
    if isinstance(value, list):
        return [public_copy(item) for item in value]
    if isinstance(value, str):
        return redact_tokens(value)
    return value


def _public_dict(value: dict[Any, Any]) -> dict[Any, Any]:
    cleaned: dict[Any, Any] = {}
    for key, item in value.items():
        if key == "callback_config" and isinstance(item, dict):
            item = {k: v for k, v in item.items() if k != "url"}
        cleaned[key] = public_copy(item)
    return cleaned


def public_text(text: Optional[str]) -> Optional[str]:
    """An error message or a note, with every token redacted."""
    return redact_tokens(text) if text else text
