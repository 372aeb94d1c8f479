"""Build args that hold secrets: which they are, and masking their values.

A build arg is taken for a secret when its name says so (``NPM_TOKEN``,
``DB_PASSWORD``, ``AWS_SECRET_ACCESS_KEY``, ...) or an operator lists it in
``FARM_SECRET_ARGS``. Its value is masked wherever the farm shows it: API answers,
pages, callbacks, logs and error messages. The build record keeps the value, since a
retry builds with it again; build args also stay in the image's own history, so a
warning says to pass secrets another way.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

MASK = "***"
# Values shorter than this are not masked: masking "1" would garble every log.
MIN_MASKED_CHARS = 4
SECRET_NAME = re.compile(
    r"(PASS(WORD|WD)?|SECRET|TOKEN|API_?KEY|PRIVATE_?KEY|ACCESS_?KEY|CREDENTIAL"
    r"|AUTH)",
    re.IGNORECASE,
)


def secret_arg_names(
    build_args: Mapping[str, str], listed: Iterable[str] = ()
) -> list[str]:
    """The build args, by name, whose values are secret."""
    extra = {name.strip().upper() for name in listed if name.strip()}
    return sorted(
        name for name in build_args if SECRET_NAME.search(name) or name.upper() in extra
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
