"""The server-rendered pages: build list, submit form and a build's own page."""

from __future__ import annotations

from typing import Any

from flask import (
    Blueprint,
    current_app,
    g,
    redirect,
    render_template,
    request,
    url_for,
)
from wtforms import SelectChoice

from farm.builds import BuildService, Submission, describe_build
from farm.errors import InvalidRequest
from farm.models import BuildState
from web.api import one_upload, reject_repeated_fields
from web.forms import ActionForm, SubmitBuildForm

blueprint = Blueprint("pages", __name__)

PAGE_SIZE = 50


def service() -> BuildService:
    return current_app.extensions["farm"]


def render_error(message: str, status: int) -> Any:
    return render_template("error.html", message=message, status=status), status


@blueprint.get("/")
def list_builds() -> Any:
    state = request.args.get("state", "")
    known = [s.value for s in BuildState]
    if state and state not in known:
        return render_error(
            f"There is no build state {state!r}; choose one of {', '.join(known)}.",
            400,
        )
    states = [state] if state else []
    project = request.args.get("project", "").strip()
    ref = request.args.get("ref", "").strip()
    page_arg = request.args.get("page", "1")
    # Past the millionth page there is nothing to show, and SQL offsets overflow.
    page = int(page_arg) if page_arg.isdigit() and len(page_arg) <= 6 else 1
    page = max(page, 1)
    builds = service().ledger.recent(
        states=states,
        project=project or None,
        ref=ref or None,
        limit=PAGE_SIZE + 1,
        offset=(page - 1) * PAGE_SIZE,
    )
    return render_template(
        "builds.html",
        builds=[describe_build(b) for b in builds[:PAGE_SIZE]],
        state=state,
        project=project,
        ref=ref,
        states=known,
        page=page,
        has_next=len(builds) > PAGE_SIZE,
    )


@blueprint.route("/builds/new", methods=["GET", "POST"])
def submit_build() -> Any:
    form = SubmitBuildForm()
    form.queue.choices = [SelectChoice(name) for name in service().queues]
    if not form.validate_on_submit():
        if request.method == "GET":
            return render_template("submit.html", form=form)
        form.forget_secrets(service().secret_args)
        return render_template("submit.html", form=form), 400
    try:
        submission = submit_form(form)
    except InvalidRequest as exc:
        form.show_error(exc)
        form.forget_secrets(service().secret_args)
        return render_template("submit.html", form=form), 400
    build_id = submission.build.id
    return redirect(url_for("pages.show_build", build_id=build_id), code=303)


def submit_form(form: SubmitBuildForm) -> Submission:
    reject_repeated_fields(request.form)  # the form's fields take the first
    options = {
        "context": form.context.data,
        "dockerfile": form.dockerfile.data,
        "target": form.target.data,
        "build_args": [
            line for line in (form.build_args.data or "").splitlines() if line.strip()
        ],
        "tags": form.tags.data or "",
        "queue": form.queue.data,
        "priority": form.priority.data,
    }
    if form.source.data == "archive":
        one_upload("archive")  # the form's field takes the first of several
        upload = form.archive.data
        if upload is None or not upload.filename:
            raise InvalidRequest("Choose a .tar.gz file to upload.", field="archive")
        return service().submit_archive(
            options,
            content=upload.read(),
            filename=upload.filename,
            submitted_by=g.token.name,
        )
    return service().submit_git(
        options,
        url=form.git_url.data,
        ref=form.git_ref.data,
        submitted_by=g.token.name,
    )


@blueprint.get("/builds/<build_id>")
def show_build(build_id: str) -> Any:
    record = service().ledger.get(build_id)
    build = {**describe_build(record), "waiting": service().waiting(record)}
    return render_template("build.html", build=build, form=ActionForm())


@blueprint.post("/builds/<build_id>/cancel")
def cancel_build(build_id: str) -> Any:
    if not ActionForm().validate_on_submit():
        return render_error("The form expired; reload the page and try again.", 400)
    service().cancel(build_id)
    return redirect(url_for("pages.show_build", build_id=build_id), code=303)


@blueprint.post("/builds/<build_id>/retry")
def retry_build(build_id: str) -> Any:
    if not ActionForm().validate_on_submit():
        return render_error("The form expired; reload the page and try again.", 400)
    submission = service().retry(build_id, submitted_by=g.token.name)
    return redirect(url_for("pages.show_build", build_id=submission.build.id), code=303)


@blueprint.get("/queues")
def show_queues() -> Any:
    """What waits in each queue, and what each node is building."""
    return render_template(
        "queues.html", queues=service().queue_overview(), nodes=service().nodes()
    )


@blueprint.get("/groups/<group_id>")
def show_group(group_id: str) -> Any:
    """A group: its state as a whole, each image's build, and its smoke test."""
    groups = current_app.extensions["farm.groups"]
    return render_template("group.html", group=groups.describe(group_id))
