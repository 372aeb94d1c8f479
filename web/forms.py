"""The pages' forms: submit, sign in, buttons; CSRF tokens and errors beside fields."""

from __future__ import annotations

from collections.abc import Iterable

from flask_wtf import FlaskForm
from flask_wtf.file import FileField
from wtforms import (
    PasswordField,
    RadioField,
    SelectChoice,
    SelectField,
    StringField,
    TextAreaField,
)
from wtforms.validators import DataRequired

from farm.buildspec import redact_url
from farm.errors import InvalidRequest
from farm.redaction import secret_arg_names


class SubmitBuildForm(FlaskForm):
    """What a person fills in to start a build."""

    source = RadioField(
        "Source",
        choices=[
            SelectChoice("git", "Git repository"),
            SelectChoice("archive", "Upload a .tar.gz"),
        ],
        default="git",
    )
    git_url = StringField("Repository URL")
    git_ref = StringField("Branch, tag or commit (empty: the default branch)")
    archive = FileField("Source archive (.tar.gz)")
    context = StringField("Context folder", default=".")
    dockerfile = StringField(
        "Dockerfile (relative to the context)", default="Dockerfile"
    )
    target = StringField("Target stage (optional)")
    build_args = TextAreaField("Build args, one NAME=value per line")
    tags = StringField("Image tags, e.g. web:1.0 (optional)")
    queue = SelectField("Queue")
    priority = RadioField(
        "Priority",
        choices=[
            SelectChoice("normal", "Normal"),
            SelectChoice("urgent", "Urgent: ahead of normal builds"),
        ],
        default="normal",
    )

    def forget_secrets(self, listed: Iterable[str] = ()) -> None:
        """Before showing the form again: clear the values of secret build args
        and the credentials in the repository URL, so a refused form never
        carries a secret back to the browser."""
        lines = (self.build_args.data or "").splitlines()
        pairs = [line.partition("=") for line in lines]
        secret = set(
            secret_arg_names({n.strip(): v for n, sep, v in pairs if sep}, listed)
        )
        cleared = [
            f"{name.strip()}=" if sep and name.strip() in secret else line
            for line, (name, sep, _) in zip(lines, pairs, strict=True)
        ]
        url = self.git_url.data or ""
        stripped = redact_url(url).replace("***@", "") if "@" in url else url
        if cleared != lines or stripped != url:
            self.build_args.data = "\n".join(cleared)
            self.git_url.data = stripped
            self.form_errors.append(
                "Secret values and the repository URL's credentials were cleared; "
                "enter them again."
            )

    def show_error(self, error: InvalidRequest) -> None:
        """Put a validation error beside its field, or at the top of the form."""
        field = error.field if error.field in self._fields else None
        if field is None:
            self.form_errors.append(error.message)
        else:
            getattr(self, field).errors = [error.message]


class ActionForm(FlaskForm):
    """A button-only form (cancel, retry) that carries just the CSRF token."""


class SignInForm(FlaskForm):
    """Sign in to the pages with a farm token."""

    token = PasswordField("Token", validators=[DataRequired("Paste your farm token.")])
