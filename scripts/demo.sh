#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh), starts a local PostgreSQL in .cluster/ with pgml_plpy
# installed, and runs the demo against it; it fails unless the demo found real answers. Safe to
# re-run; stop the cluster with
#   python3 scripts/localpg.py stop .cluster
# Environment: PGML_DEMO_PORT (default 5433; the cluster listens on a socket in .cluster/ only),
# and what scripts/setup.sh reads.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
VENV=${PGML_VENV:-$PWD/.venv}
dsn=$("$VENV/bin/python" scripts/localpg.py start .cluster --port "${PGML_DEMO_PORT:-5433}" --venv "$VENV")
echo "demo cluster: psql \"$dsn\""
exec "$VENV/bin/python" scripts/demo.py "$dsn"
