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

-- Types, tables and views (hand-written, idempotent), then the roles and the tables' grants.
\ir schema/settings.sql
\ir schema/lifecycle.sql
\ir schema/tune.sql
\ir schema/vectorizer.sql
\ir schema/roles.sql
-- Every function with its grant, generated from src/pgml_plpy/sqlapi.py by scripts/gen_sql.py.
\ir functions/all.sql
SELECT pgml.activate_venv(:'venv');

-- pgml.settings checks each new value (so that a typo cannot break every call, and that only a
-- superuser adds, changes or removes a trust setting); new settings get their defaults, values a DBA
-- changed stay.
CREATE OR REPLACE TRIGGER check_setting BEFORE INSERT OR UPDATE OR DELETE ON pgml.settings
FOR EACH ROW EXECUTE FUNCTION pgml._check_setting();
INSERT INTO pgml.settings (name, value, description)
SELECT name, value::jsonb, description FROM pgml._setting_defaults()
ON CONFLICT (name) DO UPDATE SET description = EXCLUDED.description;
-- The server's key for signing tuned models (made unless it exists), and the models stored before
-- signing existed signed.
SELECT pgml._sign_models() AS tuned_models_signed;
-- A source table dropped (DROP TABLE, DROP SCHEMA ... CASCADE, DROP OWNED) takes its vectorizers along;
-- an ALTER TABLE of a source (a key column renamed, say) re-creates their triggers.
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_catalog.pg_event_trigger WHERE evtname = 'pgml_vectorizer_sources_dropped') THEN
    CREATE EVENT TRIGGER pgml_vectorizer_sources_dropped ON sql_drop
      EXECUTE FUNCTION pgml._vectorizer_sources_dropped();
  END IF;
  IF NOT EXISTS (SELECT FROM pg_catalog.pg_event_trigger WHERE evtname = 'pgml_vectorizer_sources_altered') THEN
    CREATE EVENT TRIGGER pgml_vectorizer_sources_altered ON ddl_command_end WHEN TAG IN ('ALTER TABLE')
      EXECUTE FUNCTION pgml._vectorizer_sources_altered();
  END IF;
END $$;

-- Fails here, rolling everything back, when the venv cannot be used.
SELECT pgml.version() AS pgml_version;
COMMIT;
