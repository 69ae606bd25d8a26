-- Model lifecycle in a backend: what is loaded, unloading (really freeing memory), warm-up.
-- Eviction caps are the settings max_models and max_model_bytes.

-- One loaded model of this backend (what loaded_models, unload, clear_cache and preload return).
DO $$ BEGIN
  CREATE TYPE pgml.loaded_model AS (function text, task text, model text, device text, dtype text, bytes bigint,
                                    load_seconds float8, loaded_at timestamptz, last_used timestamptz, hits bigint);
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;

CREATE OR REPLACE FUNCTION pgml.loaded_models()
RETURNS SETOF pgml.loaded_model
LANGUAGE plpython3u VOLATILE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$
if 'pgml_plpy' not in GD:
    plpy.execute('SELECT pgml._activate()')
return GD['pgml_plpy'].loaded_models(plpy)
$$;

-- Every model this backend loaded under that name (for that task, when given); rows of what it freed.
CREATE OR REPLACE FUNCTION pgml.unload(model text, task text DEFAULT NULL)
RETURNS SETOF pgml.loaded_model
LANGUAGE plpython3u VOLATILE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$
if 'pgml_plpy' not in GD:
    plpy.execute('SELECT pgml._activate()')
return GD['pgml_plpy'].unload(plpy, model, task)
$$;

CREATE OR REPLACE FUNCTION pgml.clear_cache()
RETURNS SETOF pgml.loaded_model
LANGUAGE plpython3u VOLATILE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$
if 'pgml_plpy' not in GD:
    plpy.execute('SELECT pgml._activate()')
return GD['pgml_plpy'].clear_cache(plpy)
$$;

-- PostgresML's: empties the CUDA cache; false where there is no GPU.
CREATE OR REPLACE FUNCTION pgml.clear_gpu_cache(memory_usage real DEFAULT NULL) RETURNS boolean
LANGUAGE plpython3u VOLATILE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$
if 'pgml_plpy' not in GD:
    plpy.execute('SELECT pgml._activate()')
return GD['pgml_plpy'].clear_gpu_cache(plpy, memory_usage)
$$;

-- Load a model ahead of the first query (a connection pool's init query, for example). The task
-- is a name or a JSON object, as TEXT; the JSONB form hands its text over.
CREATE OR REPLACE FUNCTION pgml.preload(task text)
RETURNS SETOF pgml.loaded_model
LANGUAGE plpython3u VOLATILE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$
if 'pgml_plpy' not in GD:
    plpy.execute('SELECT pgml._activate()')
return GD['pgml_plpy'].preload(plpy, task)
$$;

CREATE OR REPLACE FUNCTION pgml.preload(task jsonb)
RETURNS SETOF pgml.loaded_model
LANGUAGE sql VOLATILE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM pgml.preload(task::text) $$;

CREATE OR REPLACE FUNCTION pgml.preload_embed(transformer text, kwargs jsonb DEFAULT '{}')
RETURNS SETOF pgml.loaded_model
LANGUAGE plpython3u VOLATILE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$
if 'pgml_plpy' not in GD:
    plpy.execute('SELECT pgml._activate()')
return GD['pgml_plpy'].preload_embed(plpy, transformer, kwargs)
$$;
