#!/usr/bin/env bash
# Installs what a one-machine farm and its test suite need on Debian 12, as root:
# Debian packages (only those missing), then a virtualenv with the farm in it.
set -euo pipefail
cd "$(dirname "$0")/../.."

packages=(docker.io redis-server docker-registry postgresql prometheus debootstrap busybox-static
          git iproute2 iptables ca-certificates chromium python3-venv docker-compose)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install: Debian packages ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
if ! .venv/bin/python -c "import farm, celery, playwright" 2>/dev/null \
   || [ pyproject.toml -nt .venv/.installed ]; then
  echo "install: Python packages into .venv"
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -e '.[dev]'
  touch .venv/.installed
fi
