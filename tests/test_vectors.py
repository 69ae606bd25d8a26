"""pgml.nearest and the similarity functions over REAL[] / float8[]: the answers of brute-force SQL."""

import math
import time

import numpy as np
import psycopg
import pytest
from pgtest import one, sql_error

from pgml_plpy.vectors import _candidates, _distances

DIMS = 16
# The contract's distances written in plain SQL over unnest (e: the row's vector, q: the query), in float8.
BRUTE = {
    "cosine": "SELECT 1 - sum(x::float8 * y) / nullif(sqrt(sum(x::float8 * x) * sum(y::float8 * y)), 0)",
    "l2": "SELECT sqrt(sum((x::float8 - y) * (x::float8 - y)))",
    "inner_product": "SELECT -sum(x::float8 * y)",
}
ROLE = "pgml_test_vectors"


def brute_force(conn, table, query, k, metric, column="e"):
    return conn.execute(f"""
        SELECT tableoid, ctid, d FROM (
          SELECT tableoid, ctid, ({BRUTE[metric]} FROM unnest({column}, q) AS t(x, y)) AS d
          FROM {table}, (SELECT %s::real[] AS q) AS query WHERE {column} IS NOT NULL) s
        ORDER BY d, ctid, tableoid LIMIT %s""", (query, k)).fetchall()


def nearest(conn, table, query, k, metric, column="e"):
    return conn.execute("SELECT * FROM pgml.nearest(%s, %s, %s::real[], %s, %s)",
                        (table, column, query, k, metric)).fetchall()


def same(got, expected):
    assert [row[:2] for row in got] == [row[:2] for row in expected]
    for (*_, a), (*_, b) in zip(got, expected):
        kind = [None if v is None else "NaN" if math.isnan(v) else "number" for v in (a, b)]
        assert kind[0] == kind[1] and (kind[0] != "number" or a == pytest.approx(b, rel=1e-12, abs=1e-6)), (a, b)


def vectors(rng, rows, query):
    """Random vectors with ties (copies of the query and of one other vector, spread over the
    table), zero vectors, NULL vectors and non-finite elements."""
    data = [list(v) for v in rng.standard_normal((rows, DIMS)).astype(np.float32).astype(float)]
    tie = data[5]
    for i in range(0, rows, 397):
        data[i] = list(query)
        data[i + 1] = list(tie)
    data[11] = data[rows - 11] = [0.0] * DIMS
    data[12] = data[rows // 2] = None
    data[13] = [math.nan] + data[14][1:]
    data[15] = [math.inf] + data[16][1:]
    return data, tie


def fill(conn, table, rows):
    with conn.cursor().copy(f"COPY {table} (e) FROM STDIN") as copy:
        for vector in rows:
            copy.write_row([vector])
    conn.execute(f"ANALYZE {table}")


@pytest.fixture(scope="module")
def data(conn):
    """Tables vec4 (real[]) and vec8 (float8[]) of 3000 rows, and the partitioned vecp."""
    rng = np.random.default_rng(7)
    query = rng.standard_normal(DIMS).astype(np.float32).astype(float).tolist()
    rows, tie = vectors(rng, 3000, query)
    for table, kind in (("vec4", "real[]"), ("vec8", "float8[]")):
        conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.execute(f"CREATE TABLE {table} (id serial, e {kind})")
        fill(conn, table, rows)
    conn.execute("DROP TABLE IF EXISTS vecp")
    conn.execute("CREATE TABLE vecp (id int, e real[]) PARTITION BY RANGE (id)")
    conn.execute("CREATE TABLE vecp_small PARTITION OF vecp FOR VALUES FROM (0) TO (100)")
    conn.execute("CREATE TABLE vecp_big PARTITION OF vecp FOR VALUES FROM (100) TO (2500) PARTITION BY HASH (id)")
    conn.execute("CREATE TABLE vecp_big_0 PARTITION OF vecp_big FOR VALUES WITH (MODULUS 2, REMAINDER 0)")
    conn.execute("CREATE TABLE vecp_big_1 PARTITION OF vecp_big FOR VALUES WITH (MODULUS 2, REMAINDER 1)")
    conn.execute("CREATE TABLE vecp_rest PARTITION OF vecp DEFAULT")
    conn.execute("INSERT INTO vecp SELECT id, e FROM vec4")
    yield {"query": query, "tie": tie}
    conn.execute("DROP TABLE vec4, vec8, vecp")


@pytest.mark.parametrize("metric", ["cosine", "l2", "inner_product"])
@pytest.mark.parametrize("table", ["vec4", "vec8", "vecp"])
def test_same_rows_and_distances_as_brute_force(conn, data, metric, table):
    for query in (data["query"], data["tie"], [-x for x in data["query"]]):
        everything = brute_force(conn, table, query, 5000, metric)  # its order is total: any k is a prefix
        for k in (1, 3, 9, 40, 5000):  # 3 and 9 cut through groups of equal vectors: ctid decides
            same(nearest(conn, table, query, k, metric), everything[:k])
    if table == "vecp":
        assert len({row[0] for row in nearest(conn, table, data["query"], 40, metric)}) > 1


@pytest.mark.parametrize("metric", ["cosine", "l2", "inner_product"])
def test_float32_bounds_keep_the_exact_answer(conn, metric):
    """REAL[] rows are first bounded with float32 sums: rows closer together than those bounds
    (all compared exactly), and magnitudes where float32 overflows or underflows."""
    rng = np.random.default_rng(11)
    base = rng.standard_normal(DIMS).astype(np.float32)
    rows = (base + 1e-3 * rng.standard_normal((2000, DIMS))).astype(np.float32).astype(float).tolist()
    other = rng.standard_normal((4, DIMS)).astype(np.float32)  # other directions: no ties at rounding level
    rows += [list(other[0] * 1e18), list(other[1] * 1e19), list(other[2] * 1e-30), [1e-45] * DIMS,
             [3e38] + [0.0] * (DIMS - 1), list(-base), list(other[3])]
    conn.execute("DROP TABLE IF EXISTS vec_edge")
    conn.execute("CREATE TABLE vec_edge (e real[])")
    fill(conn, "vec_edge", rows)
    for query in (base.astype(float).tolist(), rows[3], (other[2] * 1e-30).astype(float).tolist()):
        everything = brute_force(conn, "vec_edge", query, 3000, metric)
        for k in (1, 5, 50, 3000):
            same(nearest(conn, "vec_edge", query, k, metric), everything[:k])
    conn.execute("DROP TABLE vec_edge")


@pytest.mark.parametrize("metric", ["cosine", "l2", "inner_product"])
def test_float32_bounds_never_drop_one_of_the_k(metric):
    """_candidates, without a server: on generated matrices (clustered, spread over magnitudes,
    with zero, NaN and infinite rows), every row of the exact k nearest is a candidate."""
    rng = np.random.default_rng(3)
    for trial in range(60):
        rows, dims = int(rng.integers(1, 400)), int(rng.integers(1, 300))
        center = rng.standard_normal(dims)
        spread = 10.0 ** rng.uniform(-6, 1)
        scale = 10.0 ** rng.uniform(-35, 18, size=(rows, 1)) if trial % 3 == 0 else 1.0
        vectors = ((center + spread * rng.standard_normal((rows, dims))) * scale).astype(np.float32)
        special = rng.integers(0, rows, size=3)
        vectors[special[0]] = 0
        vectors[special[1], 0] = np.nan if trial % 2 else np.inf
        query = (center + spread * rng.standard_normal(dims)).astype(np.float32).astype(np.float64)
        query_norm2 = float(np.einsum("ij,ij->i", query[None], query[None])[0])
        distance, null = _distances(vectors.astype(np.float64), query, query_norm2, metric)
        for k in (1, 5, 50):
            order = np.lexsort((np.arange(rows), distance, null))[:k]
            kth = distance[order[-1]] if not null[order[-1]] and not np.isnan(distance[order[-1]]) else np.inf
            for farthest in (np.inf, kth):
                kept = set(_candidates(vectors, query, query_norm2, metric, k, farthest).tolist())
                assert set(order.tolist()) <= kept, (trial, k, farthest)


def test_cosine_is_pgml_cosine_distance(conn, data):
    by_function = conn.execute("""SELECT tableoid, ctid, pgml.cosine_distance(e, %s::real[]) AS d FROM vec4
                                  WHERE e IS NOT NULL ORDER BY d, ctid LIMIT 3000""", (data["query"],)).fetchall()
    got = nearest(conn, "vec4", data["query"], 3000, "cosine")
    same(got, by_function)
    assert got[-2][2] is None and got[-1][2] is None  # the zero vectors, as cosine_distance gives them
    zero = nearest(conn, "vec4", [0.0] * DIMS, 4, "cosine")  # NaN for the rows with NaN or Infinity, then NULLs
    same(zero, brute_force(conn, "vec4", [0.0] * DIMS, 4, "cosine"))
    assert [row[2] is None for row in zero] == [False, False, True, True]


def test_join_back_and_defaults(conn, data):
    rows = conn.execute("""SELECT v.id, n.distance FROM pgml.nearest('vec4', 'e', %s::real[], 2) WITH ORDINALITY AS n
                           JOIN vec4 v ON (v.tableoid, v.ctid) = (n.tableoid, n.ctid) ORDER BY n.ordinality""",
                        (data["query"],)).fetchall()
    assert rows == [(1, pytest.approx(0, abs=1e-12)), (398, pytest.approx(0, abs=1e-12))]
    conn.execute("CREATE TEMP TABLE vec_temp AS SELECT e FROM vec4")  # found through pg_temp
    same(nearest(conn, "vec_temp", data["query"], 5, "l2"), brute_force(conn, "vec_temp", data["query"], 5, "l2"))
    conn.execute("DROP TABLE vec_temp")


def test_snapshot_of_the_statement(dsn, conn, data):
    conn.execute("CREATE TABLE IF NOT EXISTS vec_snap AS SELECT e FROM vec4 WHERE e <> %s::real[]", (data["query"],))
    far = nearest(conn, "vec_snap", data["query"], 1, "l2")
    # a row written by the same statement is not visible to it
    got = conn.execute("""WITH added AS (INSERT INTO vec_snap VALUES (%s) RETURNING 1)
                          SELECT * FROM pgml.nearest('vec_snap', 'e', %s::real[], 1, 'l2')""",
                       (data["query"], data["query"])).fetchall()
    assert got == far
    assert nearest(conn, "vec_snap", data["query"], 1, "l2")[0][2] == 0
    # nor one committed after a repeatable-read transaction's snapshot
    with psycopg.connect(dsn, autocommit=True) as reader:
        reader.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        before = nearest(reader, "vec_snap", data["tie"], 2, "l2")
        conn.execute("DELETE FROM vec_snap WHERE e = %s::real[]", (data["tie"],))
        assert nearest(reader, "vec_snap", data["tie"], 2, "l2") == before
        reader.execute("COMMIT")
        assert nearest(reader, "vec_snap", data["tie"], 2, "l2") != before
    conn.execute("DROP TABLE vec_snap")


@pytest.fixture
def role(conn):
    conn.execute(f"DROP OWNED BY {ROLE}") if one(conn, "SELECT count(*) FROM pg_roles WHERE rolname = %s",
                                               (ROLE,)) else None
    conn.execute(f"DROP ROLE IF EXISTS {ROLE}")
    conn.execute(f"CREATE ROLE {ROLE} IN ROLE pgml_user")
    yield ROLE
    conn.execute(f"DROP OWNED BY {ROLE}")
    conn.execute(f"DROP ROLE {ROLE}")


def test_privileges_and_row_level_security(dsn, conn, data, role):
    conn.execute("DROP TABLE IF EXISTS vec_rls")
    conn.execute("CREATE TABLE vec_rls (owner name, e real[])")
    conn.execute("INSERT INTO vec_rls SELECT CASE WHEN id %% 3 = 0 THEN %s ELSE 'someone' END, e FROM vec4", (role,))
    conn.execute("ALTER TABLE vec_rls ENABLE ROW LEVEL SECURITY")
    conn.execute("CREATE POLICY mine ON vec_rls USING (owner = current_user)")
    try:
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute(f"SET ROLE {role}")
            err = sql_error(c, "SELECT * FROM pgml.nearest('vec_rls', 'e', %s::real[], 3)", (data["query"],))
            assert err.sqlstate == "42501" and "vec_rls" in err.diag.message_primary
            conn.execute(f"GRANT SELECT ON vec_rls TO {role}")
            got = nearest(c, "vec_rls", data["query"], 20, "cosine")
            same(got, brute_force(c, "vec_rls", data["query"], 20, "cosine"))
            owners = conn.execute("SELECT DISTINCT owner FROM vec_rls WHERE ctid = ANY(%s::tid[])",
                                  ([r[1] for r in got],)).fetchall()
            assert owners == [(role,)]
    finally:
        conn.execute("DROP TABLE vec_rls")


def test_statement_timeout_stops_a_long_scan(dsn):
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("CREATE TEMP TABLE long_scan AS "
                  "SELECT ARRAY[i, -i, i % 7, 1]::real[] AS e FROM generate_series(1, 600000) i")
        query = "SELECT count(*) FROM pgml.nearest('long_scan', 'e', '{1,2,3,4}', 5)"
        started = time.perf_counter()
        assert one(c, query) == 5
        whole = time.perf_counter() - started
        c.execute(f"SET statement_timeout = {max(20, int(whole * 1000 / 20))}")
        started = time.perf_counter()
        with pytest.raises(psycopg.errors.QueryCanceled):
            c.execute(query)
        elapsed = time.perf_counter() - started
        c.execute("RESET statement_timeout")
        assert one(c, "SELECT 42") == 42  # no cancel left pending
        assert elapsed < whole / 2, (elapsed, whole)


@pytest.mark.parametrize("good, rows, sqlstate, fragment", [
    (500, ["{1,2,3}", "{1,2,3,4}"], "22000", "vectors of different dimensions: 3 and 4"),
    (500, ["{1,2,3}"], "22000", "vectors of different dimensions: 3 and 4"),
    (0, ["{1,2,3}", "{3,2,1}"], "22000", "vectors of different dimensions: 3 and 4"),
    (500, ["{1,2,3,4}", "{}"], "22000", "vectors of different dimensions: 0 and 4"),
    (500, ["{1,2,3,4}", "{1,NULL,3,4}"], "22004", "NULL elements"),
    (500, ["{1,2,3,4}", "{{1,2},{3,4}}"], "22000", "one-dimensional"),
    (0, ["{{1,2},{3,4}}", "{{1,2},{3,4}}"], "22000", "one-dimensional"),
])
def test_bad_vectors_in_the_table(conn, good, rows, sqlstate, fragment):
    conn.execute("DROP TABLE IF EXISTS vec_bad")
    conn.execute("CREATE TABLE vec_bad (e real[])")
    conn.execute("INSERT INTO vec_bad SELECT '{4,3,2,1}' FROM generate_series(1, %s)", (good,))
    conn.execute("INSERT INTO vec_bad SELECT unnest(%s::text[])::real[]", (rows,))
    err = sql_error(conn, "SELECT * FROM pgml.nearest('vec_bad', 'e', '{1,2,3,4}', 3)")
    assert err.sqlstate == sqlstate and fragment in err.diag.message_primary, err.diag.message_primary
    assert "The row at ctid (" in err.diag.message_detail
    conn.execute("DROP TABLE vec_bad")


@pytest.mark.parametrize("call, sqlstate", [
    ("pgml.nearest('vec4', 'e', '{1,2}', 0)", "22023"),
    ("pgml.nearest('vec4', 'e', '{1,2}', -1)", "22023"),
    ("pgml.nearest('vec4', 'e', '{1,2}', NULL)", "22004"),
    ("pgml.nearest(NULL, 'e', '{1,2}', 1)", "22004"),
    ("pgml.nearest('vec4', NULL, '{1,2}', 1)", "22004"),
    ("pgml.nearest('vec4', 'e', NULL, 1)", "22004"),
    ("pgml.nearest('vec4', 'e', '{1,2}', 1, NULL)", "22004"),
    ("pgml.nearest('vec4', 'e', '{1,2}', 1, 'manhattan')", "22023"),
    ("pgml.nearest('vec4', 'e', '{}', 1)", "22023"),
    ("pgml.nearest('vec4', 'e', '{1,NULL}', 1)", "22004"),
    ("pgml.nearest('vec4', 'e', '{{1,2},{3,4}}', 1)", "22000"),
    ("pgml.nearest('vec4', 'e', '{1,2}', 1)", "22000"),  # the table's vectors have 16 elements
    ("pgml.nearest('vec4', 'nope', '{1,2}', 1)", "42703"),
    ("pgml.nearest('vec4', 'id', '{1,2}', 1)", "42804"),
    ("pgml.nearest('pg_class', 'relname', '{1,2}', 1)", "42804"),
    ("pgml.nearest('pg_stat_activity', 'pid', '{1,2}', 1)", "42809"),
    ("pgml.nearest('no_such_table', 'e', '{1,2}', 1)", "42P01"),
])
def test_argument_errors(conn, data, call, sqlstate):
    err = sql_error(conn, f"SELECT * FROM {call}")
    assert err.sqlstate == sqlstate, err.diag.message_primary


def test_similarity_functions(conn):
    assert one(conn, "SELECT pgml.cosine_similarity('{1,0}', '{0,1}')") == 0
    assert one(conn, "SELECT pgml.cosine_similarity('{1,2}', '{2,4}')") == pytest.approx(1)
    assert one(conn, "SELECT pgml.cosine_distance('{1,2}', '{2,4}')") == pytest.approx(0, abs=1e-15)
    assert one(conn, "SELECT pgml.dot_product('{1,2,3}', '{4,5,6}')") == 32
    assert one(conn, "SELECT pgml.dot_product('[0:2]={1,2,3}', '{4,5,6}')") == 32  # lower bounds do not matter
    assert one(conn, "SELECT pgml.cosine_distance('{1,2}', NULL)") is None
    assert one(conn, "SELECT pgml.cosine_similarity('{0,0}', '{1,1}')") is None
    assert one(conn, "SELECT pgml.dot_product('{}', '{}')") is None
    for query, sqlstate, fragment in (("SELECT pgml.cosine_similarity('{1,2}', '{1,2,3}')", "22000", "2 and 3"),
                                      ("SELECT pgml.dot_product('{1,NULL}', '{1,2}')", "22004", "NULL elements"),
                                      ("SELECT pgml.cosine_distance('{{1,2}}', '{1,2}')", "22000", "one-dim"),
                                      ("SELECT pgml._similarity('dot_product', pgml._array_bytes('{1,2}'::int[]), "
                                       "pgml._array_bytes('{1,2}'::real[]))", "22023", "real[] or double"),
                                      ("SELECT pgml._similarity('dot_product', '\\x0102', '\\x0102')", "38000",
                                       "similarity"),
                                      ("SELECT pgml._similarity('manhattan', pgml._array_bytes('{1,2}'::real[]), "
                                       "pgml._array_bytes('{1,2}'::real[]))", "22023", "manhattan")):
        err = sql_error(conn, query)
        assert err.sqlstate == sqlstate and fragment in err.diag.message_primary, err.diag.message_primary


def test_similarity_is_inlined_and_ignores_search_path(dsn, data):
    with psycopg.connect(dsn, autocommit=True) as c:
        plan = "\n".join(r[0] for r in c.execute(
            "EXPLAIN VERBOSE SELECT pgml.cosine_distance(e, %s::real[]) FROM vec4", (data["query"],)).fetchall())
        assert "pgml._similarity('cosine_distance'::text, pgml._array_bytes(e)" in plan, plan
        expected = one(c, "SELECT sum(pgml.dot_product(e, e)) FROM vec4 WHERE id < 10")
        c.execute("SET search_path = ''")
        assert one(c, "SELECT pg_catalog.sum(pgml.dot_product(e, e)) FROM public.vec4 "
                      "WHERE id OPERATOR(pg_catalog.<) 10") == expected


def test_similarity_over_a_table_matches_sql(conn, data):
    got = conn.execute("SELECT pgml.cosine_distance(e, %s::real[]), pgml.cosine_similarity(e, %s::real[]), "
                       "pgml.dot_product(e, %s::real[]) "
                       "FROM vec4 WHERE e IS NOT NULL AND id BETWEEN 21 AND 2900 ORDER BY id",
                       (data["query"],) * 3).fetchall()
    expected = conn.execute(f"""SELECT ({BRUTE['cosine']} FROM unnest(e, %s::real[]) t(x, y)),
                                       -({BRUTE['inner_product']} FROM unnest(e, %s::real[]) t(x, y))
                                FROM vec4 WHERE e IS NOT NULL AND id BETWEEN 21 AND 2900 ORDER BY id""",
                            (data["query"],) * 2).fetchall()
    for (distance, similarity, dot), (sql_distance, sql_dot) in zip(got, expected):
        assert distance == pytest.approx(sql_distance, abs=1e-9) and similarity == pytest.approx(1 - sql_distance)
        assert dot == pytest.approx(sql_dot, rel=1e-12)
