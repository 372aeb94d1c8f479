"""What a failed git command is reported to have said."""

from farm.git import git_reason

NOT_A_REPOSITORY = """\
fatal: '/srv/none.git' does not appear to be a git repository
fatal: Could not read from remote repository.

Please make sure you have the correct access rights
and the repository exists.
"""


def test_the_fatal_lines_are_kept_not_the_advice_after_them():
    assert git_reason(NOT_A_REPOSITORY) == (
        "fatal: '/srv/none.git' does not appear to be a git repository "
        "fatal: Could not read from remote repository."
    )


def test_without_fatal_lines_the_last_ones_are_kept_and_credentials_masked():
    said = "Cloning...\nremote: denied for https://bob:pw@git.example/x\nhint: try\n"
    assert git_reason(said) == (
        "Cloning... remote: denied for https://***@git.example/x hint: try"
    )


def test_a_flood_of_output_is_cut_short():
    assert len(git_reason("fatal: " + "x" * 5000)) == 600
