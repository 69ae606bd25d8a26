#!/usr/bin/env bash
# Runs once when the container initialises its database: installs pgml_plpy into POSTGRES_DB.
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     -v venv=/opt/pgml_plpy/.venv -f /opt/pgml_plpy/sql/install.sql
