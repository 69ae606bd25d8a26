-- Who may do what. plpython3u is untrusted: these functions run as the server's OS user, so
-- nothing is executable by PUBLIC, and a DBA grants one of two roles:
--   pgml_user:  run models (transform, transform_stream, predict, embed, rank, chunk), vector search (the
--               similarity functions, nearest), manage its own backend's models (loaded_models,
--               preload, unload, clear_cache), and keep its own tables' embeddings in sync
--               (create/alter/drop/run_vectorizer: each checks the caller's rights on the table and
--               the vectorizer);
--   pgml_admin: also tune, deploy, load_dataset, embed_table, validate, change the limit settings and
--               delete projects and models.
-- Members of pgml_admin cannot run code as the server: the trust settings are the superuser's (the
-- settings trigger), no role but the owner writes the registry (tune and deploy go through the
-- SECURITY DEFINER pgml._registry_* functions) and a model is served only with the MAC of the
-- server's own tuning, and no role may create objects in schema pgml. Schema USAGE alone calls
-- nothing. The venv (pgml._venv, pgml.activate_venv) stays superuser-only.
-- Everything here is stated in full on every install: privileges earlier releases granted are
-- revoked first. This runs before the functions are made (sql/install.sql); each carries its grant.

DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'pgml_user') THEN
    CREATE ROLE pgml_user NOLOGIN;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'pgml_admin') THEN
    CREATE ROLE pgml_admin NOLOGIN;
  END IF;
END $$;
GRANT pgml_user TO pgml_admin;

-- Anything in schema pgml that others call or read by name must belong to a superuser: a routine,
-- operator or type of another role could shadow pgml's own (pgml.embed(varchar, ...) chosen over
-- pgml.embed(text, ...)) or run its owner's code for whoever uses it, and a registry table of another
-- role (made, or renamed into place, before this install adopted it) would be its to rewrite. Earlier
-- releases let pgml_admin create objects there.
-- The registry and the settings (every table and view the install makes is in this list or the
-- vectorizers'): pgml_user reads them (serving restores a deployed model's files in the caller's backend). pgml_admin changes
-- the value of a setting (the trigger keeps the trust settings for superusers) and deletes projects
-- and models (their deployments, files and logs go with them: that stops serving a model or falls
-- back to an earlier deployment of a signed one, never serves weights the server did not write). The
-- rest is written only through the _registry_* functions.
DO $$
DECLARE
  registry text[] := ARRAY['settings', 'projects', 'snapshots', 'models', 'deployments', 'files', 'logs',
                           'tune_runs', 'deployed_models'];
  -- The vectorizers' bookkeeping holds keys of the users' rows: its owner's alone (the view shows each
  -- role its own).
  private text[] := ARRAY['_vectorizers', '_vectorizer_queue'];
  foreign_objects text;
  relations text;
BEGIN
  SELECT string_agg(what || ' (owner ' || owner || ')', ', ' ORDER BY what) INTO foreign_objects FROM (
    SELECT p.oid::pg_catalog.regprocedure::text AS what, r.rolname AS owner, r.rolsuper
    FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_roles r ON r.oid = p.proowner
    WHERE p.pronamespace = 'pgml'::pg_catalog.regnamespace
    UNION ALL
    SELECT o.oid::pg_catalog.regoperator::text, r.rolname, r.rolsuper
    FROM pg_catalog.pg_operator o JOIN pg_catalog.pg_roles r ON r.oid = o.oprowner
    WHERE o.oprnamespace = 'pgml'::pg_catalog.regnamespace
    UNION ALL  -- standalone types (a table's row type belongs with its table)
    SELECT t.oid::pg_catalog.regtype::text, r.rolname, r.rolsuper
    FROM pg_catalog.pg_type t JOIN pg_catalog.pg_roles r ON r.oid = t.typowner
    WHERE t.typnamespace = 'pgml'::pg_catalog.regnamespace AND t.typrelid = 0
      AND NOT EXISTS (SELECT FROM pg_catalog.pg_type e WHERE e.oid = t.typelem AND e.typrelid <> 0)
    UNION ALL
    SELECT c.oid::pg_catalog.regclass::text, r.rolname, r.rolsuper
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_roles r ON r.oid = c.relowner
    WHERE c.relnamespace = 'pgml'::pg_catalog.regnamespace
      AND c.relname = ANY (registry || private || 'vectorizers'::text)
  ) o WHERE NOT o.rolsuper;
  IF foreign_objects IS NOT NULL THEN
    RAISE EXCEPTION 'pgml install: schema pgml holds objects of roles that are not superusers: %', foreign_objects
      USING ERRCODE = '42501',
            HINT = 'They could run their owner''s code for whoever calls pgml. Look at them, drop them (DROP FUNCTION '
                   '...), and re-run the install.';
  END IF;
  SELECT string_agg(pg_catalog.format('pgml.%I', name), ', ') INTO relations FROM unnest(registry) AS name;
  EXECUTE pg_catalog.format('REVOKE ALL ON %s FROM PUBLIC, pgml_user, pgml_admin', relations);
  EXECUTE pg_catalog.format('GRANT SELECT ON %s TO pgml_user', relations);
  SELECT string_agg(pg_catalog.format('pgml.%I', name), ', ') INTO relations FROM unnest(private) AS name;
  EXECUTE pg_catalog.format('REVOKE ALL ON %s, pgml.vectorizers FROM PUBLIC, pgml_user, pgml_admin', relations);
  GRANT SELECT ON pgml.vectorizers TO pgml_user;
END $$;
GRANT UPDATE (value) ON pgml.settings TO pgml_admin;
GRANT DELETE ON pgml.projects, pgml.models TO pgml_admin;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA pgml FROM PUBLIC, pgml_user, pgml_admin;

-- The schema: USAGE for pgml_user; CREATE for nobody but its owner (earlier releases granted it to
-- pgml_admin, and a DBA may have granted it to others).
REVOKE ALL ON SCHEMA pgml FROM PUBLIC;
DO $$
DECLARE
  grantee regrole;
BEGIN
  FOR grantee IN
    SELECT a.grantee::regrole FROM pg_catalog.pg_namespace n, pg_catalog.aclexplode(n.nspacl) a
    WHERE n.nspname = 'pgml' AND a.privilege_type = 'CREATE' AND a.grantee NOT IN (0, n.nspowner)
  LOOP
    EXECUTE pg_catalog.format('REVOKE CREATE ON SCHEMA pgml FROM %s', grantee);
  END LOOP;
END $$;
GRANT USAGE ON SCHEMA pgml TO pgml_user;

-- Routines: each function's grant is in the table of the SQL API (src/pgml_plpy/sqlapi.py), and
-- next to the function in sql/functions/, which the install runs after this file.
REVOKE ALL ON ALL ROUTINES IN SCHEMA pgml FROM PUBLIC, pgml_user, pgml_admin;
