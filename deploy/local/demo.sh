#!/usr/bin/env bash
# Brings up a one-machine farm and builds the bundled examples through its API.
# Assumes deploy/local/install.sh ran (make demo does that first).
set -euo pipefail
cd "$(dirname "$0")/../.."
farm=.venv/bin/farm
export FARM_WEB_URL=${FARM_WEB_URL:-http://127.0.0.1:8000}
export FARM_SERVER=$FARM_WEB_URL

echo "== starting Redis, registry, Docker engine, web app and worker"
$farm local up

# Builds here trust the machine's extra CA certificates (a proxy's, for example).
extra_ca=()
for cert in /usr/local/share/ca-certificates/*.crt; do
  [ -f "$cert" ] && extra_ca+=(--extra-ca "$cert")
done
echo "== making the base images offline and seeding them into the registry"
$farm base-images build --push "${extra_ca[@]}"

echo "== building the example app as one group, then smoke-testing it together"
# examples/farm-group.json names the four images, their tags, and how to check each
# one once they all run on one network (the web front end asks the API by name).
status=0
$farm group submit examples --file examples/farm-group.json --wait || status=$?
echo
echo "Watch the builds at $FARM_WEB_URL/ , signing in with the token in"
echo "/var/lib/farm/local/token  (stop the farm with: $farm local down)"
exit $status
