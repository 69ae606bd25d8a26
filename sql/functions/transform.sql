-- pgml.transform: PostgresML's four overloads (task TEXT or JSONB; inputs TEXT[] or JSONB[]),
-- each a one-line SQL wrapper over pgml._transform.
-- `cache` is accepted for compatibility: models are always cached per backend.
-- COST as PostgresML, so that LIMIT and WHERE apply before the call. PARALLEL RESTRICTED:
-- a parallel worker would load its own copy of the model.

CREATE OR REPLACE FUNCTION pgml._transform(task text, task_is_json boolean, args jsonb, inputs text[],
                                           inputs_are_json boolean)
RETURNS jsonb LANGUAGE plpython3u VOLATILE PARALLEL RESTRICTED COST 10000000
SET search_path = pg_catalog, pg_temp
AS $$
if 'pgml_plpy' not in GD:
    plpy.execute('SELECT pgml._activate()')
return GD['pgml_plpy'].transform(plpy, task, args[2], inputs, task_is_json=task_is_json,
                                 inputs_are_json=inputs_are_json)
$$;

CREATE OR REPLACE FUNCTION pgml.transform(task jsonb, args jsonb DEFAULT '{}', inputs text[] DEFAULT '{}',
                                          cache boolean DEFAULT false)
RETURNS jsonb LANGUAGE sql VOLATILE PARALLEL RESTRICTED COST 10000000
SET search_path = pg_catalog, pg_temp
AS $$ SELECT pgml._transform(task::text, true, args, inputs, false) $$;

CREATE OR REPLACE FUNCTION pgml.transform(task text, args jsonb DEFAULT '{}', inputs text[] DEFAULT '{}',
                                          cache boolean DEFAULT false)
RETURNS jsonb LANGUAGE sql VOLATILE PARALLEL RESTRICTED COST 10000000
SET search_path = pg_catalog, pg_temp
AS $$ SELECT pgml._transform(task, false, args, inputs, false) $$;

CREATE OR REPLACE FUNCTION pgml.transform(task jsonb, args jsonb DEFAULT '{}', inputs jsonb[] DEFAULT '{}',
                                          cache boolean DEFAULT false)
RETURNS jsonb LANGUAGE sql VOLATILE PARALLEL RESTRICTED COST 10000000
SET search_path = pg_catalog, pg_temp
AS $$ SELECT pgml._transform(task::text, true, args, inputs::text[], true) $$;

CREATE OR REPLACE FUNCTION pgml.transform(task text, args jsonb DEFAULT '{}', inputs jsonb[] DEFAULT '{}',
                                          cache boolean DEFAULT false)
RETURNS jsonb LANGUAGE sql VOLATILE PARALLEL RESTRICTED COST 10000000
SET search_path = pg_catalog, pg_temp
AS $$ SELECT pgml._transform(task, false, args, inputs::text[], true) $$;

-- pgml.transform_stream: the generated text as rows of JSON arrays of pieces, while it is
-- generated; read it through a cursor (DECLARE c CURSOR FOR SELECT pgml.transform_stream(...)).
-- Call it in the SELECT list, as above: in FROM, PostgreSQL collects every row before the first.
CREATE OR REPLACE FUNCTION pgml._transform_stream(task text, task_is_json boolean, args jsonb, inputs text[],
                                                  inputs_are_json boolean)
RETURNS SETOF jsonb LANGUAGE plpython3u VOLATILE PARALLEL RESTRICTED COST 10000000 ROWS 100
SET search_path = pg_catalog, pg_temp
AS $$
if 'pgml_plpy' not in GD:
    plpy.execute('SELECT pgml._activate()')
return GD['pgml_plpy'].transform_stream(plpy, task, args[2], inputs, task_is_json=task_is_json,
                                        inputs_are_json=inputs_are_json)
$$;

CREATE OR REPLACE FUNCTION pgml.transform_stream(task jsonb, args jsonb DEFAULT '{}', input text DEFAULT '',
                                                 cache boolean DEFAULT false)
RETURNS SETOF jsonb LANGUAGE sql VOLATILE PARALLEL RESTRICTED COST 10000000 ROWS 100
SET search_path = pg_catalog, pg_temp
AS $$ SELECT pgml._transform_stream(task::text, true, args, ARRAY[input], false) $$;

CREATE OR REPLACE FUNCTION pgml.transform_stream(task text, args jsonb DEFAULT '{}', input text DEFAULT '',
                                                 cache boolean DEFAULT false)
RETURNS SETOF jsonb LANGUAGE sql VOLATILE PARALLEL RESTRICTED COST 10000000 ROWS 100
SET search_path = pg_catalog, pg_temp
AS $$ SELECT pgml._transform_stream(task, false, args, ARRAY[input], false) $$;

CREATE OR REPLACE FUNCTION pgml.transform_stream(task jsonb, args jsonb DEFAULT '{}', inputs jsonb[] DEFAULT '{}',
                                                 cache boolean DEFAULT false)
RETURNS SETOF jsonb LANGUAGE sql VOLATILE PARALLEL RESTRICTED COST 10000000 ROWS 100
SET search_path = pg_catalog, pg_temp
AS $$ SELECT pgml._transform_stream(task::text, true, args, inputs::text[], true) $$;

CREATE OR REPLACE FUNCTION pgml.transform_stream(task text, args jsonb DEFAULT '{}', inputs jsonb[] DEFAULT '{}',
                                                 cache boolean DEFAULT false)
RETURNS SETOF jsonb LANGUAGE sql VOLATILE PARALLEL RESTRICTED COST 10000000 ROWS 100
SET search_path = pg_catalog, pg_temp
AS $$ SELECT pgml._transform_stream(task, false, args, inputs::text[], true) $$;
