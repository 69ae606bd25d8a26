-- The model registry of pgml.tune, CALL pgml.tune_run and pgml.deploy (their functions, and the
-- pgml._registry_* functions that write it, are in sql/functions/tune.sql).
--
-- The registry tables are created once and never dropped or rewritten here: re-running the install
-- keeps every project, model and file. Privileges are in roles.sql: pgml_user reads them
-- (pgml.transform serves a project's deployed model from pgml.files in any backend); no role writes
-- them directly but their owner: pgml.tune and pgml.deploy write through the SECURITY DEFINER
-- functions pgml._registry_*, which check what they touch.

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
-- with the server's key (src/pgml_plpy/tuning/signing.py). Models stored before are signed by
-- the install (pgml._sign_models).
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
