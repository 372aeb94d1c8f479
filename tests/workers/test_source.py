import pytest

from farm.errors import BuildFailed, SourceError
from workers.source import OUTSIDE_DOCKERFILE_NAME, check_target, locate_dockerfile


def test_dockerfile_inside_context_is_used_in_place(tmp_path):
    (tmp_path / "api").mkdir()
    (tmp_path / "api/Dockerfile").write_text("FROM scratch\n")
    prepared = locate_dockerfile(tmp_path, "api", "Dockerfile")
    assert prepared.context_dir == (tmp_path / "api").resolve()
    assert prepared.dockerfile == "Dockerfile"


def test_dockerfile_outside_context_is_brought_in(tmp_path):
    (tmp_path / "app").mkdir()
    (tmp_path / "docker").mkdir()
    (tmp_path / "docker/app.Dockerfile").write_text("FROM scratch\n")
    prepared = locate_dockerfile(tmp_path, "app", "../docker/app.Dockerfile")
    assert prepared.dockerfile == OUTSIDE_DOCKERFILE_NAME
    assert (tmp_path / "app" / OUTSIDE_DOCKERFILE_NAME).read_text() == "FROM scratch\n"


@pytest.mark.parametrize(
    "context, dockerfile",
    [
        ("missing", "Dockerfile"),
        (".", "Nope"),
        (".", "../../etc/passwd"),
    ],
)
def test_missing_or_escaping_paths_are_source_errors(tmp_path, context, dockerfile):
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    with pytest.raises(SourceError):
        locate_dockerfile(tmp_path, context, dockerfile)


def test_symlinked_context_leaving_the_source_is_refused(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src/escape").symlink_to("/etc")
    with pytest.raises(SourceError):
        locate_dockerfile(tmp_path / "src", "escape", "Dockerfile")


def test_unknown_target_names_the_stages_there_are():
    text = "FROM a AS build\nRUN x\nFROM b AS runtime\n"
    check_target(text, "build")
    with pytest.raises(BuildFailed, match="stages: build, runtime"):
        check_target(text, "tests")
