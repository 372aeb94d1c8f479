import ipaddress

import pytest

from farm.destinations import DestinationPolicy, FetchPolicy, url_host
from farm.dockerfile import parse_dockerfile
from farm.errors import InvalidRequest

# Addresses are data here: the resolver is a table, nothing is looked up or reached.
TABLE = {
    "git.example.org": ["93.184.216.34"],
    "intranet.example.org": ["10.1.2.3"],
    "metadata.example.org": ["169.254.169.254"],
    "sneaky.example.org": ["93.184.216.34", "127.0.0.1"],
    "mapped.example.org": ["::ffff:127.0.0.1"],
    "v6-loopback.example.org": ["::1"],
    "compat.example.org": ["::127.0.0.1"],
    "nat64.example.org": ["64:ff9b::7f00:1"],
    "sixtofour.example.org": ["2002:7f00:1::"],
    "nat64-public.example.org": ["64:ff9b::5db8:d822"],
    "localhost": ["127.0.0.1", "::1"],
}


def lookup(host: str) -> list[str]:
    """The table's answer; an address stands for itself, as getaddrinfo does."""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        return TABLE.get(host, [])


def policy(**kwargs) -> DestinationPolicy:
    return DestinationPolicy(resolver=lookup, **kwargs)


@pytest.mark.parametrize(
    "url, host",
    [
        ("https://git.example.org/team/app.git", "git.example.org"),
        ("ssh://git@Git.Example.org:2222/app.git", "git.example.org"),
        ("git@git.example.org:team/app.git", "git.example.org"),
        ("http://[::1]:8080/a.git", "::1"),
    ],
)
def test_the_host_of_every_url_form(url, host):
    assert url_host(url) == host


def test_public_hosts_pass():
    policy().check_url("https://git.example.org/a.git", field="git_url")
    # NAT64 of a public IPv4 address is as public as that address.
    policy().check_url("https://nat64-public.example.org/a.git", field="git_url")


@pytest.mark.parametrize(
    "host",
    [
        "intranet.example.org",
        "metadata.example.org",
        "sneaky.example.org",
        "mapped.example.org",
        "v6-loopback.example.org",
        "compat.example.org",
        "nat64.example.org",
        "sixtofour.example.org",
    ],
)
def test_internal_addresses_are_refused(host):
    with pytest.raises(InvalidRequest, match="internal address") as raised:
        policy().check_url(f"https://{host}/a.git", field="git_url")
    assert raised.value.field == "git_url"


def test_a_host_that_does_not_resolve_is_refused():
    with pytest.raises(InvalidRequest, match="does not resolve"):
        policy().check_url("https://nowhere.example.org/a.git", field="git_url")


def test_private_addresses_may_be_allowed():
    policy(allow_private=True).check_url(
        "https://intranet.example.org/a.git", field="git_url"
    )


def test_an_allow_list_is_the_only_way_in_and_looks_nothing_up():
    looked_up = []
    listed = DestinationPolicy(
        allowed_hosts=("git.example.org", "*.corp.example", "10.0.0.0/8"),
        resolver=lambda host: looked_up.append(host) or [],
    )
    for url in (
        "https://git.example.org/a.git",
        "git@code.corp.example:a.git",
        "http://10.9.8.7/a.git",
    ):
        listed.check_url(url, field="git_url")
    with pytest.raises(InvalidRequest, match="only reaches the hosts"):
        listed.check_url("https://evil.example.net/a.git", field="git_url")
    assert looked_up == []


# What a Dockerfile makes the engine fetch, judged by the same table.
def fetch_policy() -> FetchPolicy:
    return FetchPolicy(policy(), own_registry="127.0.0.1:5000")


@pytest.mark.parametrize(
    "text",
    [
        "FROM scratch\nADD http://127.0.0.1:5000/v2/_catalog /c\n",
        "FROM scratch\nADD --chmod=644 https://intranet.example.org/x.tgz /x\n",
        'FROM scratch\nADD ["http://metadata.example.org/latest", "/m"]\n',
        "FROM scratch\nADD git@intranet.example.org:team/app.git /src\n",
        "FROM scratch\nADD https://git.example.org/a http://[::1]:9/b /dst/\n",
        "FROM 10.1.2.3:5000/team/base:1\n",
        "FROM localhost:5001/base\n",
        "FROM scratch\nCOPY --from=intranet.example.org/img:1 /a /a\n",
        "FROM busybox\nRUN --mount=type=bind,from=10.1.2.3:5000/x,target=/x true\n",
        # Variables are expanded as the engine would: from ARG defaults ...
        "ARG REG=10.1.2.3:5000\nFROM ${REG}/base\n",
        "FROM scratch\nARG HOST=127.0.0.1\nADD http://$HOST:5000/v2/ /c\n",
        # ... from ENV, in both of its forms ...
        "FROM scratch\nENV U=http://127.0.0.1:5000/v2/\nADD $U /c\n",
        "FROM scratch\nENV U http://127.0.0.1:5000/v2/\nADD ${U} /c\n",
        # ... and from a build arg the stage declares.
        "FROM scratch\nARG SRC\nADD $SRC /c\n",
    ],
)
def test_dockerfiles_fetching_from_internal_hosts_are_refused(text):
    dockerfile = parse_dockerfile(text)
    with pytest.raises(InvalidRequest, match="internal address") as refused:
        fetch_policy().check(dockerfile, {"SRC": "http://intranet.example.org/x"})
    assert refused.value.message.startswith("Dockerfile line ")
    assert refused.value.field == "dockerfile"
    assert refused.value.details["line"] >= 1


@pytest.mark.parametrize(
    "text",
    [
        # Quotes and escapes the engine takes away.
        'FROM scratch\nADD "http://127.0.0.1:1/x" /x\n',
        "FROM scratch\nADD 'http://127.0.0.1:1/x' /x\n",
        "FROM scratch\nADD http\\://127.0.0.1:1/x /x\n",
        "FROM scratch\nENV U=http\\://127.0.0.1:1/x\nADD $U /x\n",
        'FROM busybox\nRUN --mount=type=bind,"from=127.0.0.1:1/i",target=/m true\n',
        # A variable made of other variables.
        "FROM scratch\nENV A=http://127.0.0.1:1\nENV U=$A/x\nADD $U /x\n",
        "FROM scratch\nARG A=http://127.0.0.1:1\nARG U=$A/x\nADD $U /x\n",
        # What runs later, in an image built on this one.
        "FROM scratch\nONBUILD ADD http://127.0.0.1:1/x /x\n",
        # An engine without here-documents reads their lines as instructions.
        "FROM busybox\nRUN <<CMD\nADD http://127.0.0.1:1/x /x\nCMD\n",
    ],
)
def test_ways_of_writing_a_fetch_the_engine_reads_differently_are_refused(text):
    with pytest.raises(InvalidRequest, match="internal address"):
        fetch_policy().check(parse_dockerfile(text), {})


@pytest.mark.parametrize(
    "syntax, allowed",
    [
        ("docker/dockerfile:1", True),
        ("docker.io/docker/dockerfile:1.7@sha256:" + "a" * 64, True),
        ("docker/dockerfile-upstream:master", True),
        ("127.0.0.1:5000/frontend:1", False),  # even in the farm's own registry
        ("someone/dockerfile:1", False),
        ("dockerfile", False),
    ],
)
def test_only_dockers_own_dockerfile_frontend_may_be_named(syntax, allowed):
    dockerfile = parse_dockerfile(f"# syntax={syntax}\nFROM scratch\n")
    if allowed:
        fetch_policy().check(dockerfile, {})
    else:
        with pytest.raises(InvalidRequest, match="only Docker's Dockerfile frontend"):
            fetch_policy().check(dockerfile, {})


def test_a_remote_source_naming_no_host_is_refused():
    dockerfile = parse_dockerfile("FROM scratch\nARG H\nADD http://$H/x /x\n")
    with pytest.raises(InvalidRequest, match="names no host"):
        fetch_policy().check(dockerfile, {})


def test_a_variable_the_dockerfile_does_not_set_is_refused_in_a_remote_source():
    # A base image's ENV could point it anywhere; the farm cannot tell where.
    dockerfile = parse_dockerfile("FROM busybox\nADD $FROM_BASE_IMAGE /c\n")
    with pytest.raises(InvalidRequest, match=r"\$FROM_BASE_IMAGE"):
        fetch_policy().check(dockerfile, {})


@pytest.mark.parametrize(
    "text",
    [
        "FROM busybox\nADD app.tgz /app/\nCOPY . /src\n",
        "FROM 127.0.0.1:5000/farm-base/debian:bookworm AS build\n"
        "FROM scratch\nCOPY --from=build /a /a\nCOPY --from=0 /b /b\n",
        "FROM busybox\nADD https://git.example.org/release.tgz /r\n",
        "FROM git.example.org/team/base:1\n",
        "ARG VERSION=1\nFROM busybox\nARG VERSION\nADD app-${VERSION}.tgz /\n",
        "FROM busybox AS deps\nFROM busybox\n"
        "RUN --mount=type=cache,from=deps,target=/c true\n",
        "FROM busybox\nADD <<EOF /greeting\nhello\nEOF\n",
    ],
)
def test_dockerfiles_fetching_only_from_reachable_places_pass(text):
    fetch_policy().check(parse_dockerfile(text), {})


def test_an_operator_may_let_dockerfiles_reach_private_hosts():
    dockerfile = parse_dockerfile("FROM 10.1.2.3:5000/b\nADD http://127.0.0.1/x /x\n")
    FetchPolicy(policy(allow_private=True), own_registry="").check(dockerfile, {})
