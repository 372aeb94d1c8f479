#!/bin/sh
# Regenerate control_pb2.py from control.proto with the protoc bundled in grpcio-tools.
# Run from anywhere; uses the project's venv unless PYTHON is set.
set -eu
root="$(cd "$(dirname "$0")/../.." && pwd)"
python="${PYTHON:-$root/.venv/bin/python}"
cd "$root"
"$python" -m grpc_tools.protoc -I . --python_out=. --pyi_out=. \
    workers/buildkit/control.proto
