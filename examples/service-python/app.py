"""The example app's text statistics service: word counts over HTTP, with Flask."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from flask import Flask, jsonify, request

WORD = re.compile(r"[\w']+")
TOP_WORDS = 5


def text_stats(text: str) -> dict[str, Any]:
    """Count the words of ``text`` and name the most frequent ones."""
    counts = Counter(word.lower() for word in WORD.findall(text))
    return {"words": sum(counts.values()), "top": counts.most_common(TOP_WORDS)}


def create_app() -> Flask:
    """Build the Flask app; gunicorn calls this (see gunicorn.conf.py)."""
    app = Flask(__name__)

    @app.get("/healthz")
    def health() -> Any:
        return jsonify(status="ok")

    @app.post("/api/stats")
    def stats() -> Any:
        body = request.get_json(silent=True) or {}
        if not isinstance(body.get("text"), str):
            error = {"code": "invalid_request", "message": 'Send JSON with a "text".'}
            return jsonify(error=error), 400
        return jsonify(text_stats(body["text"]))

    return app
