-- Generated from src/pgml_plpy/sqlapi.py by scripts/gen_sql.py: edit the table, then run .venv/bin/python scripts/gen_sql.py
-- Model lifecycle in a backend: what is loaded, unloading (really freeing memory), warm-up.
-- Eviction caps are the settings max_models and max_model_bytes.

CREATE OR REPLACE FUNCTION pgml.loaded_models()
RETURNS SETOF pgml.loaded_model
LANGUAGE plpython3u VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
if 'pgml_plpy' not in GD:
    plpy.execute('SELECT pgml._activate()')
return GD['pgml_plpy'].loaded_models(plpy)
$$;
COMMENT ON FUNCTION pgml.loaded_models() IS 'the models this backend has loaded, then those of the shared runtimes its routes name';
REVOKE ALL ON FUNCTION pgml.loaded_models() FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON FUNCTION pgml.loaded_models() TO pgml_user;

-- Every model this backend loaded under that name (for that task, when given).
CREATE OR REPLACE FUNCTION pgml.unload(model text, task text DEFAULT NULL)
RETURNS SETOF pgml.loaded_model
LANGUAGE plpython3u VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
if 'pgml_plpy' not in GD:
    plpy.execute('SELECT pgml._activate()')
return GD['pgml_plpy'].unload(plpy, *args)
$$;
COMMENT ON FUNCTION pgml.unload(text, text) IS 'unloads a model from this backend; rows of what it freed';
REVOKE ALL ON FUNCTION pgml.unload(text, text) FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON FUNCTION pgml.unload(text, text) TO pgml_user;

CREATE OR REPLACE FUNCTION pgml.clear_cache()
RETURNS SETOF pgml.loaded_model
LANGUAGE plpython3u VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
if 'pgml_plpy' not in GD:
    plpy.execute('SELECT pgml._activate()')
return GD['pgml_plpy'].clear_cache(plpy)
$$;
COMMENT ON FUNCTION pgml.clear_cache() IS 'unloads every model of this backend';
REVOKE ALL ON FUNCTION pgml.clear_cache() FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON FUNCTION pgml.clear_cache() TO pgml_user;

CREATE OR REPLACE FUNCTION pgml.clear_gpu_cache(memory_usage real DEFAULT NULL)
RETURNS boolean
LANGUAGE plpython3u VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
if 'pgml_plpy' not in GD:
    plpy.execute('SELECT pgml._activate()')
return GD['pgml_plpy'].clear_gpu_cache(plpy, *args)
$$;
COMMENT ON FUNCTION pgml.clear_gpu_cache(real) IS 'empties the CUDA cache; false where there is no GPU';
REVOKE ALL ON FUNCTION pgml.clear_gpu_cache(real) FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON FUNCTION pgml.clear_gpu_cache(real) TO pgml_user;

-- Load a model ahead of the first query (a connection pool's init query, for example). The task
-- is a name or a JSON object, as TEXT; the JSONB form hands its text over.
CREATE OR REPLACE FUNCTION pgml.preload(task text)
RETURNS SETOF pgml.loaded_model
LANGUAGE plpython3u VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
if 'pgml_plpy' not in GD:
    plpy.execute('SELECT pgml._activate()')
return GD['pgml_plpy'].preload(plpy, *args)
$$;
COMMENT ON FUNCTION pgml.preload(text) IS 'loads a transform task''s model ahead of use';
REVOKE ALL ON FUNCTION pgml.preload(text) FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON FUNCTION pgml.preload(text) TO pgml_user;

CREATE OR REPLACE FUNCTION pgml.preload(task jsonb)
RETURNS SETOF pgml.loaded_model
LANGUAGE sql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
SELECT * FROM pgml.preload(task::text)
$$;
COMMENT ON FUNCTION pgml.preload(jsonb) IS 'loads a transform task''s model ahead of use';
REVOKE ALL ON FUNCTION pgml.preload(jsonb) FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON FUNCTION pgml.preload(jsonb) TO pgml_user;

CREATE OR REPLACE FUNCTION pgml.preload_embed(transformer text, kwargs jsonb DEFAULT '{}')
RETURNS SETOF pgml.loaded_model
LANGUAGE plpython3u VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
if 'pgml_plpy' not in GD:
    plpy.execute('SELECT pgml._activate()')
return GD['pgml_plpy'].preload_embed(plpy, *args)
$$;
COMMENT ON FUNCTION pgml.preload_embed(text, jsonb) IS 'loads pgml.embed''s model ahead of use';
REVOKE ALL ON FUNCTION pgml.preload_embed(text, jsonb) FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON FUNCTION pgml.preload_embed(text, jsonb) TO pgml_user;
