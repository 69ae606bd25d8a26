-- pgml.chunk: PostgresML's splitter names and kwargs (LangChain's text splitters).
-- Not STRICT: a NULL splitter or text is an error (22004) rather than silently no rows.
-- IMMUTABLE: the chunks depend only on the arguments (and the installed splitter library,
-- as collations depend on theirs). PARALLEL RESTRICTED: a parallel worker would import the
-- package on its own. chunk_index counts from 1, in document order.

CREATE OR REPLACE FUNCTION pgml.chunk(splitter text, "text" text, kwargs jsonb DEFAULT '{}')
RETURNS TABLE (chunk_index bigint, chunk text)
LANGUAGE plpython3u IMMUTABLE PARALLEL RESTRICTED COST 1000 ROWS 20
SET search_path = pg_catalog, pg_temp
AS $$
if 'pgml_plpy' not in GD:
    plpy.execute('SELECT pgml._activate()')
return GD['pgml_plpy'].chunk(plpy, splitter, text, kwargs)
$$;
