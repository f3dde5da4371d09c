"""The pure message layer: strict JSON bodies and the message key (no database)."""

from __future__ import annotations

import pytest

from webhook_service.gladia.keys import callback_key, canonical_json, message_key
from webhook_service.gladia.validation import InvalidMessage, parse_json_body


@pytest.mark.dbless
def test_message_key_is_sha256_of_canonical_json():
    m = {"b": 1, "a": "é", "c": [1, 2]}
    assert message_key(m) == message_key(dict(reversed(list(m.items()))))
    import hashlib

    assert message_key(m) == hashlib.sha256('{"a":"é","b":1,"c":[1,2]}'.encode()).hexdigest()


@pytest.mark.dbless
@pytest.mark.parametrize("raw", [b"{", b"\xff\xfe", b'{"a": NaN}', b'{"a": 1e400}', b'{"a": "\\u0000"}',
                                 b'{"a": "\\ud800"}', b"[" * 5000 + b"]" * 5000,
                                 b'{"a": ' + b"1" * 400 + b".0}", b"[" * 40 + b"]" * 40])
def test_parse_json_body_refuses_what_databases_cannot_store(raw):
    with pytest.raises(InvalidMessage):
        parse_json_body(raw)


@pytest.mark.dbless
@pytest.mark.parametrize("raw", [b"1e400", b"[1,-2.5E+999]", b'{"a":[0, 1e309]}', b'{"a":\t1e400}', b'{"a":\n-1e400}'])
def test_parse_json_body_refuses_an_overflowing_number_wherever_it_stands(raw):
    with pytest.raises(InvalidMessage, match="finite"):
        parse_json_body(raw)


@pytest.mark.dbless
@pytest.mark.parametrize("body", [
    {"id": "s-1", "event": "live.transcript", "payload": {"type": "transcript", "b": [1, "é\u2028"], "a": None}},
    {"payload": {"z": 1.5, "y": {"x": "\"quoted\""}}, "event": "live.x", "id": "ü"},
    {"id": "s-1", "event": "live.transcript", "payload": {}, "extra": True},  # not the usual envelope
])
def test_callback_key_is_the_message_key_of_the_whole_body(body):
    assert callback_key(body, canonical_json(body["payload"])) == message_key(body)


@pytest.mark.dbless
def test_parse_json_body_keeps_exponent_lookalikes_in_strings():
    # A UUID such as "...-9e123-..." is text, not a number: accepted as is.
    body = b'{"id": "4f1c2a9e-9e12-4e33-8e999-0e1234567890", "n": 1e300, "m": 2e-400}'
    assert parse_json_body(body) == {"id": "4f1c2a9e-9e12-4e33-8e999-0e1234567890", "n": 1e300, "m": 0.0}
