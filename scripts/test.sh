#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh --tests) and runs the test suite; the suite starts its
# own PostgreSQL (testcontainers where a Docker engine answers, else a throwaway initdb cluster).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh --tests
exec "${PGML_VENV:-$PWD/.venv}/bin/python" -m pytest "$@"
