-- Who may do what. plpython3u is untrusted: these functions run as the server's OS user, so
-- nothing is executable by PUBLIC, and a DBA grants one of two roles:
--   pgml_user:  run models (transform, transform_stream, embed, rank, chunk, similarity) and manage
--               its own backend's models (loaded_models, preload, unload, clear_cache);
--   pgml_admin: also tune, deploy, load_dataset, embed_table, validate, and change pgml.settings.
-- Schema USAGE alone calls nothing. The venv (pgml._venv, pgml.activate_venv) stays superuser-only.

DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'pgml_user') THEN
    CREATE ROLE pgml_user NOLOGIN;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'pgml_admin') THEN
    CREATE ROLE pgml_admin NOLOGIN;
  END IF;
END $$;
GRANT pgml_user TO pgml_admin;

REVOKE ALL ON SCHEMA pgml FROM PUBLIC;
GRANT USAGE ON SCHEMA pgml TO pgml_user;
GRANT CREATE ON SCHEMA pgml TO pgml_admin;  -- load_dataset's tables, tune's materialized snapshots

REVOKE ALL ON ALL ROUTINES IN SCHEMA pgml FROM PUBLIC;
DO $$
DECLARE
  routine regprocedure;
  grantee text;
BEGIN
  FOR routine, grantee IN
    SELECT p.oid::regprocedure, CASE WHEN p.proname = ANY (ARRAY[
             'transform', '_transform', 'transform_stream', '_transform_stream', 'embed', '_embed', 'rank',
             'chunk', 'cosine_similarity', 'cosine_distance', 'dot_product', '_dimension_mismatch',
             'loaded_models', 'preload', 'preload_embed', 'unload', 'clear_cache', 'clear_gpu_cache',
             'version', 'python_version', '_activate', '_venv', '_sql_version'])
           THEN 'pgml_user' ELSE 'pgml_admin' END
    FROM pg_catalog.pg_proc p
    WHERE p.pronamespace = 'pgml'::regnamespace
      AND p.proname <> ALL (ARRAY['activate_venv', '_setting_defaults'])
  LOOP
    EXECUTE pg_catalog.format('GRANT EXECUTE ON ROUTINE %s TO %I', routine, grantee);
  END LOOP;
END $$;

REVOKE ALL ON pgml.settings, pgml.projects, pgml.snapshots, pgml.models, pgml.deployments, pgml.files,
              pgml.logs, pgml.tune_runs, pgml.deployed_models FROM PUBLIC;
GRANT SELECT ON pgml.settings, pgml.projects, pgml.snapshots, pgml.models, pgml.deployments, pgml.files,
                pgml.logs, pgml.tune_runs, pgml.deployed_models TO pgml_user;
GRANT INSERT, UPDATE, DELETE ON pgml.settings, pgml.projects, pgml.snapshots, pgml.models, pgml.deployments,
                                pgml.files, pgml.logs TO pgml_admin;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA pgml TO pgml_admin;
