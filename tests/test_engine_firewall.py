"""deploy/kubernetes/engine-firewall.sh, run for real in a network namespace of
the test's own: what the engine (root) may reach, what other users of the same
network (a worker in a Kubernetes pod) still reach, and how it refuses to start
an engine whose builds would resolve names through public resolvers."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parent.parent / "deploy/kubernetes/engine-firewall.sh"

# Listens on two loopback ports, then connects to each as root (the engine) and to
# the second as an unprivileged user (a worker sharing the network); prints what
# got through.
PROBE = """
import json, os, socket, sys
registry, other = (int(p) for p in sys.argv[1:3])
listeners = []
for port in (registry, other):
    s = socket.socket(); s.bind(("127.0.0.1", port)); s.listen(); listeners.append(s)
def reaches(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=3).close()
        return True
    except OSError:
        return False
seen = {"root_registry": reaches(registry), "root_other": reaches(other)}
read, write = os.pipe()
if os.fork() == 0:
    os.setgid(65534); os.setuid(65534)
    os.write(write, b"1" if reaches(other) else b"0"); os._exit(0)
os.wait()
seen["user_other"] = os.read(read, 1) == b"1"
seen["args"] = sys.argv[3:]
print(json.dumps(seen))
"""


@pytest.fixture
def netns() -> Iterator[tuple[str, Path]]:
    """A fresh network namespace, and the folder whose resolv.conf it sees."""
    name = f"farmfw{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    etc = Path("/etc/netns") / name
    etc.mkdir(parents=True)
    try:
        subprocess.run(
            ["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True
        )
        yield name, etc
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)
        shutil.rmtree(etc, ignore_errors=True)


def run_firewall(
    name: str, env: dict[str, str], *command: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", name, "sh", str(SCRIPT), *command],
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def iptables_rules(name: str, table: str = "filter") -> str:
    return subprocess.run(
        ["ip", "netns", "exec", name, "iptables", "-t", table, "-S"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_the_engine_reaches_the_registry_only_and_other_users_are_untouched(netns):
    name, etc = netns
    (etc / "resolv.conf").write_text("nameserver 10.9.9.9\n")
    done = run_firewall(
        name,
        {"FARM_REGISTRY": "127.0.0.1:5000"},
        sys.executable,
        "-c",
        PROBE,
        "5000",
        "6379",
        "dockerd",
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen == {
        "root_registry": True,
        "root_other": False,
        "user_other": True,
        "args": ["dockerd"],
    }
    rules = iptables_rules(name)
    # Builds: name servers open, private networks refused, between containers open.
    assert "-A DOCKER-USER -j FARM-BUILDS" in rules
    assert "-A FARM-BUILDS -o br-+ -j RETURN" in rules
    assert "-d 10.9.9.9/32 -p udp -m udp --dport 53 -j RETURN" in rules
    assert "-A FARM-BUILDS -d 172.16.0.0/12 -j REJECT" in rules
    # Whatever resolver a build was given, its lookups go to the name server.
    nat = iptables_rules(name, "nat")
    for bridge in ("docker0", "br-+"):
        for proto in ("udp", "tcp"):
            assert (
                f"-A PREROUTING -i {bridge} -p {proto} -m {proto} --dport 53 "
                "-j DNAT --to-destination 10.9.9.9:53"
            ) in nat

    # Run again (a restarted container): the same rules, not twice over.
    again = run_firewall(name, {"FARM_REGISTRY": "127.0.0.1:5000"}, "true")
    assert again.returncode == 0, again.stderr
    assert sorted(iptables_rules(name).splitlines()) == sorted(rules.splitlines())
    assert sorted(iptables_rules(name, "nat").splitlines()) == sorted(nat.splitlines())


def test_a_loopback_resolver_needs_name_servers_for_builds(netns):
    name, etc = netns
    (etc / "resolv.conf").write_text("nameserver 127.0.0.11\n")
    refused = run_firewall(name, {"FARM_REGISTRY": "127.0.0.1:5000"}, "true")
    assert refused.returncode == 1
    assert "set FARM_ENGINE_DNS" in refused.stderr

    told = run_firewall(
        name,
        {"FARM_REGISTRY": "127.0.0.1:5000", "FARM_ENGINE_DNS": "10.9.9.9 10.9.9.10"},
        "sh",
        "-c",
        'echo "$@"',
        "engine",
        "dockerd",
    )
    assert told.returncode == 0, told.stderr
    # Handed to the engine, which passes them on to its build containers.
    assert told.stdout.split() == ["dockerd", "--dns=10.9.9.9", "--dns=10.9.9.10"]


def test_an_unknown_registry_stops_the_engine_from_starting(netns):
    name, etc = netns
    (etc / "resolv.conf").write_text("nameserver 10.9.9.9\n")
    done = run_firewall(
        name, {"FARM_REGISTRY": "no-such-registry.invalid:5000"}, "true"
    )
    assert done.returncode == 1
    assert "cannot resolve the registry" in done.stderr
