"""An SVG status badge per project (and git ref), for READMEs and dashboards.

``/badge/<project>.svg?ref=main`` shows the last ended build of that project (and
ref): passing, failing or cancelled, or "no builds". It needs no token, so it can be
embedded anywhere; it tells only that one word.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, render_template, request

from farm.builds import BuildService
from farm.models import FINAL_STATES

blueprint = Blueprint("badges", __name__)

# Verdana 11px averages about 6.5 px a character; a little room either side.
CHAR_PIXELS = 6.5
PADDING_PIXELS = 12
LOOKS = {
    "succeeded": ("passing", "#2e7d32"),
    "failed": ("failing", "#c62828"),
    "cancelled": ("cancelled", "#757575"),
    None: ("no builds", "#9e9e9e"),
}


@blueprint.get("/badge/<path:project>.svg")
def badge(project: str) -> Any:
    builds: BuildService = current_app.extensions["farm"]
    ref = request.args.get("ref") or None
    last = builds.ledger.recent(
        states=sorted(FINAL_STATES), project=project, ref=ref, limit=1
    )
    word, colour = LOOKS[last[0].state if last else None]
    label = "build" if ref is None else f"build {ref}"[:40]
    left = round(len(label) * CHAR_PIXELS + PADDING_PIXELS)
    right = round(len(word) * CHAR_PIXELS + PADDING_PIXELS)
    svg = render_template(
        "badge.svg", label=label, word=word, colour=colour, left=left, right=right
    )
    return Response(
        svg,
        mimetype="image/svg+xml",
        headers={"Cache-Control": "no-cache, max-age=0"},
    )
