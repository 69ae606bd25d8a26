-- Generated from src/pgml_plpy/sqlapi.py by scripts/gen_sql.py: edit the table, then run .venv/bin/python scripts/gen_sql.py
-- Vectors over REAL[] without pgvector: the similarity functions and pgml.nearest.

-- An array's own bytes as bytea: PostgreSQL's byteasend returns its (detoasted) varlena argument
-- unchanged, and any varlena is a valid bytea, so declared for arrays it hands a vector, or a
-- whole batch of them aggregated with array_agg, to PL/Python in one copy. (A binary-coercible
-- cast cannot be made for array types, and array_send costs a function call per element: 17 us
-- for a REAL[384].) No SET clause: it is C code that looks nothing up.
CREATE OR REPLACE FUNCTION pgml._array_bytes(anyarray)
RETURNS bytea
LANGUAGE internal IMMUTABLE STRICT PARALLEL SAFE
AS 'byteasend';
COMMENT ON FUNCTION pgml._array_bytes(anyarray) IS 'an array''s own bytes, as bytea';
REVOKE ALL ON FUNCTION pgml._array_bytes(anyarray) FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON FUNCTION pgml._array_bytes(anyarray) TO pgml_user;

-- kind: cosine_distance, cosine_similarity or dot_product of two vectors' bytes, in float8.
-- No SET clause, which costs 2 us of a row's 10: the only SQL it runs is the schema-qualified
-- activation (pgml._activate pins its own search_path), so the caller's search_path changes nothing.
-- Its entry point is called once per row: it reports errors itself, without entry's per-call work.
CREATE OR REPLACE FUNCTION pgml._similarity(kind text, a bytea, b bytea)
RETURNS float8
LANGUAGE plpython3u IMMUTABLE STRICT PARALLEL UNSAFE
AS $$
if 'pgml_plpy' not in GD:
    plpy.execute('SELECT pgml._activate()')
return GD['pgml_plpy'].similarity(plpy, *args)
$$;
COMMENT ON FUNCTION pgml._similarity(text, bytea, bytea) IS 'cosine_distance, cosine_similarity or dot_product of two vectors'' bytes';
REVOKE ALL ON FUNCTION pgml._similarity(text, bytea, bytea) FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON FUNCTION pgml._similarity(text, bytea, bytea) TO pgml_user;

-- Similarity without pgvector. STRICT: a NULL vector gives NULL (it sorts last); a zero vector
-- gives NULL in the cosine functions; different dimensions are an error (22000), and so are NULL
-- elements (22004) and arrays of more than one dimension (22000).
-- The planner inlines these SQL bodies into the calling query, which a SET clause would prevent:
-- a row then costs two byte copies and one PL/Python call. Every name in them is schema-qualified
-- and they use no operator, so the caller's search_path cannot change what they run.
CREATE OR REPLACE FUNCTION pgml.cosine_distance(a real[], b real[])
RETURNS float8
LANGUAGE sql IMMUTABLE STRICT PARALLEL UNSAFE
AS $$
SELECT pgml._similarity('cosine_distance', pgml._array_bytes(a), pgml._array_bytes(b))
$$;
COMMENT ON FUNCTION pgml.cosine_distance(real[], real[]) IS '1 - the cosine similarity (pgvector''s <=>)';
REVOKE ALL ON FUNCTION pgml.cosine_distance(real[], real[]) FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON FUNCTION pgml.cosine_distance(real[], real[]) TO pgml_user;

CREATE OR REPLACE FUNCTION pgml.cosine_similarity(a real[], b real[])
RETURNS float8
LANGUAGE sql IMMUTABLE STRICT PARALLEL UNSAFE
AS $$
SELECT pgml._similarity('cosine_similarity', pgml._array_bytes(a), pgml._array_bytes(b))
$$;
COMMENT ON FUNCTION pgml.cosine_similarity(real[], real[]) IS 'the cosine similarity of two vectors';
REVOKE ALL ON FUNCTION pgml.cosine_similarity(real[], real[]) FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON FUNCTION pgml.cosine_similarity(real[], real[]) TO pgml_user;

CREATE OR REPLACE FUNCTION pgml.dot_product(a real[], b real[])
RETURNS float8
LANGUAGE sql IMMUTABLE STRICT PARALLEL UNSAFE
AS $$
SELECT pgml._similarity('dot_product', pgml._array_bytes(a), pgml._array_bytes(b))
$$;
COMMENT ON FUNCTION pgml.dot_product(real[], real[]) IS 'the dot product of two vectors';
REVOKE ALL ON FUNCTION pgml.dot_product(real[], real[]) FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON FUNCTION pgml.dot_product(real[], real[]) TO pgml_user;

-- The k rows of relation nearest to query, read in ranges of blocks as bytes and compared in numpy.
-- SECURITY INVOKER (the default): the caller's privileges and row-level security apply. STABLE:
-- its queries see the calling statement's snapshot. Join back on (tableoid, ctid).
CREATE OR REPLACE FUNCTION pgml.nearest(relation regclass, column_name text, query real[], k integer,
                                        metric text DEFAULT 'cosine')
RETURNS TABLE (tableoid oid, ctid tid, distance double precision)
LANGUAGE plpython3u STABLE PARALLEL UNSAFE COST 100000 ROWS 10
SET search_path = pg_catalog, pg_temp
AS $$
if 'pgml_plpy' not in GD:
    plpy.execute('SELECT pgml._activate()')
return GD['pgml_plpy'].nearest(plpy, *args)
$$;
COMMENT ON FUNCTION pgml.nearest(regclass, text, real[], integer, text) IS 'the k rows of a relation nearest to a query vector';
REVOKE ALL ON FUNCTION pgml.nearest(regclass, text, real[], integer, text) FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON FUNCTION pgml.nearest(regclass, text, real[], integer, text) TO pgml_user;
