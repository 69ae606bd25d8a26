-- Generated from src/pgml_plpy/sqlapi.py by scripts/gen_sql.py: edit the table, then run .venv/bin/python scripts/gen_sql.py
-- pgml.chunk: PostgresML's splitter names and kwargs (LangChain's text splitters).

-- Not STRICT: a NULL splitter or text is an error (22004) rather than silently no rows.
-- IMMUTABLE: the chunks depend only on the arguments (and the installed splitter library,
-- as collations depend on theirs). chunk_index counts from 1, in document order.
CREATE OR REPLACE FUNCTION pgml.chunk(splitter text, "text" text, kwargs jsonb DEFAULT '{}')
RETURNS TABLE (chunk_index bigint, chunk text)
LANGUAGE plpython3u IMMUTABLE PARALLEL UNSAFE COST 1000 ROWS 20
SET search_path = pg_catalog, pg_temp
AS $$
if 'pgml_plpy' not in GD:
    plpy.execute('SELECT pgml._activate()')
return GD['pgml_plpy'].chunk(plpy, *args)
$$;
COMMENT ON FUNCTION pgml.chunk(text, text, jsonb) IS 'a text split into chunks, chunk_index from 1';
REVOKE ALL ON FUNCTION pgml.chunk(text, text, jsonb) FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON FUNCTION pgml.chunk(text, text, jsonb) TO pgml_user;
