# PostgreSQL 15 (official image) with plpython3u, pgvector and pgml_plpy installed in POSTGRES_DB at init.
# It runs the same scripts/setup.sh as CI, so CI proves the install steps.
#   docker build -t pgml-plpy . && docker run -e POSTGRES_PASSWORD=pw -p 5432:5432 pgml-plpy
FROM postgres:15-bookworm

# pgvector comes from the PostgreSQL apt repository (apt.postgresql.org) the official image is set up with;
# CREATE EXTENSION vector in a database that wants it.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      postgresql-plpython3-15 postgresql-15-pgvector python3-venv \
 && rm -rf /var/lib/apt/lists/*

COPY . /opt/pgml_plpy
WORKDIR /opt/pgml_plpy
# The CPU build of torch; build with --build-arg TORCH_SPEC=torch==2.13.0 for a CUDA build.
ARG TORCH_SPEC=torch==2.13.0+cpu
ENV PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu \
    HF_HUB_DISABLE_TELEMETRY=1
RUN TORCH_SPEC="$TORCH_SPEC" PG_MAJOR=15 bash scripts/setup.sh && chmod -R a+rX /opt/pgml_plpy
COPY docker/install-pgml.sh /docker-entrypoint-initdb.d/50-pgml.sh
