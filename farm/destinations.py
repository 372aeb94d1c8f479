"""Which hosts the farm may be told to reach: git remotes and callbacks named in
requests, and what a Dockerfile makes the engine fetch.

A request must not turn the farm into a way in to its own network: by default a git
URL whose host resolves to a loopback, private, link-local (cloud metadata),
multicast or otherwise reserved address is refused. An operator either lists the
hosts requests may name (``FARM_GIT_HOSTS``: names, ``*.suffix`` patterns, addresses
or networks; nothing else is reached, and nothing is looked up to refuse it) or lets
private addresses through (``FARM_PRIVATE_DESTINATIONS``) for an internal git server.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from farm.config import Settings
from farm.dockerfile import Dockerfile
from farm.errors import InvalidRequest

Resolver = Callable[[str], list[str]]


def resolve(host: str) -> list[str]:
    """Every address ``host`` resolves to (empty if it does not resolve)."""
    try:
        answers = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return []
    return sorted({str(answer[4][0]) for answer in answers})


def url_host(url: str) -> str:
    """The host of a git URL, including git's ``user@host:path`` form."""
    if "://" not in url and "@" in url.split(":", 1)[0]:
        return url.split("@", 1)[1].split(":", 1)[0].strip("[]").lower()
    return (urlsplit(url).hostname or "").lower()


# IPv6 ranges that carry an IPv4 address in their last 32 bits and reach it:
# NAT64's well-known prefix, and the deprecated IPv4-compatible form (::a.b.c.d).
_CARRY_IPV4 = (
    ipaddress.ip_network("64:ff9b::/96"),
    ipaddress.ip_network("::/96"),
)


def is_internal(address: str) -> bool:
    """Whether an address is loopback, private, link-local, reserved or multicast,
    also when an IPv6 address carries an internal IPv4 one (mapped, 6to4, NAT64
    or IPv4-compatible)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        carried = ip.ipv4_mapped or ip.sixtofour
        if carried is None and any(ip in net for net in _CARRY_IPV4):
            carried = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if carried is not None and is_internal(str(carried)):
            return True
    return not ip.is_global or ip.is_multicast


@dataclass(frozen=True)
class DestinationPolicy:
    allowed_hosts: Sequence[str] = ()
    allow_private: bool = False
    resolver: Resolver = resolve
    # The setting an operator lists hosts in, named when a host is refused.
    hosts_setting: str | None = None

    @classmethod
    def from_setting(
        cls, hosts: str, *, allow_private: bool = False, setting: str | None = None
    ) -> DestinationPolicy:
        allowed = tuple(h.strip().lower() for h in hosts.split(",") if h.strip())
        return cls(
            allowed_hosts=allowed, allow_private=allow_private, hosts_setting=setting
        )

    def check_url(self, url: str, *, field: str) -> None:
        """Raise InvalidRequest unless the farm may reach the URL's host."""
        host = url_host(url)
        if not host:
            return  # file:// URLs, where allowed, have no host
        if self.allowed_hosts:
            if not any(_matches(host, pattern) for pattern in self.allowed_hosts):
                allowed = ", ".join(self.allowed_hosts)
                raise InvalidRequest(
                    f"This farm only reaches the hosts {allowed}; "
                    f"{host!r} is not one of them.",
                    field=field,
                )
            return
        if self.allow_private:
            return
        addresses = self.resolver(host)
        if not addresses:
            raise InvalidRequest(f"The host {host!r} does not resolve.", field=field)
        internal = [address for address in addresses if is_internal(address)]
        if internal:
            setting = self.hosts_setting
            listing = f"lists the host in {setting} or " if setting else ""
            raise InvalidRequest(
                f"The host {host!r} resolves to an internal address ({internal[0]}); "
                "this farm does not reach loopback, private or link-local addresses "
                f"unless its operator {listing}sets FARM_PRIVATE_DESTINATIONS.",
                field=field,
            )


def _matches(host: str, pattern: str) -> bool:
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])
    if "/" in pattern:
        try:
            return ipaddress.ip_address(host) in ipaddress.ip_network(pattern)
        except ValueError:
            return False
    return host == pattern


def image_registry(reference: str) -> str | None:
    """The registry host (with its port) an image reference names, or None for
    Docker Hub's short names (``debian``, ``team/app:1``)."""
    first, slash, _ = reference.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return first.lower()
    return None


# Docker's own Dockerfile frontends, the only ones a syntax directive may name.
DOCKERFILE_FRONTENDS = frozenset({"docker/dockerfile", "docker/dockerfile-upstream"})


@dataclass(frozen=True)
class FetchPolicy:
    """Where a Dockerfile may make the engine fetch from: images from the farm's
    own registry always; remote ``ADD`` sources and other registries only if
    ``destinations`` lets the farm reach their hosts. The engine fetches these
    itself, so the URLs in a request are not the only way out."""

    destinations: DestinationPolicy = DestinationPolicy()
    own_registry: str = ""

    @classmethod
    def from_settings(cls, settings: Settings) -> FetchPolicy:
        return cls(
            DestinationPolicy(allow_private=settings.private_destinations),
            settings.registry,
        )

    def check(self, dockerfile: Dockerfile, build_args: Mapping[str, str]) -> None:
        """Raise InvalidRequest, naming the line, at the first fetch refused."""
        for fetch in dockerfile.fetches(build_args):
            where = f"Dockerfile line {fetch.line}"
            if fetch.unresolved is not None:
                raise InvalidRequest(
                    f"{where}: {fetch.reference!r} uses ${fetch.unresolved}, which "
                    "the Dockerfile does not set, so the farm cannot tell what it "
                    "would fetch; set it with ARG or ENV in the stage.",
                    field="dockerfile",
                    line=fetch.line,
                )
            if fetch.kind == "frontend":
                self._check_frontend(fetch.reference, where)
                continue
            if fetch.kind == "image":
                host = image_registry(fetch.reference)
                if host is None or host == self.own_registry.lower():
                    continue
                url = f"https://{host}/"
            else:
                url = fetch.reference
                if not url_host(url):
                    raise InvalidRequest(
                        f"{where}: {url!r} names no host the farm can check.",
                        field="dockerfile",
                        line=fetch.line,
                    )
            try:
                self.destinations.check_url(url, field="dockerfile")
            except InvalidRequest as exc:
                raise InvalidRequest(
                    f"{where} fetches {fetch.reference!r}: {exc.message}",
                    field="dockerfile",
                    line=fetch.line,
                ) from exc

    def _check_frontend(self, reference: str, where: str) -> None:
        """Only Docker's own Dockerfile frontend: another is code the engine would
        run with its network, able to fetch anything."""
        name = reference.split("@", 1)[0].rsplit(":", 1)[0].lower()
        if name.startswith(":") or "/" not in name:
            name = ""
        if name.removeprefix("docker.io/") not in DOCKERFILE_FRONTENDS:
            raise InvalidRequest(
                f"{where}: the syntax directive names {reference!r}; this farm runs "
                "only Docker's Dockerfile frontend (# syntax=docker/dockerfile:1).",
                field="dockerfile",
                line=1,
            )
