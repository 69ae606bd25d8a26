-- Generated from src/pgml_plpy/sqlapi.py by scripts/gen_sql.py: edit the table, then run .venv/bin/python scripts/gen_sql.py
-- pgml.transform: PostgresML's four overloads (task TEXT or JSONB; inputs TEXT[] or JSONB[]),
-- each a one-line SQL wrapper over pgml._transform.
-- `cache` is accepted for compatibility: models are always cached per backend.
-- COST as PostgresML, so that LIMIT and WHERE apply before the call.

CREATE OR REPLACE FUNCTION pgml._transform(task text, task_is_json boolean, args jsonb, inputs text[],
                                           inputs_are_json boolean)
RETURNS jsonb
LANGUAGE plpython3u VOLATILE PARALLEL UNSAFE COST 10000000
SET search_path = pg_catalog, pg_temp
AS $$
if 'pgml_plpy' not in GD:
    plpy.execute('SELECT pgml._activate()')
return GD['pgml_plpy'].transform(plpy, *args)
$$;
COMMENT ON FUNCTION pgml._transform(text, boolean, jsonb, text[], boolean) IS 'pgml.transform''s PL/Python body';
REVOKE ALL ON FUNCTION pgml._transform(text, boolean, jsonb, text[], boolean) FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON FUNCTION pgml._transform(text, boolean, jsonb, text[], boolean) TO pgml_user;

CREATE OR REPLACE FUNCTION pgml.transform(task jsonb, args jsonb DEFAULT '{}', inputs text[] DEFAULT '{}',
                                          cache boolean DEFAULT false)
RETURNS jsonb
LANGUAGE sql VOLATILE PARALLEL UNSAFE COST 10000000
SET search_path = pg_catalog, pg_temp
AS $$
SELECT pgml._transform(task::text, true, args, inputs, false)
$$;
COMMENT ON FUNCTION pgml.transform(jsonb, jsonb, text[], boolean) IS 'PostgresML''s pgml.transform: task as jsonb, inputs text[]';
REVOKE ALL ON FUNCTION pgml.transform(jsonb, jsonb, text[], boolean) FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON FUNCTION pgml.transform(jsonb, jsonb, text[], boolean) TO pgml_user;

CREATE OR REPLACE FUNCTION pgml.transform(task text, args jsonb DEFAULT '{}', inputs text[] DEFAULT '{}',
                                          cache boolean DEFAULT false)
RETURNS jsonb
LANGUAGE sql VOLATILE PARALLEL UNSAFE COST 10000000
SET search_path = pg_catalog, pg_temp
AS $$
SELECT pgml._transform(task, false, args, inputs, false)
$$;
COMMENT ON FUNCTION pgml.transform(text, jsonb, text[], boolean) IS 'PostgresML''s pgml.transform: task as text, inputs text[]';
REVOKE ALL ON FUNCTION pgml.transform(text, jsonb, text[], boolean) FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON FUNCTION pgml.transform(text, jsonb, text[], boolean) TO pgml_user;

CREATE OR REPLACE FUNCTION pgml.transform(task jsonb, args jsonb DEFAULT '{}', inputs jsonb[] DEFAULT '{}',
                                          cache boolean DEFAULT false)
RETURNS jsonb
LANGUAGE sql VOLATILE PARALLEL UNSAFE COST 10000000
SET search_path = pg_catalog, pg_temp
AS $$
SELECT pgml._transform(task::text, true, args, inputs::text[], true)
$$;
COMMENT ON FUNCTION pgml.transform(jsonb, jsonb, jsonb[], boolean) IS 'PostgresML''s pgml.transform: task as jsonb, inputs jsonb[]';
REVOKE ALL ON FUNCTION pgml.transform(jsonb, jsonb, jsonb[], boolean) FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON FUNCTION pgml.transform(jsonb, jsonb, jsonb[], boolean) TO pgml_user;

CREATE OR REPLACE FUNCTION pgml.transform(task text, args jsonb DEFAULT '{}', inputs jsonb[] DEFAULT '{}',
                                          cache boolean DEFAULT false)
RETURNS jsonb
LANGUAGE sql VOLATILE PARALLEL UNSAFE COST 10000000
SET search_path = pg_catalog, pg_temp
AS $$
SELECT pgml._transform(task, false, args, inputs::text[], true)
$$;
COMMENT ON FUNCTION pgml.transform(text, jsonb, jsonb[], boolean) IS 'PostgresML''s pgml.transform: task as text, inputs jsonb[]';
REVOKE ALL ON FUNCTION pgml.transform(text, jsonb, jsonb[], boolean) FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON FUNCTION pgml.transform(text, jsonb, jsonb[], boolean) TO pgml_user;

-- pgml.transform_stream: the generated text as rows of JSON arrays of pieces, while it is
-- generated; read it through a cursor (DECLARE c CURSOR FOR SELECT pgml.transform_stream(...)).
-- Call it in the SELECT list, as above: in FROM, PostgreSQL collects every row before the first.
CREATE OR REPLACE FUNCTION pgml._transform_stream(task text, task_is_json boolean, args jsonb, inputs text[],
                                                  inputs_are_json boolean)
RETURNS SETOF jsonb
LANGUAGE plpython3u VOLATILE PARALLEL UNSAFE COST 10000000 ROWS 100
SET search_path = pg_catalog, pg_temp
AS $$
if 'pgml_plpy' not in GD:
    plpy.execute('SELECT pgml._activate()')
return GD['pgml_plpy'].transform_stream(plpy, *args)
$$;
COMMENT ON FUNCTION pgml._transform_stream(text, boolean, jsonb, text[], boolean) IS 'pgml.transform_stream''s PL/Python body';
REVOKE ALL ON FUNCTION pgml._transform_stream(text, boolean, jsonb, text[], boolean) FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON FUNCTION pgml._transform_stream(text, boolean, jsonb, text[], boolean) TO pgml_user;

CREATE OR REPLACE FUNCTION pgml.transform_stream(task jsonb, args jsonb DEFAULT '{}', input text DEFAULT '',
                                                 cache boolean DEFAULT false)
RETURNS SETOF jsonb
LANGUAGE sql VOLATILE PARALLEL UNSAFE COST 10000000 ROWS 100
SET search_path = pg_catalog, pg_temp
AS $$
SELECT pgml._transform_stream(task::text, true, args, ARRAY[input], false)
$$;
COMMENT ON FUNCTION pgml.transform_stream(jsonb, jsonb, text, boolean) IS 'PostgresML''s pgml.transform_stream: task as jsonb, input text';
REVOKE ALL ON FUNCTION pgml.transform_stream(jsonb, jsonb, text, boolean) FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON FUNCTION pgml.transform_stream(jsonb, jsonb, text, boolean) TO pgml_user;

CREATE OR REPLACE FUNCTION pgml.transform_stream(task text, args jsonb DEFAULT '{}', input text DEFAULT '',
                                                 cache boolean DEFAULT false)
RETURNS SETOF jsonb
LANGUAGE sql VOLATILE PARALLEL UNSAFE COST 10000000 ROWS 100
SET search_path = pg_catalog, pg_temp
AS $$
SELECT pgml._transform_stream(task, false, args, ARRAY[input], false)
$$;
COMMENT ON FUNCTION pgml.transform_stream(text, jsonb, text, boolean) IS 'PostgresML''s pgml.transform_stream: task as text, input text';
REVOKE ALL ON FUNCTION pgml.transform_stream(text, jsonb, text, boolean) FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON FUNCTION pgml.transform_stream(text, jsonb, text, boolean) TO pgml_user;

CREATE OR REPLACE FUNCTION pgml.transform_stream(task jsonb, args jsonb DEFAULT '{}',
                                                 inputs jsonb[] DEFAULT '{}', cache boolean DEFAULT false)
RETURNS SETOF jsonb
LANGUAGE sql VOLATILE PARALLEL UNSAFE COST 10000000 ROWS 100
SET search_path = pg_catalog, pg_temp
AS $$
SELECT pgml._transform_stream(task::text, true, args, inputs::text[], true)
$$;
COMMENT ON FUNCTION pgml.transform_stream(jsonb, jsonb, jsonb[], boolean) IS 'PostgresML''s pgml.transform_stream: task as jsonb, inputs jsonb[]';
REVOKE ALL ON FUNCTION pgml.transform_stream(jsonb, jsonb, jsonb[], boolean) FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON FUNCTION pgml.transform_stream(jsonb, jsonb, jsonb[], boolean) TO pgml_user;

CREATE OR REPLACE FUNCTION pgml.transform_stream(task text, args jsonb DEFAULT '{}',
                                                 inputs jsonb[] DEFAULT '{}', cache boolean DEFAULT false)
RETURNS SETOF jsonb
LANGUAGE sql VOLATILE PARALLEL UNSAFE COST 10000000 ROWS 100
SET search_path = pg_catalog, pg_temp
AS $$
SELECT pgml._transform_stream(task, false, args, inputs::text[], true)
$$;
COMMENT ON FUNCTION pgml.transform_stream(text, jsonb, jsonb[], boolean) IS 'PostgresML''s pgml.transform_stream: task as text, inputs jsonb[]';
REVOKE ALL ON FUNCTION pgml.transform_stream(text, jsonb, jsonb[], boolean) FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON FUNCTION pgml.transform_stream(text, jsonb, jsonb[], boolean) TO pgml_user;
