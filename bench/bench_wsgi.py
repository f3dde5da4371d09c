"""The Procfile's WSGI app plus one bare route, so the benchmark compares both on the same server."""

from __future__ import annotations

from webhook_service.wsgi import app


@app.post("/_bench/bare")
def bare():
    """Reads the body like a callback would, then answers 200 with a small JSON body."""
    from flask import jsonify, request

    request.get_data()
    return jsonify({"status": "ok"})


# Public like the callback route it is compared with (the operator gate would answer 401).
app.config["PUBLIC_ENDPOINTS"] = app.config["PUBLIC_ENDPOINTS"] | {"bare"}
