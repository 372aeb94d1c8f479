"""Which build args are secret, and masking their values."""

from farm.redaction import MASK, Redactor, masked_args, secret_arg_names


def test_names_that_say_secret_and_listed_names_are_secret():
    args = {
        "NPM_TOKEN": "a",
        "db_password": "b",
        "AWS_SECRET_ACCESS_KEY": "c",
        "GITHUB_AUTH": "d",
        "SIGNING_KEY_ID": "e",
        "COLOR": "f",
        "VERSION": "g",
    }
    assert secret_arg_names(args, ["signing_key_id"]) == [
        "AWS_SECRET_ACCESS_KEY",
        "GITHUB_AUTH",
        "NPM_TOKEN",
        "SIGNING_KEY_ID",
        "db_password",
    ]


def test_secret_values_are_masked_longest_first_and_short_ones_left():
    redactor = Redactor.for_build(
        {"TOKEN": "abcd", "LONG_TOKEN": "abcdefgh", "PIN_TOKEN": "12", "COLOR": "abcd"},
        ["TOKEN", "LONG_TOKEN", "PIN_TOKEN"],
    )
    assert redactor.text("x abcdefgh y abcd z 12") == f"x {MASK} y {MASK} z 12"
    assert masked_args({"TOKEN": "abcd", "COLOR": "red"}, ["TOKEN"]) == {
        "TOKEN": MASK,
        "COLOR": "red",
    }


def test_keys_and_urls_with_passwords_are_secret_too():
    args = {
        "SSH_KEY": "-----BEGIN OPENSSH PRIVATE KEY-----",
        "DEPLOY_KEYS": "k1,k2",
        "SENTRY_DSN": "https://abc@sentry.example/1",
        "DATABASE_URL": "postgres://app:s3cret@db.example/app",
        "REDIS_URL": "redis://cache.example:6379/0",  # no password in it
        "MONKEY": "banana",  # KEY inside a word says nothing
        "KEYBOARD_LAYOUT": "us",
    }
    assert secret_arg_names(args) == [
        "DATABASE_URL",
        "DEPLOY_KEYS",
        "SENTRY_DSN",
        "SSH_KEY",
    ]


def test_pw_as_a_word_of_the_name_is_secret():
    args = {
        "PW": "a",
        "DB_PW": "b",
        "smtp_pw": "c",
        "PW_FILE_CONTENT": "d",
        "LDAP_PW_HASH": "e",
        "PWD": "f",  # the shell's working directory, not a password
        "NPWORKERS": "g",  # PW inside a word says nothing
        "UPWARD": "h",
    }
    assert secret_arg_names(args) == [
        "DB_PW",
        "LDAP_PW_HASH",
        "PW",
        "PW_FILE_CONTENT",
        "smtp_pw",
    ]
