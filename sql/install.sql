-- pgml_plpy: install or upgrade (re-running it is the upgrade). Run as a superuser:
--   psql -v ON_ERROR_STOP=1 -v venv=/abs/path/to/venv -d DBNAME -f sql/install.sql
-- The venv must hold the pgml_plpy package for the server's Python (Debian 12: 3.11)
-- and be readable by the server's OS user. Everything happens in one transaction.
\set ON_ERROR_STOP 1
\if :{?venv}
\else
DO $$ BEGIN
  RAISE EXCEPTION 'pgml install: the venv is missing'
    USING ERRCODE = '22023', HINT = 'psql -v ON_ERROR_STOP=1 -v venv=/abs/path/to/venv -f sql/install.sql';
END $$;
\endif
SET client_min_messages = warning;

BEGIN;
CREATE EXTENSION IF NOT EXISTS plpython3u;
CREATE SCHEMA IF NOT EXISTS pgml;
COMMENT ON SCHEMA pgml IS 'pgml_plpy: Hugging Face models from SQL';

\ir functions/housekeeping.sql
SELECT pgml.activate_venv(:'venv');
\ir functions/settings.sql
\ir functions/transform.sql
\ir functions/chunk.sql
\ir functions/load_dataset.sql
\ir functions/embed.sql
\ir functions/vectors.sql
\ir functions/lifecycle.sql
\ir functions/tune.sql
\ir functions/predict.sql

\ir functions/roles.sql

-- Fails here, rolling everything back, when the venv cannot be used.
SELECT pgml.version() AS pgml_version;
COMMIT;
