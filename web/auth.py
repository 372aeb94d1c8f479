"""Who may do what: a bearer token on every API call, a signed-in session on the pages.

People sign in to the pages with a token of their own (an operator makes one with
``farm token create --name alice --scope submit``). The page keeps only the token's id,
in a signed session cookie, and checks on every request that the token is still live,
so revoking it signs its holder out. The API takes ``Authorization: Bearer farm_…``;
its read-only (GET) routes also accept the page session, so the build page's script
can follow a log without holding the token itself.

The sign-in page, static files and hook deliveries (which prove themselves with the
hook's secret) need no token; nor, unless ``FARM_PUBLIC`` says otherwise, do
``/healthz``, ``/metrics``, ``/api/v1/openapi.json`` and status badges.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    current_app,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

from farm.errors import FarmError, Forbidden, InvalidRequest, Unauthorized
from farm.models import ApiToken
from farm.tokens import TokenService, grants
from web.forms import ActionForm, SignInForm

blueprint = Blueprint("auth", __name__)

SESSION_KEY = "token_id"
SESSION_LIFETIME = timedelta(hours=12)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
ALWAYS_PUBLIC = frozenset(
    {
        "auth.sign_in",
        "auth.sign_out",
        "static",
        "hooks.receive",  # proves itself with the hook's secret instead
    }
)
# What FARM_PUBLIC may name, and the endpoints each opens.
MAY_BE_PUBLIC = {
    "healthz": "healthz",
    "metrics": "metrics",
    "openapi": "api.openapi",
    "badges": "badges.badge",
}
# Routes whose every method needs more than the method alone says.
ENDPOINT_SCOPES = {"pages.submit_build": "submit"}


def init_auth(app: Flask, tokens: TokenService, *, public: str) -> None:
    """Check every request; ``public`` lists (comma-separated) which of
    :data:`MAY_BE_PUBLIC` need no token."""
    names = {name.strip() for name in public.split(",") if name.strip()}
    unknown = names - set(MAY_BE_PUBLIC)
    if unknown:
        raise InvalidRequest(
            f"FARM_PUBLIC names {', '.join(sorted(unknown))}; it may name "
            f"{', '.join(MAY_BE_PUBLIC)}.",
            field="FARM_PUBLIC",
        )
    app.extensions["farm.public"] = ALWAYS_PUBLIC | {
        MAY_BE_PUBLIC[name] for name in names
    }
    app.extensions["farm.tokens"] = tokens
    app.config["PERMANENT_SESSION_LIFETIME"] = SESSION_LIFETIME
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    app.before_request(check_request)
    app.register_blueprint(blueprint)


def tokens() -> TokenService:
    return current_app.extensions["farm.tokens"]


def needed_scope() -> str:
    scope = ENDPOINT_SCOPES.get(request.endpoint or "")
    if scope is not None:
        return scope
    return "read" if request.method in SAFE_METHODS else "submit"


def check_request() -> Any:
    """Run before every view: let it through, or answer 401/403 or send to sign-in."""
    endpoint = request.endpoint
    if endpoint is None or endpoint in current_app.extensions["farm.public"]:
        return None  # unknown routes fall through to the 404 handler
    needed = needed_scope()
    machine = endpoint in MAY_BE_PUBLIC.values()  # closed by FARM_PUBLIC
    if request.blueprint == "api" or machine or "Authorization" in request.headers:
        # Pages also take a bearer token, for scripts (browsers never add one).
        g.token = _api_token(needed)
        return None
    token = session_token()
    if token is None:
        return redirect(url_for("auth.sign_in", next=request.full_path.rstrip("?")))
    if not grants(token.scopes, needed):
        raise Forbidden(
            f"You are signed in as {token.name} ({', '.join(token.scopes)}); "
            f"this needs a token with the {needed!r} scope.",
            needed=needed,
        )
    g.token = token
    return None


def _api_token(needed: str) -> ApiToken:
    header = request.headers.get("Authorization", "")
    if header:
        kind, _, text = header.partition(" ")
        if kind.lower() != "bearer":
            raise Unauthorized("Send the token as 'Authorization: Bearer farm_…'.")
        return tokens().check(text.strip(), needed)
    token = session_token() if request.method in SAFE_METHODS else None
    if token is None:
        return tokens().check(None, needed)  # raises Unauthorized, saying how
    if not grants(token.scopes, needed):
        raise Forbidden(f"This needs the {needed!r} scope.", needed=needed)
    return token


def session_token() -> ApiToken | None:
    """The live token the browser signed in with, if any."""
    token_id = session.get(SESSION_KEY)
    if not isinstance(token_id, str):
        return None
    token = tokens().live(token_id)
    if token is None:
        session.clear()
    return token


def safe_next(target: str | None) -> str:
    """Where to go after signing in: only a path on this site. Browsers drop tabs
    and line breaks from a location and read a backslash as a slash, so
    ``/%09/host`` would leave the site: any such character sends the user home."""
    if (
        target
        and target.startswith("/")
        and not target.startswith("//")
        and not any(ch.isspace() or ord(ch) < 0x20 or ch in "\\\x7f" for ch in target)
        and not urlsplit(target).netloc
    ):
        return target
    return url_for("pages.list_builds")


@blueprint.route("/sign-in", methods=["GET", "POST"])
def sign_in() -> Any:
    form = SignInForm()
    if form.validate_on_submit():
        try:
            token = tokens().identify((form.token.data or "").strip())
        except FarmError as exc:
            form.token.errors = [*form.token.errors, exc.message]
        else:
            session.clear()
            session[SESSION_KEY] = token.id
            session.permanent = True
            return redirect(safe_next(request.args.get("next")), code=303)
    status = 400 if request.method == "POST" else 200
    return render_template("sign_in.html", form=form), status


@blueprint.post("/sign-out")
def sign_out() -> Any:
    if ActionForm().validate_on_submit():
        session.clear()
    return redirect(url_for("auth.sign_in"), code=303)
