import pytest

from farm.errors import Forbidden, InvalidRequest, Unauthorized
from farm.ledger import BuildLedger
from farm.tokens import TokenService, clean_scopes, grants


@pytest.fixture
def tokens(tmp_path):
    ledger = BuildLedger.from_url(f"sqlite:///{tmp_path}/farm.db")
    ledger.create_tables()
    return TokenService(ledger)


@pytest.mark.parametrize(
    "scopes, needed, allowed",
    [
        (["read"], "read", True),
        (["read"], "submit", False),
        (["submit"], "read", True),
        (["submit"], "admin", False),
        (["admin"], "submit", True),
        (["bogus"], "read", False),
    ],
)
def test_scopes_nest(scopes, needed, allowed):
    assert grants(scopes, needed) is allowed


def test_scopes_are_checked_and_ordered():
    assert clean_scopes(["admin", "read", "read"]) == ["read", "admin"]
    with pytest.raises(InvalidRequest):
        clean_scopes([])
    with pytest.raises(InvalidRequest, match="not root"):
        clean_scopes(["read", "root"])


def test_a_token_is_stored_hashed_and_checked(tokens):
    record, text = tokens.create("ci", ["submit"])
    assert text.startswith(f"farm_{record.id}_")
    assert text.split("_", 2)[2] not in record.secret_hash
    assert tokens.check(text, "submit").name == "ci"
    with pytest.raises(Forbidden):
        tokens.check(text, "admin")


@pytest.mark.parametrize(
    "text", [None, "", "farm_", "Bearer x", "farm_0123456789ab_" + "a" * 43]
)
def test_unknown_or_malformed_tokens_are_refused(tokens, text):
    with pytest.raises(Unauthorized):
        tokens.identify(text)


def test_a_wrong_secret_for_a_real_id_is_refused(tokens):
    record, text = tokens.create("ci", ["read"])
    forged = text[: -len("x")] + ("y" if text[-1] != "y" else "z")
    with pytest.raises(Unauthorized, match="not known"):
        tokens.identify(forged)


def test_a_revoked_token_stops_working_at_once(tokens):
    record, text = tokens.create("alice", ["read"])
    tokens.revoke(record.id)
    with pytest.raises(Unauthorized, match="revoked"):
        tokens.identify(text)
    assert tokens.live(record.id) is None


def test_names_are_checked(tokens):
    with pytest.raises(InvalidRequest):
        tokens.create("", ["read"])
    with pytest.raises(InvalidRequest):
        tokens.create("x" * 65, ["read"])
