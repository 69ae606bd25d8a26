-- Vectors over REAL[] without pgvector: the similarity functions and pgml.nearest.
-- PARALLEL UNSAFE where PL/Python runs: a backend's first call imports the package through SPI,
-- and PL/Python cannot run SPI inside a parallel query (not even in the leader).

-- An array's own bytes as bytea: PostgreSQL's byteasend returns its (detoasted) varlena argument
-- unchanged, and any varlena is a valid bytea, so declared for arrays it hands a vector, or a
-- whole batch of them aggregated with array_agg, to PL/Python in one copy. (A binary-coercible
-- cast cannot be made for array types, and array_send costs a function call per element: 17 us
-- for a REAL[384].) No SET clause: it is C code that looks nothing up.
CREATE OR REPLACE FUNCTION pgml._array_bytes(anyarray) RETURNS bytea
LANGUAGE internal IMMUTABLE STRICT PARALLEL SAFE AS 'byteasend';

-- kind: cosine_distance, cosine_similarity or dot_product of two vectors' bytes, in float8.
-- No SET clause, which costs 2 us of a row's 10: the only SQL it runs is the schema-qualified
-- activation (pgml._activate pins its own search_path), so the caller's search_path changes nothing.
CREATE OR REPLACE FUNCTION pgml._similarity(kind text, a bytea, b bytea) RETURNS float8
LANGUAGE plpython3u IMMUTABLE STRICT PARALLEL UNSAFE
AS $$
if 'pgml_plpy' not in GD:
    plpy.execute('SELECT pgml._activate()')
return GD['pgml_plpy'].similarity(plpy, kind, a, b)
$$;

-- Similarity without pgvector. STRICT: a NULL vector gives NULL (it sorts last); a zero vector
-- gives NULL in the cosine functions; different dimensions are an error (22000), and so are NULL
-- elements (22004) and arrays of more than one dimension (22000).
-- The planner inlines these SQL bodies into the calling query, which a SET clause would prevent:
-- a row then costs two byte copies and one PL/Python call. Every name in them is schema-qualified
-- and they use no operator, so the caller's search_path cannot change what they run.
CREATE OR REPLACE FUNCTION pgml.cosine_distance(a real[], b real[]) RETURNS float8
LANGUAGE sql IMMUTABLE STRICT PARALLEL UNSAFE
AS $$ SELECT pgml._similarity('cosine_distance', pgml._array_bytes(a), pgml._array_bytes(b)) $$;

CREATE OR REPLACE FUNCTION pgml.cosine_similarity(a real[], b real[]) RETURNS float8
LANGUAGE sql IMMUTABLE STRICT PARALLEL UNSAFE
AS $$ SELECT pgml._similarity('cosine_similarity', pgml._array_bytes(a), pgml._array_bytes(b)) $$;

CREATE OR REPLACE FUNCTION pgml.dot_product(a real[], b real[]) RETURNS float8
LANGUAGE sql IMMUTABLE STRICT PARALLEL UNSAFE
AS $$ SELECT pgml._similarity('dot_product', pgml._array_bytes(a), pgml._array_bytes(b)) $$;

-- The helper of the SQL versions, before the similarity functions moved to PL/Python.
DROP FUNCTION IF EXISTS pgml._dimension_mismatch(real[], real[]);

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
return GD['pgml_plpy'].nearest(plpy, relation, column_name, query, k, metric)
$$;
