#!/usr/bin/env bash
# Sets up pgml_plpy on a fresh Debian/Ubuntu machine: PostgreSQL with PL/Python from apt, and
# the venv (.venv) holding the package, built with the distribution's python3 (the Python
# that PL/Python runs). Safe to re-run.
#   bash scripts/setup.sh           # what a server and the demo need
#   bash scripts/setup.sh --serve   # plus Ray Serve, for the shared runtime (python -m pgml_plpy.serve)
#   bash scripts/setup.sh --tests   # plus Ray Serve, the test tools, pg_cron and the transformers 4.x reference overlay
# Environment: PG_MAJOR (default: the installed or the distribution's PostgreSQL),
# PGML_VENV (default .venv), TORCH_SPEC (default the CPU wheel torch==2.13.0; a GPU user
# sets it to a CUDA build).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$PWD
VENV=${PGML_VENV:-$REPO/.venv}
TESTS=0
SERVE=0
[ "${1:-}" = "--tests" ] && TESTS=1 && SERVE=1
[ "${1:-}" = "--serve" ] && SERVE=1

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if [ -z "${PG_MAJOR:-}" ]; then
  PG_MAJOR=$(ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -n 1)
  if [ -z "$PG_MAJOR" ]; then
    as_root apt-get update -qq
    PG_MAJOR=$(apt-cache depends postgresql | sed -n 's/.*Depends: postgresql-\([0-9][0-9]*\)$/\1/p' | head -n 1)
  fi
fi
packages=("postgresql-$PG_MAJOR" "postgresql-plpython3-$PG_MAJOR" python3-venv)
# The tests schedule vectorizers with pg_cron (a cluster of their own loads it).
[ $TESTS = 1 ] && packages+=("postgresql-$PG_MAJOR-cron")
missing=()
for pkg in "${packages[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: apt-get install ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV with $(/usr/bin/python3 --version)"
  /usr/bin/python3 -m venv "$VENV"
fi
# pip's own failure stops the setup; only this machine's noise about missing index folders is dropped.
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@" 2>&1 | { grep -v "^WARNING: Location" || true; }; }
# A re-run installs nothing: the venv records what it was built from (the requirements and pins, the
# package's version, the extras), and pip runs again only when that changed or an extra is missing. The
# plain setup installs the demo's client too; --serve adds Ray Serve; --tests adds both and the test tools.
extras=demo
[ $SERVE = 1 ] && extras=demo,serve
[ $TESTS = 1 ] && extras=demo,serve,test
built_from=$(cat pyproject.toml constraints.txt src/pgml_plpy/__init__.py | sha256sum | cut -c1-64)
stamp=$VENV/.pgml-setup
recorded=$(cat "$stamp" 2>/dev/null || true)
current=0
if [ "${recorded%% *}" = "$built_from" ]; then
  current=1
  for e in ${extras//,/ }; do
    case ",${recorded#* }," in *",$e,"*) ;; *) current=0 ;; esac
  done
fi
if [ $current = 1 ]; then
  echo "setup: $VENV is up to date"
else
  rm -f "$stamp"
  pip install --upgrade pip
  "$VENV/bin/python" -c "import torch" 2>/dev/null || pip install "${TORCH_SPEC:-torch==2.13.0}"
  pip install -c constraints.txt -e ".[$extras]"
  imports="pgml_plpy, torch, transformers, psycopg"
  [ $SERVE = 1 ] && imports="$imports, ray.serve"
  "$VENV/bin/python" -c "import $imports" || { echo "setup: the venv $VENV is incomplete" >&2; exit 1; }
  echo "$built_from $extras" > "$stamp"
fi
# The server's OS user cannot write __pycache__ here: compile the package once for every backend.
"$VENV/bin/python" -m compileall -q src/pgml_plpy

if [ $TESTS = 1 ] && [ ! -d "$VENV/tf4/transformers" ]; then
  # transformers 4.x next to the venv's torch, to compare the re-implemented pipelines with 4.x.
  pip install --target "$VENV/tf4" --no-deps -r constraints-tf4.txt
fi

if [ "$(id -u)" = 0 ] && ! runuser -u postgres -- test -r "$VENV/pyvenv.cfg"; then
  echo "setup: the postgres OS user cannot read $VENV; move the checkout where it can (not under /root)" >&2
  exit 1
fi
echo "setup: ready ($VENV, PostgreSQL $PG_MAJOR)"
