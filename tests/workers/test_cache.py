from farm.dockerfile import parse_dockerfile
from farm.models import Build
from workers.cache import plan_cache, project_key

THREE_STAGE = """\
FROM base AS build
RUN make
FROM build AS test
RUN make test
FROM runtime
COPY --from=build /out /out
"""


def make_build(**values) -> Build:
    defaults = {
        "source_kind": "git",
        "git_url": "https://git.example.org/Team/App.git",
        "tags": [],
        "context": ".",
        "dockerfile": "Dockerfile",
        "target": None,
    }
    return Build(**{**defaults, **values})


def test_project_key_comes_from_the_repository_then_the_tag():
    assert project_key(make_build()) == "git.example.org/team/app"
    assert project_key(make_build(git_url="git@host.example:grp/svc.git")) == (
        "host.example/grp/svc"
    )
    archive = make_build(source_kind="archive", git_url=None, tags=["shop/web:1"])
    assert project_key(archive) == "shop/web"


def test_uploads_keep_their_cache_apart_by_sender():
    def upload(sender):
        return make_build(
            source_kind="archive", git_url=None, tags=["app:1"], submitted_by=sender
        )

    assert project_key(upload("alice")) == "app/from-alice"
    assert project_key(upload("hook:Shop")) == "app/from-hook-shop"
    assert project_key(upload("alice")) != project_key(upload("mallory"))
    git = make_build(submitted_by="mallory")
    assert project_key(git) == "git.example.org/team/app"  # one repository, one cache


def test_repositories_whose_names_differ_only_in_separators_or_port_stay_apart():
    names = [
        "https://h.example/org/my.app",
        "https://h.example/org/my_app",
        "https://h.example/org/my-app",
        "https://h.example/org/my__app",
        "https://h.example:8443/org/my-app",
        "https://h-example/org/my-app",
    ]
    keys = [project_key(make_build(git_url=url)) for url in names]
    assert len(set(keys)) == len(names), keys
    assert project_key(make_build(git_url="https://H.example/Org/My.App.git")) == (
        "h.example/org/my.app"  # hosts and most git hosts' paths ignore case
    )
    same = ["ssh://git@h.example:22/org/my-app", "git@h.example:org/my-app.git"]
    assert {project_key(make_build(git_url=url)) for url in same} == {
        "h.example/org/my-app"  # a scheme's own port, spelt out or not
    }


def test_only_stages_the_target_needs_get_a_cache_image():
    plan = plan_cache(make_build(), parse_dockerfile(THREE_STAGE), "reg:5000")
    assert list(plan.stage_refs) == ["build"]  # 'test' is not needed by the final
    assert plan.final_ref.startswith(
        "reg:5000/farm-cache/git.example.org/team/app:final-"
    )


def test_a_target_brings_its_own_dependencies():
    plan = plan_cache(make_build(target="test"), parse_dockerfile(THREE_STAGE), "r:1")
    assert list(plan.stage_refs) == ["build"]
    assert plan.final_ref.split(":")[-1].startswith("test-")


def test_same_stage_names_in_two_dockerfiles_do_not_collide():
    text = parse_dockerfile(THREE_STAGE)
    one = plan_cache(make_build(dockerfile="a.Dockerfile"), text, "r:1")
    two = plan_cache(make_build(dockerfile="b.Dockerfile"), text, "r:1")
    assert one.stage_refs["build"] != two.stage_refs["build"]
