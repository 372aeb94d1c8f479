import pytest

from farm.destinations import DestinationPolicy, url_host
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
}


def policy(**kwargs) -> DestinationPolicy:
    return DestinationPolicy(resolver=lambda host: TABLE.get(host, []), **kwargs)


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
