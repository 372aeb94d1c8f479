"""Build args that hold secrets: which they are, and masking their values.

A build arg is taken for a secret when its name says so (``NPM_TOKEN``,
``DB_PASSWORD``, ``DB_PW``, ``AWS_SECRET_ACCESS_KEY``, ``SSH_KEY``, ...), its value
is a URL with a password in it, or an operator lists it in ``FARM_SECRET_ARGS``. Its
value is masked wherever the farm shows it: API answers, pages, callbacks, logs and
error messages. The build record keeps the value, since a retry builds with it
again; build args also stay in the image's own history, so a warning says to pass
secrets another way.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

MASK = "***"
# Values shorter than this are not masked: masking "1" would garble every log.
MIN_MASKED_CHARS = 4
SECRET_NAME = re.compile(
    r"(PASS(WORD|WD)?|SECRET|TOKEN|API_?KEY|PRIVATE|ACCESS_?KEY|CREDENTIAL|AUTH"
    r"|(^|_)KEYS?($|_)|(^|_)DSN($|_)|(^|_)PW($|_)|CONNECTION_?STRING)",
    re.IGNORECASE,
)
# A URL carrying a password (postgres://app:pw@db/app) is a secret whatever its name.
URL_WITH_PASSWORD = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/@\s:]*:[^/@\s]+@")


def secret_arg_names(
    build_args: Mapping[str, str], listed: Iterable[str] = ()
) -> list[str]:
    """The build args, by name, whose values are secret: by their name, by an
    operator's list, or because the value is a URL with a password."""
    extra = {name.strip().upper() for name in listed if name.strip()}
    return sorted(
        name
        for name, value in build_args.items()
        if SECRET_NAME.search(name)
        or name.upper() in extra
        or URL_WITH_PASSWORD.match(value or "")
    )


def masked_args(
    build_args: Mapping[str, str], secret_names: Iterable[str]
) -> dict[str, str]:
    secret = set(secret_names)
    return {k: MASK if k in secret else v for k, v in build_args.items()}


def secret_warnings(secret_names: Iterable[str]) -> list[str]:
    return [
        f"Build arg {name} looks like a secret: the farm masks its value, but build "
        "args stay in the image's history (docker history); pass secrets another "
        "way."
        for name in secret_names
    ]


class Redactor:
    """Masks given secret values in text."""

    def __init__(self, values: Iterable[str]) -> None:
        kept = {v for v in values if len(v) >= MIN_MASKED_CHARS}
        # Longest first, so a secret holding another is masked whole.
        self.values = sorted(kept, key=len, reverse=True)

    @classmethod
    def for_build(
        cls, build_args: Mapping[str, str], secret_names: Iterable[str]
    ) -> Redactor:
        return cls(build_args[name] for name in secret_names if name in build_args)

    def text(self, text: str) -> str:
        for value in self.values:
            text = text.replace(value, MASK)
        return text

    def lines(self, lines: Iterable[str]) -> list[str]:
        return [self.text(line) for line in lines]
