"""``POST /hooks/<id>``: push events from GitHub and GitLab (see farm/hooks.py).

No token: a delivery proves itself with the hook's secret, which the git host signs
the body with (GitHub) or sends along (GitLab).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, jsonify, request

from farm.hooks import HookService

blueprint = Blueprint("hooks", __name__)


@blueprint.post("/hooks/<hook_id>")
def receive(hook_id: str) -> Any:
    hooks: HookService = current_app.extensions["farm.hooks"]
    headers = dict(request.headers.items())
    status, outcome = hooks.receive(hook_id, headers, request.get_data())
    return jsonify(outcome), status
