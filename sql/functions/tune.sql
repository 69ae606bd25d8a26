-- Generated from src/pgml_plpy/sqlapi.py by scripts/gen_sql.py: edit the table, then run .venv/bin/python scripts/gen_sql.py
-- Fine-tuning from tables: pgml.tune (PostgresML's function, one transaction), CALL pgml.tune_run (the
-- same, committing its progress as it goes), pgml.deploy, and the functions that write the
-- registry. The registry's tables are in sql/schema/tune.sql.

-- Makes the server's key (pgml_plpy.key in the data directory, readable only by the server's OS
-- user) unless it exists, and signs the successful models that have no MAC: those stored before MACs
-- existed, which an upgrade keeps serving. Only its owner, the installing superuser, may run it
-- (sql/install.sql does): it vouches for whatever those rows hold.
CREATE OR REPLACE FUNCTION pgml._sign_models()
RETURNS integer
LANGUAGE plpython3u VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
if 'pgml_plpy' not in GD:
    plpy.execute('SELECT pgml._activate()')
return GD['pgml_plpy'].sign_models(plpy)
$$;
COMMENT ON FUNCTION pgml._sign_models() IS 'makes the server''s key and signs the models stored before signing';
REVOKE ALL ON FUNCTION pgml._sign_models() FROM PUBLIC, pgml_user, pgml_admin;

-- Writing the registry. These run as their owner (the installing superuser), with a pinned
-- search_path; pgml_admin may call them (pgml.tune's own code does) but writes no registry table
-- itself. Each checks what it touches, so that calling one directly does no more than a tune or
-- pgml.deploy could: a run's rows are written only by the backend running it, while it runs; a
-- deployment only of a successful model with files. What makes stored files trustworthy is not
-- these checks but the MAC, which only the server's own code can compute.
--
-- The project of model_id, which this backend must be tuning now (the owner's only: the other
-- _registry_* functions call it as owner).
CREATE OR REPLACE FUNCTION pgml._registry_run(model_id bigint)
RETURNS bigint
LANGUAGE plpgsql STABLE SECURITY DEFINER PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  project bigint;
BEGIN
  SELECT m.project_id INTO project FROM pgml.models m
  WHERE m.id = _registry_run.model_id AND m.status = 'in_progress' AND m.pid = pg_backend_pid()
    AND m.backend_start = (SELECT a.backend_start FROM pg_stat_get_activity(pg_backend_pid()) a);
  IF NOT FOUND THEN
    RAISE EXCEPTION 'model % is not being tuned by this backend', model_id
      USING ERRCODE = '42501', HINT = 'The registry is written by pgml.tune itself, for the run it registered.';
  END IF;
  RETURN project;
END
$$;
COMMENT ON FUNCTION pgml._registry_run(bigint) IS 'the project of a run this backend is tuning now';
REVOKE ALL ON FUNCTION pgml._registry_run(bigint) FROM PUBLIC, pgml_user, pgml_admin;

-- Runs left in_progress by a backend that is gone (terminated, crashed) become failed.
CREATE OR REPLACE FUNCTION pgml._registry_sweep()
RETURNS integer
LANGUAGE sql VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
WITH swept AS (
  UPDATE pgml.models m SET status = 'failed', updated_at = clock_timestamp(),
         error = 'the backend running it ended before it finished (terminated or crashed)'
  WHERE m.status = 'in_progress' AND NOT EXISTS (
    SELECT FROM pg_stat_get_activity(NULL) a WHERE a.pid = m.pid AND a.backend_start = m.backend_start)
  RETURNING 1)
SELECT count(*)::integer FROM swept
$$;
COMMENT ON FUNCTION pgml._registry_sweep() IS 'marks failed the runs of backends that are gone';
REVOKE ALL ON FUNCTION pgml._registry_sweep() FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON FUNCTION pgml._registry_sweep() TO pgml_admin;

CREATE OR REPLACE FUNCTION pgml._registry_project(name text, task text)
RETURNS bigint
LANGUAGE sql VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
INSERT INTO pgml.projects (name, task) VALUES ($1, $2)
ON CONFLICT (name) DO UPDATE SET updated_at = clock_timestamp() RETURNING id
$$;
COMMENT ON FUNCTION pgml._registry_project(text, text) IS 'a project (made unless it exists)';
REVOKE ALL ON FUNCTION pgml._registry_project(text, text) FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON FUNCTION pgml._registry_project(text, text) TO pgml_admin;

CREATE OR REPLACE FUNCTION pgml._registry_snapshot(relation_name text, y_column_name text[], test_size real,
                                                   test_sampling pgml.sampling, materialized boolean,
                                                   columns jsonb, analysis jsonb)
RETURNS bigint
LANGUAGE sql VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
INSERT INTO pgml.snapshots (
  relation_name, y_column_name, test_size, test_sampling, materialized, columns, analysis)
VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id
$$;
COMMENT ON FUNCTION pgml._registry_snapshot(text, text[], real, pgml.sampling, boolean, jsonb, jsonb) IS 'what a tune read';
REVOKE ALL ON FUNCTION pgml._registry_snapshot(text, text[], real, pgml.sampling, boolean, jsonb, jsonb) FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON FUNCTION pgml._registry_snapshot(text, text[], real, pgml.sampling, boolean, jsonb, jsonb) TO pgml_admin;

-- A run of this backend: in_progress, with the backend's pid and start time.
CREATE OR REPLACE FUNCTION pgml._registry_start(project_id bigint, snapshot_id bigint, task text,
                                                base_model text, hyperparams jsonb, lora boolean)
RETURNS bigint
LANGUAGE sql VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
INSERT INTO pgml.models (
  project_id, snapshot_id, task, base_model, hyperparams, lora, status, pid, backend_start)
SELECT $1, $2, $3, $4, $5, $6, 'in_progress', a.pid, a.backend_start
FROM pg_stat_get_activity(pg_backend_pid()) a RETURNING id
$$;
COMMENT ON FUNCTION pgml._registry_start(bigint, bigint, text, text, jsonb, boolean) IS 'a run of this backend';
REVOKE ALL ON FUNCTION pgml._registry_start(bigint, bigint, text, text, jsonb, boolean) FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON FUNCTION pgml._registry_start(bigint, bigint, text, text, jsonb, boolean) TO pgml_admin;

-- The run's latest progress on its row, and the record appended to pgml.logs.
CREATE OR REPLACE FUNCTION pgml._registry_progress(model_id bigint, log jsonb)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  project bigint := pgml._registry_run(model_id);
BEGIN
  UPDATE pgml.models SET progress = log, updated_at = clock_timestamp() WHERE id = model_id;
  INSERT INTO pgml.logs (model_id, project_id, logs) VALUES (model_id, project, log);
END
$$;
COMMENT ON FUNCTION pgml._registry_progress(bigint, jsonb) IS 'a run''s progress and its log record';
REVOKE ALL ON FUNCTION pgml._registry_progress(bigint, jsonb) FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON FUNCTION pgml._registry_progress(bigint, jsonb) TO pgml_admin;

-- One part of one of the run's files (the tune signs what it wrote when it finishes).
CREATE OR REPLACE FUNCTION pgml._registry_file(model_id bigint, path text, part integer, sha256 text,
                                               data bytea)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  PERFORM pgml._registry_run(model_id);
  INSERT INTO pgml.files (model_id, path, part, sha256, data) VALUES (model_id, path, part, sha256, data);
END
$$;
COMMENT ON FUNCTION pgml._registry_file(bigint, text, integer, text, bytea) IS 'one part of one of a run''s files';
REVOKE ALL ON FUNCTION pgml._registry_file(bigint, text, integer, text, bytea) FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON FUNCTION pgml._registry_file(bigint, text, integer, text, bytea) TO pgml_admin;

CREATE OR REPLACE FUNCTION pgml._registry_finish(model_id bigint, metrics jsonb, timings jsonb,
                                                 files_mac text)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  PERFORM pgml._registry_run(model_id);
  UPDATE pgml.models m SET status = 'successful', metrics = _registry_finish.metrics,
         timings = _registry_finish.timings, files_mac = _registry_finish.files_mac, updated_at = clock_timestamp()
  WHERE m.id = model_id;
END
$$;
COMMENT ON FUNCTION pgml._registry_finish(bigint, jsonb, jsonb, text) IS 'a run finished: its metrics, timings and MAC';
REVOKE ALL ON FUNCTION pgml._registry_finish(bigint, jsonb, jsonb, text) FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON FUNCTION pgml._registry_finish(bigint, jsonb, jsonb, text) TO pgml_admin;

CREATE OR REPLACE FUNCTION pgml._registry_fail(model_id bigint, status text, error text)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF status NOT IN ('failed', 'cancelled') THEN
    RAISE EXCEPTION 'a run ends failed or cancelled, not %', status USING ERRCODE = '22023';
  END IF;
  PERFORM pgml._registry_run(model_id);
  UPDATE pgml.models m SET status = _registry_fail.status, error = _registry_fail.error,
         updated_at = clock_timestamp()
  WHERE m.id = model_id;
END
$$;
COMMENT ON FUNCTION pgml._registry_fail(bigint, text, text) IS 'a run failed or cancelled';
REVOKE ALL ON FUNCTION pgml._registry_fail(bigint, text, text) FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON FUNCTION pgml._registry_fail(bigint, text, text) TO pgml_admin;

-- Serializes the deployment decisions of one project (the row lock lasts until the transaction ends).
CREATE OR REPLACE FUNCTION pgml._registry_lock(project_id bigint)
RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
SELECT FROM pgml.projects WHERE id = $1 FOR UPDATE
$$;
COMMENT ON FUNCTION pgml._registry_lock(bigint) IS 'serializes the deployment decisions of a project';
REVOKE ALL ON FUNCTION pgml._registry_lock(bigint) FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON FUNCTION pgml._registry_lock(bigint) TO pgml_admin;

-- Deploys a successful model that has files (its project's next deployments row).
CREATE OR REPLACE FUNCTION pgml._registry_deploy(model_id bigint, strategy pgml.strategy)
RETURNS TABLE (project text, algorithm text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  m record;
BEGIN
  SELECT mm.id, mm.project_id, mm.status, mm.algorithm, p.name INTO m
  FROM pgml.models mm JOIN pgml.projects p ON p.id = mm.project_id WHERE mm.id = _registry_deploy.model_id;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'there is no model %', model_id
      USING ERRCODE = '42704', HINT = 'Models are listed in pgml.models (and pgml.tune_runs).';
  END IF;
  IF m.status <> 'successful' OR NOT EXISTS (SELECT FROM pgml.files f WHERE f.model_id = m.id) THEN
    RAISE EXCEPTION 'model % cannot be deployed: its tune is %', model_id, m.status
      USING ERRCODE = '55000', HINT = 'Only a successful tune''s model can be deployed.';
  END IF;
  PERFORM pgml._registry_lock(m.project_id);
  INSERT INTO pgml.deployments (project_id, model_id, strategy) VALUES (m.project_id, m.id, strategy);
  RETURN QUERY SELECT m.name, m.algorithm;
END
$$;
COMMENT ON FUNCTION pgml._registry_deploy(bigint, pgml.strategy) IS 'deploys a successful model that has files';
REVOKE ALL ON FUNCTION pgml._registry_deploy(bigint, pgml.strategy) FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON FUNCTION pgml._registry_deploy(bigint, pgml.strategy) TO pgml_admin;

CREATE OR REPLACE FUNCTION pgml._tune(project_name text, task text, relation oid, y_column_name text,
                                      model_name text, hyperparams jsonb, test_size real,
                                      test_sampling pgml.sampling, automatic_deploy boolean,
                                      materialize_snapshot boolean)
RETURNS TABLE (status text, task text, algorithm text, deployed boolean)
LANGUAGE plpython3u VOLATILE PARALLEL UNSAFE COST 100000000 ROWS 1
SET search_path = pg_catalog, pg_temp
SET synchronize_seqscans = off  -- test_sampling 'last': the relation read from its start
AS $$
if 'pgml_plpy' not in GD:
    plpy.execute('SELECT pgml._activate()')
return GD['pgml_plpy'].tune(plpy, *args, procedure=False)
$$;
COMMENT ON FUNCTION pgml._tune(text, text, oid, text, text, jsonb, real, pgml.sampling, boolean, boolean) IS 'pgml.tune''s PL/Python body';
REVOKE ALL ON FUNCTION pgml._tune(text, text, oid, text, text, jsonb, real, pgml.sampling, boolean, boolean) FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON FUNCTION pgml._tune(text, text, oid, text, text, jsonb, real, pgml.sampling, boolean, boolean) TO pgml_admin;

-- PostgresML's signature and defaults. One transaction: progress arrives as NOTICEs; an error or a
-- cancel rolls the whole run back. VOLATILE, PARALLEL UNSAFE: it writes the registry.
-- Not pinned to a search_path, deliberately: relation_name is a name in the caller's search_path, as
-- in PostgresML, so it is resolved here, as the caller sees it (everything else is schema-qualified),
-- and the pinned pgml._tune gets its oid.
CREATE OR REPLACE FUNCTION pgml.tune(project_name text, task text DEFAULT NULL,
                                     relation_name text DEFAULT NULL, y_column_name text DEFAULT NULL,
                                     model_name text DEFAULT NULL, hyperparams jsonb DEFAULT '{}',
                                     test_size real DEFAULT 0.25,
                                     test_sampling pgml.sampling DEFAULT 'stratified',
                                     automatic_deploy boolean DEFAULT true,
                                     materialize_snapshot boolean DEFAULT false)
RETURNS TABLE (status text, task text, algorithm text, deployed boolean)
LANGUAGE sql VOLATILE PARALLEL UNSAFE COST 100000000 ROWS 1
AS $$
SELECT * FROM pgml._tune($1, $2, $3::pg_catalog.regclass::pg_catalog.oid, $4, $5, $6, $7, $8, $9, $10)
$$;
COMMENT ON FUNCTION pgml.tune(text, text, text, text, text, jsonb, real, pgml.sampling, boolean, boolean) IS 'PostgresML''s pgml.tune: fine-tunes a model on a table, in one transaction';
REVOKE ALL ON FUNCTION pgml.tune(text, text, text, text, text, jsonb, real, pgml.sampling, boolean, boolean) FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON FUNCTION pgml.tune(text, text, text, text, text, jsonb, real, pgml.sampling, boolean, boolean) TO pgml_admin;

-- The same arguments; commits the registered run, each progress report and the result, so another
-- session can follow it (SELECT * FROM pgml.tune_runs). A cancel marks the run cancelled. It commits,
-- so it cannot carry SET search_path: it resolves relation_name in the caller's search_path first, then
-- sets search_path locally in each of its transactions.
CREATE OR REPLACE PROCEDURE pgml.tune_run(project_name text, task text DEFAULT NULL,
                                          relation_name text DEFAULT NULL, y_column_name text DEFAULT NULL,
                                          model_name text DEFAULT NULL, hyperparams jsonb DEFAULT '{}',
                                          test_size real DEFAULT 0.25,
                                          test_sampling pgml.sampling DEFAULT 'stratified',
                                          automatic_deploy boolean DEFAULT true,
                                          materialize_snapshot boolean DEFAULT false,
                                          INOUT model_id bigint DEFAULT NULL, INOUT status text DEFAULT NULL,
                                          INOUT deployed boolean DEFAULT NULL)
LANGUAGE plpython3u
AS $$
if 'pgml_plpy' not in GD:
    plpy.execute('SELECT pgml._activate()')
return GD['pgml_plpy'].tune(plpy, *args[:10], procedure=True)
$$;
COMMENT ON PROCEDURE pgml.tune_run(text, text, text, text, text, jsonb, real, pgml.sampling, boolean, boolean, bigint, text, boolean) IS 'pgml.tune as a procedure that commits its progress as it goes';
REVOKE ALL ON PROCEDURE pgml.tune_run(text, text, text, text, text, jsonb, real, pgml.sampling, boolean, boolean, bigint, text, boolean) FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON PROCEDURE pgml.tune_run(text, text, text, text, text, jsonb, real, pgml.sampling, boolean, boolean, bigint, text, boolean) TO pgml_admin;

-- PostgresML's pgml.deploy: a model by id (deploy it, or roll back to it), or by strategy.
CREATE OR REPLACE FUNCTION pgml.deploy(model_id bigint)
RETURNS TABLE (project text, strategy text, algorithm text)
LANGUAGE plpython3u VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
if 'pgml_plpy' not in GD:
    plpy.execute('SELECT pgml._activate()')
return GD['pgml_plpy'].deploy(plpy, *args)
$$;
COMMENT ON FUNCTION pgml.deploy(bigint) IS 'deploys one model (or rolls back to it)';
REVOKE ALL ON FUNCTION pgml.deploy(bigint) FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON FUNCTION pgml.deploy(bigint) TO pgml_admin;

CREATE OR REPLACE FUNCTION pgml.deploy(project_name text, strategy pgml.strategy, algorithm text DEFAULT NULL)
RETURNS TABLE (project text, strategy text, algorithm text)
LANGUAGE plpython3u VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
if 'pgml_plpy' not in GD:
    plpy.execute('SELECT pgml._activate()')
return GD['pgml_plpy'].deploy_strategy(plpy, *args)
$$;
COMMENT ON FUNCTION pgml.deploy(text, pgml.strategy, text) IS 'deploys a project''s model chosen by strategy';
REVOKE ALL ON FUNCTION pgml.deploy(text, pgml.strategy, text) FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON FUNCTION pgml.deploy(text, pgml.strategy, text) TO pgml_admin;
