-- Fine-tuning from tables: pgml.tune (PostgresML's function, one transaction), CALL pgml.tune_run (the
-- same, committing its progress as it goes), the model registry, and pgml.deploy.
--
-- The registry tables are created once and never dropped or rewritten here: re-running the install
-- keeps every project, model and file. Privileges are in roles.sql: pgml_user reads them
-- (pgml.transform serves a project's deployed model from pgml.files in any backend); no role writes
-- them directly but their owner: pgml.tune and pgml.deploy write through the SECURITY DEFINER
-- functions pgml._registry_* below, which check what they touch.

DO $$ BEGIN
  CREATE TYPE pgml.sampling AS ENUM ('random', 'last', 'stratified');
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;

DO $$ BEGIN
  CREATE TYPE pgml.strategy AS ENUM ('new_score', 'best_score', 'most_recent', 'rollback', 'specific');
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;

CREATE TABLE IF NOT EXISTS pgml.projects (
  id bigserial PRIMARY KEY,
  name text NOT NULL UNIQUE,
  task text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
COMMENT ON TABLE pgml.projects IS 'pgml.tune projects: a name (what pgml.transform serves) and its task';

CREATE TABLE IF NOT EXISTS pgml.snapshots (
  id bigserial PRIMARY KEY,
  relation_name text NOT NULL,
  y_column_name text[],
  test_size real NOT NULL,
  test_sampling pgml.sampling NOT NULL,
  materialized boolean NOT NULL DEFAULT false,
  columns jsonb,
  analysis jsonb,
  created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
COMMENT ON TABLE pgml.snapshots IS 'what a pgml.tune read: relation, columns, split, row counts (and with '
  'materialize_snapshot a copy in pgml.snapshot_<id>)';

CREATE TABLE IF NOT EXISTS pgml.models (
  id bigserial PRIMARY KEY,
  project_id bigint NOT NULL REFERENCES pgml.projects (id) ON DELETE CASCADE,
  snapshot_id bigint REFERENCES pgml.snapshots (id) ON DELETE SET NULL,
  task text NOT NULL,
  algorithm text NOT NULL DEFAULT 'transformers',
  runtime text NOT NULL DEFAULT 'python',
  base_model text NOT NULL,
  lora boolean NOT NULL DEFAULT false,
  hyperparams jsonb NOT NULL DEFAULT '{}',
  status text NOT NULL CHECK (status IN ('in_progress', 'successful', 'failed', 'cancelled')),
  metrics jsonb,
  progress jsonb,
  timings jsonb,
  error text,
  pid integer,
  backend_start timestamptz,
  created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS models_project_id_idx ON pgml.models (project_id);
-- Added by the upgrade that introduced it: the HMAC-SHA256 of the model's identity and files, keyed
-- with the server's key (src/pgml_plpy/tuning/signing.py). Models stored before are signed below.
ALTER TABLE pgml.models ADD COLUMN IF NOT EXISTS files_mac text;
COMMENT ON COLUMN pgml.models.files_mac IS 'HMAC-SHA256 (server key) of the model''s id, base model, LoRA flag, '
  'revision and files'' part checksums: serving refuses files the server''s tuning did not write';
COMMENT ON TABLE pgml.models IS 'one row per pgml.tune: status, base model, hyperparams, metrics on the test split, '
  'latest progress, timings';

CREATE TABLE IF NOT EXISTS pgml.deployments (
  id bigserial PRIMARY KEY,
  project_id bigint NOT NULL REFERENCES pgml.projects (id) ON DELETE CASCADE,
  model_id bigint NOT NULL REFERENCES pgml.models (id) ON DELETE CASCADE,
  strategy pgml.strategy NOT NULL,
  created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS deployments_project_id_idx ON pgml.deployments (project_id, id);
COMMENT ON TABLE pgml.deployments IS 'the latest row of a project is its deployed model';

CREATE TABLE IF NOT EXISTS pgml.files (
  id bigserial PRIMARY KEY,
  model_id bigint NOT NULL REFERENCES pgml.models (id) ON DELETE CASCADE,
  path text NOT NULL,
  part integer NOT NULL,
  sha256 text NOT NULL,
  data bytea NOT NULL,
  created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  UNIQUE (model_id, path, part)
);
-- Weights do not compress: store them out of line without trying.
ALTER TABLE pgml.files ALTER COLUMN data SET STORAGE EXTERNAL;
COMMENT ON TABLE pgml.files IS 'tuned models'' files (safetensors weights, config, tokenizer; a LoRA adapter) in '
  'parts with their SHA-256';

CREATE TABLE IF NOT EXISTS pgml.logs (
  id bigserial PRIMARY KEY,
  model_id bigint REFERENCES pgml.models (id) ON DELETE CASCADE,
  project_id bigint REFERENCES pgml.projects (id) ON DELETE CASCADE,
  created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  logs jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS logs_model_id_idx ON pgml.logs (model_id);
COMMENT ON TABLE pgml.logs IS 'training logs of pgml.tune: step, loss, learning rate, eval metrics, ETA';

-- Makes the server's key (pgml_plpy.key in the data directory, readable only by the server's OS user)
-- unless it exists, and signs the successful models that have no MAC: those stored before MACs
-- existed, which an upgrade keeps serving. Only its owner, the installing superuser, may run it:
-- it vouches for whatever those rows hold.
CREATE OR REPLACE FUNCTION pgml._sign_models() RETURNS integer
LANGUAGE plpython3u VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
if 'pgml_plpy' not in GD:
    plpy.execute('SELECT pgml._activate()')
return GD['pgml_plpy'].sign_models(plpy)
$$;
REVOKE ALL ON FUNCTION pgml._sign_models() FROM PUBLIC;
SELECT pgml._sign_models() AS tuned_models_signed;

-- ---------------------------------------------------------------------------------------------
-- Writing the registry. These run as their owner (the installing superuser), with a pinned
-- search_path; pgml_admin may call them (pgml.tune's own code does) but writes no registry table
-- itself. Each checks what it touches, so that calling one directly does no more than a tune or
-- pgml.deploy could: a run's rows are written only by the backend running it, while it runs; a
-- deployment only of a successful model with files. What makes stored files trustworthy is not
-- these checks but the MAC, which only the server's own code can compute.

-- The project of model_id, which this backend must be tuning now.
CREATE OR REPLACE FUNCTION pgml._registry_run(model_id bigint) RETURNS bigint
LANGUAGE plpgsql STABLE PARALLEL UNSAFE SECURITY DEFINER
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

-- Runs left in_progress by a backend that is gone (terminated, crashed) become failed.
CREATE OR REPLACE FUNCTION pgml._registry_sweep() RETURNS integer
LANGUAGE sql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
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

CREATE OR REPLACE FUNCTION pgml._registry_project(name text, task text) RETURNS bigint
LANGUAGE sql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
INSERT INTO pgml.projects (name, task) VALUES ($1, $2)
ON CONFLICT (name) DO UPDATE SET updated_at = clock_timestamp() RETURNING id
$$;

CREATE OR REPLACE FUNCTION pgml._registry_snapshot(relation_name text, y_column_name text[], test_size real,
                                                   test_sampling pgml.sampling, materialized boolean,
                                                   columns jsonb, analysis jsonb) RETURNS bigint
LANGUAGE sql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
INSERT INTO pgml.snapshots (relation_name, y_column_name, test_size, test_sampling, materialized, columns, analysis)
VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id
$$;

-- A run of this backend: in_progress, with the backend's pid and start time.
CREATE OR REPLACE FUNCTION pgml._registry_start(project_id bigint, snapshot_id bigint, task text, base_model text,
                                                hyperparams jsonb, lora boolean) RETURNS bigint
LANGUAGE sql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
INSERT INTO pgml.models (project_id, snapshot_id, task, base_model, hyperparams, lora, status, pid, backend_start)
SELECT $1, $2, $3, $4, $5, $6, 'in_progress', a.pid, a.backend_start
FROM pg_stat_get_activity(pg_backend_pid()) a RETURNING id
$$;

-- The run's latest progress on its row, and the record appended to pgml.logs.
CREATE OR REPLACE FUNCTION pgml._registry_progress(model_id bigint, log jsonb) RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  project bigint := pgml._registry_run(model_id);
BEGIN
  UPDATE pgml.models SET progress = log, updated_at = clock_timestamp() WHERE id = model_id;
  INSERT INTO pgml.logs (model_id, project_id, logs) VALUES (model_id, project, log);
END
$$;

-- One part of one of the run's files (the tune signs what it wrote when it finishes).
CREATE OR REPLACE FUNCTION pgml._registry_file(model_id bigint, path text, part integer, sha256 text, data bytea)
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  PERFORM pgml._registry_run(model_id);
  INSERT INTO pgml.files (model_id, path, part, sha256, data) VALUES (model_id, path, part, sha256, data);
END
$$;

CREATE OR REPLACE FUNCTION pgml._registry_finish(model_id bigint, metrics jsonb, timings jsonb, files_mac text)
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  PERFORM pgml._registry_run(model_id);
  UPDATE pgml.models m SET status = 'successful', metrics = _registry_finish.metrics,
         timings = _registry_finish.timings, files_mac = _registry_finish.files_mac, updated_at = clock_timestamp()
  WHERE m.id = model_id;
END
$$;

CREATE OR REPLACE FUNCTION pgml._registry_fail(model_id bigint, status text, error text) RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
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

-- Serializes the deployment decisions of one project (the row lock lasts until the transaction ends).
CREATE OR REPLACE FUNCTION pgml._registry_lock(project_id bigint) RETURNS void
LANGUAGE sql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
SELECT FROM pgml.projects WHERE id = $1 FOR UPDATE
$$;

-- Deploys a successful model that has files (its project's next deployments row).
CREATE OR REPLACE FUNCTION pgml._registry_deploy(model_id bigint, strategy pgml.strategy)
RETURNS TABLE (project text, algorithm text)
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
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



-- Runs with their latest progress, and whether each is the deployed model of its project.
CREATE OR REPLACE VIEW pgml.tune_runs AS
SELECT m.id AS model_id, p.name AS project, m.task, m.base_model, m.lora, m.status,
       (m.progress->>'step')::bigint AS step, (m.progress->>'total_steps')::bigint AS total_steps,
       (m.progress->>'loss')::float8 AS loss, (m.progress->>'learning_rate')::float8 AS learning_rate,
       (m.progress->>'eta_seconds')::float8 AS eta_seconds, m.metrics, m.error,
       m.id = (SELECT d.model_id FROM pgml.deployments d WHERE d.project_id = p.id ORDER BY d.id DESC LIMIT 1)
         AS deployed,
       m.created_at, m.updated_at
FROM pgml.models m JOIN pgml.projects p ON p.id = m.project_id;

-- PostgresML's view: each project's deployed model.
CREATE OR REPLACE VIEW pgml.deployed_models AS
SELECT m.id, p.name, p.task, m.algorithm, m.runtime, d.created_at AS deployed_at
FROM pgml.projects p
JOIN LATERAL (SELECT * FROM pgml.deployments d WHERE d.project_id = p.id ORDER BY d.id DESC LIMIT 1) d ON true
JOIN pgml.models m ON m.id = d.model_id;

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
a = args  # by position: the result column task has the name of the argument task
return GD['pgml_plpy'].tune(plpy, a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], procedure=False)
$$;

-- PostgresML's signature and defaults. One transaction: progress arrives as NOTICEs; an error or a
-- cancel rolls the whole run back. VOLATILE, PARALLEL UNSAFE: it writes the registry.
-- Not pinned to a search_path, deliberately: relation_name is a name in the caller's search_path, as
-- in PostgresML, so it is resolved here, as the caller sees it (everything else is schema-qualified),
-- and the pinned pgml._tune gets its oid.
CREATE OR REPLACE FUNCTION pgml.tune(project_name text, task text DEFAULT NULL, relation_name text DEFAULT NULL,
                                     y_column_name text DEFAULT NULL, model_name text DEFAULT NULL,
                                     hyperparams jsonb DEFAULT '{}', test_size real DEFAULT 0.25,
                                     test_sampling pgml.sampling DEFAULT 'stratified',
                                     automatic_deploy boolean DEFAULT true,
                                     materialize_snapshot boolean DEFAULT false)
RETURNS TABLE (status text, task text, algorithm text, deployed boolean)
LANGUAGE sql VOLATILE PARALLEL UNSAFE COST 100000000 ROWS 1
AS $$
SELECT * FROM pgml._tune($1, $2, $3::pg_catalog.regclass::pg_catalog.oid, $4, $5, $6, $7, $8, $9, $10)
$$;

-- The same arguments; commits the registered run, each progress report and the result, so another
-- session can follow it (SELECT * FROM pgml.tune_runs). A cancel marks the run cancelled. It commits,
-- so it cannot carry SET search_path: it resolves relation_name in the caller's search_path first, then
-- sets search_path locally in each of its transactions.
CREATE OR REPLACE PROCEDURE pgml.tune_run(project_name text, task text DEFAULT NULL, relation_name text DEFAULT NULL,
                                          y_column_name text DEFAULT NULL, model_name text DEFAULT NULL,
                                          hyperparams jsonb DEFAULT '{}', test_size real DEFAULT 0.25,
                                          test_sampling pgml.sampling DEFAULT 'stratified',
                                          automatic_deploy boolean DEFAULT true,
                                          materialize_snapshot boolean DEFAULT false,
                                          INOUT model_id bigint DEFAULT NULL, INOUT status text DEFAULT NULL,
                                          INOUT deployed boolean DEFAULT NULL)
LANGUAGE plpython3u
AS $$
if 'pgml_plpy' not in GD:
    plpy.execute('SELECT pgml._activate()')
a = args
return GD['pgml_plpy'].tune(plpy, a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], procedure=True)
$$;

-- PostgresML's pgml.deploy: a model by id (deploy it, or roll back to it), or by strategy.
CREATE OR REPLACE FUNCTION pgml.deploy(model_id bigint)
RETURNS TABLE (project text, strategy text, algorithm text)
LANGUAGE plpython3u VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
if 'pgml_plpy' not in GD:
    plpy.execute('SELECT pgml._activate()')
return GD['pgml_plpy'].deploy(plpy, model_id)
$$;

CREATE OR REPLACE FUNCTION pgml.deploy(project_name text, strategy pgml.strategy, algorithm text DEFAULT NULL)
RETURNS TABLE (project text, strategy text, algorithm text)
LANGUAGE plpython3u VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
if 'pgml_plpy' not in GD:
    plpy.execute('SELECT pgml._activate()')
a = args
return GD['pgml_plpy'].deploy_strategy(plpy, a[0], a[1], a[2])
$$;
