-- Embeddings (sentence-transformers), cross-encoder ranking, and the DBA's procedure that embeds
-- a whole table in committed batches. Similarity and nearest-neighbour search: vectors.sql.

-- Vectors cross PL/Python as array literals (one C-level format per row) and become REAL[]
-- here: returning Python float lists costs a text round trip per float.
CREATE OR REPLACE FUNCTION pgml._embed(transformer text, inputs text[], kwargs jsonb)
RETURNS SETOF text LANGUAGE plpython3u VOLATILE PARALLEL RESTRICTED COST 1000000 ROWS 100
SET search_path = pg_catalog, pg_temp
AS $$
if 'pgml_plpy' not in GD:
    plpy.execute('SELECT pgml._activate()')
return GD['pgml_plpy'].embed(plpy, transformer, inputs, kwargs)
$$;

-- IMMUTABLE as in PostgresML: the same model gives the same vector, so a constant query's
-- embedding is computed once per statement (and generated columns may use it).
CREATE OR REPLACE FUNCTION pgml.embed(transformer text, "text" text, kwargs jsonb DEFAULT '{}')
RETURNS real[] LANGUAGE sql IMMUTABLE PARALLEL RESTRICTED COST 1000000
SET search_path = pg_catalog, pg_temp
AS $$ SELECT e::real[] FROM pgml._embed(transformer, ARRAY["text"], kwargs) AS e $$;

CREATE OR REPLACE FUNCTION pgml.embed(transformer text, inputs text[], kwargs jsonb DEFAULT '{}')
RETURNS SETOF real[] LANGUAGE sql IMMUTABLE PARALLEL RESTRICTED COST 1000000 ROWS 100
SET search_path = pg_catalog, pg_temp
AS $$ SELECT e::real[] FROM pgml._embed(transformer, inputs, kwargs) WITH ORDINALITY AS r(e, n) ORDER BY n $$;

CREATE OR REPLACE FUNCTION pgml.rank(transformer text, query text, documents text[], kwargs jsonb DEFAULT '{}')
RETURNS TABLE (corpus_id bigint, score float8, "text" text)
LANGUAGE plpython3u IMMUTABLE PARALLEL RESTRICTED COST 1000000 ROWS 10
SET search_path = pg_catalog, pg_temp
AS $$
if 'pgml_plpy' not in GD:
    plpy.execute('SELECT pgml._activate()')
return GD['pgml_plpy'].rank(plpy, transformer, query, documents, kwargs)
$$;

-- No SET clause: a procedure that commits cannot have one. It sets search_path locally in
-- each of its transactions and builds its SQL from the regclass and quoted column names.
CREATE OR REPLACE PROCEDURE pgml.embed_table(relation regclass, text_column text, embedding_column text,
                                             transformer text DEFAULT 'sentence-transformers/all-MiniLM-L6-v2',
                                             kwargs jsonb DEFAULT '{}', batch_size integer DEFAULT 256)
LANGUAGE plpython3u
AS $$
if 'pgml_plpy' not in GD:
    plpy.execute('SELECT pgml._activate()')
GD['pgml_plpy'].embed_table(plpy, relation, text_column, embedding_column, transformer, kwargs, batch_size)
$$;
