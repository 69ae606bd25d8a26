-- pgml.load_dataset: a Hugging Face dataset (from the server's datasets cache, or downloaded
-- where hub_downloads allows it) or files on the server (superusers and members of
-- pg_read_server_files only, like COPY FROM a file) into the typed table pgml."<name>".
-- VOLATILE and PARALLEL UNSAFE: it creates, replaces and fills a table. Not STRICT: a NULL
-- source is an error (22004). The table is created as the calling role.

CREATE OR REPLACE FUNCTION pgml.load_dataset(source text, subset text DEFAULT NULL, "limit" bigint DEFAULT NULL,
                                             kwargs jsonb DEFAULT '{}')
RETURNS TABLE (table_name text, "rows" bigint)
LANGUAGE plpython3u VOLATILE PARALLEL UNSAFE COST 100000000 ROWS 1
SET search_path = pg_catalog, pg_temp
AS $$
if 'pgml_plpy' not in GD:
    plpy.execute('SELECT pgml._activate()')
return GD['pgml_plpy'].load_dataset(plpy, source, subset, limit, kwargs)
$$;
