#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh), starts a local PostgreSQL in .cluster/ with pgml_plpy
# installed, and runs the demo against it. Safe to re-run; stop the cluster with
#   python3 scripts/localpg.py stop .cluster
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
dsn=$(.venv/bin/python scripts/localpg.py start .cluster --port "${PGML_DEMO_PORT:-5433}")
echo "demo cluster: psql \"$dsn\""
exec .venv/bin/python scripts/demo.py "$dsn"
