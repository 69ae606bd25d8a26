-- Generated from src/pgml_plpy/sqlapi.py by scripts/gen_sql.py: edit the table, then run .venv/bin/python scripts/gen_sql.py
-- Embeddings (sentence-transformers), cross-encoder ranking, and the DBA's procedure that embeds
-- a whole table in committed batches. Similarity and nearest-neighbour search: vectors.sql.

-- Vectors cross PL/Python as array literals (one C-level format per row) and become REAL[]
-- here: returning Python float lists costs a text round trip per float.
CREATE OR REPLACE FUNCTION pgml._embed(transformer text, inputs text[], kwargs jsonb)
RETURNS SETOF text
LANGUAGE plpython3u VOLATILE PARALLEL UNSAFE COST 1000000 ROWS 100
SET search_path = pg_catalog, pg_temp
AS $$
if 'pgml_plpy' not in GD:
    plpy.execute('SELECT pgml._activate()')
return GD['pgml_plpy'].embed(plpy, *args)
$$;
COMMENT ON FUNCTION pgml._embed(text, text[], jsonb) IS 'pgml.embed''s PL/Python body: one array literal per input';
REVOKE ALL ON FUNCTION pgml._embed(text, text[], jsonb) FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON FUNCTION pgml._embed(text, text[], jsonb) TO pgml_user;

-- IMMUTABLE as in PostgresML: the same model gives the same vector, so a constant query's
-- embedding is computed once per statement (and generated columns may use it).
CREATE OR REPLACE FUNCTION pgml.embed(transformer text, "text" text, kwargs jsonb DEFAULT '{}')
RETURNS real[]
LANGUAGE sql IMMUTABLE PARALLEL UNSAFE COST 1000000
SET search_path = pg_catalog, pg_temp
AS $$
SELECT e::real[] FROM pgml._embed(transformer, ARRAY["text"], kwargs) AS e
$$;
COMMENT ON FUNCTION pgml.embed(text, text, jsonb) IS 'the embedding of one text';
REVOKE ALL ON FUNCTION pgml.embed(text, text, jsonb) FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON FUNCTION pgml.embed(text, text, jsonb) TO pgml_user;

CREATE OR REPLACE FUNCTION pgml.embed(transformer text, inputs text[], kwargs jsonb DEFAULT '{}')
RETURNS SETOF real[]
LANGUAGE sql IMMUTABLE PARALLEL UNSAFE COST 1000000 ROWS 100
SET search_path = pg_catalog, pg_temp
AS $$
SELECT e::real[] FROM pgml._embed(transformer, inputs, kwargs) WITH ORDINALITY AS r(e, n) ORDER BY n
$$;
COMMENT ON FUNCTION pgml.embed(text, text[], jsonb) IS 'the embeddings of texts, in their order';
REVOKE ALL ON FUNCTION pgml.embed(text, text[], jsonb) FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON FUNCTION pgml.embed(text, text[], jsonb) TO pgml_user;

CREATE OR REPLACE FUNCTION pgml.rank(transformer text, query text, documents text[],
                                     kwargs jsonb DEFAULT '{}')
RETURNS TABLE (corpus_id bigint, score float8, "text" text)
LANGUAGE plpython3u IMMUTABLE PARALLEL UNSAFE COST 1000000 ROWS 10
SET search_path = pg_catalog, pg_temp
AS $$
if 'pgml_plpy' not in GD:
    plpy.execute('SELECT pgml._activate()')
return GD['pgml_plpy'].rank(plpy, *args)
$$;
COMMENT ON FUNCTION pgml.rank(text, text, text[], jsonb) IS 'documents ranked against a query by a cross-encoder, best first';
REVOKE ALL ON FUNCTION pgml.rank(text, text, text[], jsonb) FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON FUNCTION pgml.rank(text, text, text[], jsonb) TO pgml_user;

-- No SET clause: a procedure that commits cannot have one. It sets search_path locally in
-- each of its transactions and builds its SQL from the regclass and quoted column names.
CREATE OR REPLACE PROCEDURE pgml.embed_table(relation regclass, text_column text, embedding_column text,
                                             transformer text DEFAULT 'sentence-transformers/all-MiniLM-L6-v2',
                                             kwargs jsonb DEFAULT '{}', batch_size integer DEFAULT 256)
LANGUAGE plpython3u
AS $$
if 'pgml_plpy' not in GD:
    plpy.execute('SELECT pgml._activate()')
return GD['pgml_plpy'].embed_table(plpy, *args)
$$;
COMMENT ON PROCEDURE pgml.embed_table(regclass, text, text, text, jsonb, integer) IS 'fills a table''s embedding column in committed batches';
REVOKE ALL ON PROCEDURE pgml.embed_table(regclass, text, text, text, jsonb, integer) FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON PROCEDURE pgml.embed_table(regclass, text, text, text, jsonb, integer) TO pgml_admin;
