"""``POST /hooks/<id>``: push events from GitHub and GitLab (see farm/hooks.py).

No token: a delivery proves itself with the hook's secret, which the git host signs
the body with (GitHub) or sends along (GitLab).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, jsonify, request

from farm.errors import PayloadTooLarge
from farm.hooks import HookService

blueprint = Blueprint("hooks", __name__)

# GitHub sends at most 25 MB; nothing bigger is read before its signature is checked.
MAX_EVENT_BYTES = 25 * 1024 * 1024


@blueprint.post("/hooks/<hook_id>")
def receive(hook_id: str) -> Any:
    hooks: HookService = current_app.extensions["farm.hooks"]
    if (request.content_length or 0) > MAX_EVENT_BYTES:
        raise PayloadTooLarge(f"Events are at most {MAX_EVENT_BYTES} bytes.")
    headers = dict(request.headers.items())
    status, outcome = hooks.receive(hook_id, headers, request.get_data())
    return jsonify(outcome), status
