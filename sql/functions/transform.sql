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
