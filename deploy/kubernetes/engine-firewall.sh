#!/bin/sh
# Run as root in a build engine's container, before the engine starts ("$@").
#
# Builds run other people's code, and the engine itself fetches what a Dockerfile
# names (ADD URLs, git sources, images). Neither may reach the farm's own services
# or anything else on a private network: only the public internet (package
# registries), the name servers, and, for the engine alone, the farm registry.
#
#   FARM_REGISTRY          host:port of the farm registry (the engine pushes there)
#   FARM_ENGINE_DNS        space-separated name servers for builds; needed when this
#                          container's resolv.conf names only loopback ones (Docker's
#                          embedded resolver), which builds cannot use
#   FARM_ENGINE_OPEN_NETS  space-separated CIDRs builds may reach after all
#
# Used by deploy/compose/compose.yaml and deploy/kubernetes/worker.yaml. IPv4 only.
set -eu

private="0.0.0.0/8 10.0.0.0/8 100.64.0.0/10 127.0.0.0/8 169.254.0.0/16
172.16.0.0/12 192.168.0.0/16 198.18.0.0/15 224.0.0.0/4 240.0.0.0/4"

registry_host=${FARM_REGISTRY%:*}
registry_port=${FARM_REGISTRY##*:}
registry_ips=$(getent hosts "$registry_host" | awk '$1 ~ /\./ {print $1}' | sort -u)
if [ -z "$registry_ips" ]; then
  echo "engine-firewall: cannot resolve the registry '$registry_host'" >&2
  exit 1
fi
name_servers=$(awk '$1 == "nameserver" && $2 ~ /\./ {print $2}' /etc/resolv.conf)
# What builds resolve names with: the engine passes on this container's name
# servers, unless they are loopback ones; then it would pick public resolvers of its
# own, so it must be told.
build_name_servers=$(printf '%s\n' $name_servers | grep -v '^127\.' || :)
if [ -n "${FARM_ENGINE_DNS:-}" ]; then
  build_name_servers=$FARM_ENGINE_DNS
  name_servers="$name_servers $FARM_ENGINE_DNS"
  for ip in $FARM_ENGINE_DNS; do
    set -- "$@" "--dns=$ip"
  done
elif [ -z "$build_name_servers" ]; then
  echo "engine-firewall: this container resolves names through loopback only;" \
    "set FARM_ENGINE_DNS to the name servers builds should use" >&2
  exit 1
fi

# End chain $1: the networks opened by the operator, then no other private one.
refuse_private() {
  for net in ${FARM_ENGINE_OPEN_NETS:-}; do
    iptables -A "$1" -d "$net" -j RETURN
  done
  for net in $private; do
    iptables -A "$1" -d "$net" -j REJECT
  done
}

# Fresh chains, so a restarted container does not stack rules.
for chain in FARM-ENGINE FARM-BUILDS; do
  iptables -N "$chain" 2>/dev/null || iptables -F "$chain"
done

# What the engine (root) fetches itself. Other users sharing the network (the
# worker, in a Kubernetes pod) are not concerned.
iptables -A FARM-ENGINE -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN
for ip in $registry_ips; do
  iptables -A FARM-ENGINE -p tcp -d "$ip" --dport "$registry_port" -j RETURN
done
for ip in $name_servers; do
  # Any port: Docker's embedded name server answers on a redirected one.
  iptables -A FARM-ENGINE -d "$ip" -j RETURN
done
refuse_private FARM-ENGINE
iptables -D OUTPUT -m owner --uid-owner 0 -j FARM-ENGINE 2>/dev/null || :
iptables -I OUTPUT -m owner --uid-owner 0 -j FARM-ENGINE

# What build containers send out of the engine. Between containers of the same
# engine (an app and its smoke-test probe) stays open.
iptables -A FARM-BUILDS -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN
iptables -A FARM-BUILDS -o docker0 -j RETURN
iptables -A FARM-BUILDS -o br-+ -j RETURN
for ip in $build_name_servers; do
  iptables -A FARM-BUILDS -p udp -d "$ip" --dport 53 -j RETURN
  iptables -A FARM-BUILDS -p tcp -d "$ip" --dport 53 -j RETURN
done
refuse_private FARM-BUILDS
# The engine puts its own rules first in FORWARD but leaves DOCKER-USER, which it
# jumps to before them, to the operator.
iptables -N DOCKER-USER 2>/dev/null || :
iptables -D DOCKER-USER -j FARM-BUILDS 2>/dev/null || :
iptables -I DOCKER-USER -j FARM-BUILDS
# Name lookups from builds go to the builds' name server, whatever resolver a
# build container was given: the engine's builder falls back to public resolvers
# of its own where this container's resolver is a loopback one, and ignores --dns.
first_name_server=$(printf '%s\n' $build_name_servers | head -n 1)
for bridge in docker0 br-+; do
  for proto in udp tcp; do
    rule="-i $bridge -p $proto --dport 53 -j DNAT --to-destination $first_name_server:53"
    iptables -t nat -D PREROUTING $rule 2>/dev/null || :
    iptables -t nat -I PREROUTING $rule
  done
done
# Builds reaching this container itself (the engine's own addresses).
for bridge in docker0 br-+; do
  iptables -D INPUT -i "$bridge" -m conntrack --ctstate NEW -j REJECT 2>/dev/null || :
  iptables -A INPUT -i "$bridge" -m conntrack --ctstate NEW -j REJECT
done

echo "engine-firewall: builds kept off private networks; registry $registry_ips:$registry_port open to the engine" >&2
exec "$@"
