"""Vector search over REAL[] / float8[] columns without pgvector.

Vectors reach Python as their arrays' own bytes: pgml._array_bytes is PostgreSQL's
`byteasend` (which hands back its detoasted argument unchanged) declared for arrays, so a
vector costs a copy rather than a Python float per element (PL/Python converts a real[]
argument element by element) or a send call per element (array_send). Those bytes are an
ArrayType after its length word: int32 ndim, int32 dataoffset (0 when there is no NULL
bitmap), Oid element type, int32 dims[ndim], int32 lbounds[ndim], then the elements in the
server's byte order, which is this process's.

pgml.nearest reads a table in ranges of blocks (TID range scans through the relation as
named, so privileges, row-level security and partitions behave as in the caller's own
query): per range and table one array_agg of the vectors, a (rows, dims) matrix read by
numpy in place, and one of the ctids. For REAL[] columns, float32 sums bound every row's
distance first, and only the rows that can be among the k get their exact float64 distance.
The similarity functions (pgml.cosine_distance, ...) compute one pair per call.
"""

from __future__ import annotations

import math
import struct
import time

import numpy as np

from .errors import (DataException, DatatypeMismatch, InvalidParameter, NullValue, PgmlError, UndefinedColumn,
                     WrongObjectType)
from .db import SqlError

METRICS = ("cosine", "l2", "inner_product")
KINDS = ("cosine_distance", "cosine_similarity", "dot_product")  # of pgml._similarity
FLOAT4_ARRAY, FLOAT8_ARRAY = 1021, 1022  # pg_type oids of real[] and double precision[]
ELEMENTS = {700: np.dtype(np.float32), 701: np.dtype(np.float64)}
_HEAD = struct.Struct("=iiI")  # ndim, dataoffset, element type
ONE_DIM_DATA = 20  # where a one-dimensional array without NULLs keeps its elements (MAXALIGN(24) - 4)

BATCH_BYTES = 2 << 20  # vector bytes one range query should bring back
MALLOC_PRIMER = 24 << 20  # see _raise_malloc_thresholds
FIRST_BLOCKS = 1  # the first range; later ones are sized from what came back (a block of TOASTed
# vectors can carry megabytes)
SAME_DIMENSIONS = "Compare embeddings made by the same model."


class DimensionMismatch(DataException):
    """22000, as the SQL similarity functions always raised it."""

    def __init__(self, a: int, b: int, detail: str | None = None):
        super().__init__(f"vectors of different dimensions: {a} and {b}", hint=SAME_DIMENSIONS, detail=detail)


def _elements(raw: bytes, where: str | None = None) -> np.ndarray:
    """The elements of one array's bytes (a view, in their own dtype)."""
    ndim, dataoffset, element = _HEAD.unpack_from(raw)
    if dataoffset:
        raise NullValue("vectors must not contain NULL elements", detail=where,
                        hint="Replace NULL elements, or set the whole vector to NULL to skip the row.")
    if ndim > 1:
        raise DataException(f"vectors must be one-dimensional arrays, not {ndim}-dimensional", detail=where)
    dtype = ELEMENTS.get(element)
    if dtype is None:
        raise InvalidParameter("vectors must be real[] or double precision[]", detail=where)
    count = struct.unpack_from("=i", raw, 12)[0] if ndim else 0
    return np.frombuffer(raw, dtype, count, len(raw) - count * dtype.itemsize)


class _Parsed:
    """The last vector seen at one argument position: a query vector is parsed once per statement."""

    __slots__ = ("raw", "vector", "norm2")

    def __init__(self):
        self.raw = None

    def get(self, raw: bytes):
        if raw != self.raw:
            vector = _elements(raw).astype(np.float64)
            self.raw, self.vector, self.norm2 = raw, vector, float(vector @ vector)
        return self.vector, self.norm2


_FIRST, _SECOND = _Parsed(), _Parsed()


def similarity(kind: str, a: bytes, b: bytes) -> float | None:
    """cosine_distance, cosine_similarity or dot_product of two arrays' bytes, in float8.

    NULL (None) where the SQL functions always gave NULL: empty vectors, and a zero vector
    in the cosine functions."""
    if kind not in KINDS:
        raise InvalidParameter(f"unknown similarity {kind!r}", hint=f"Use one of {', '.join(KINDS)}.")
    x, xx = _FIRST.get(a)
    y, yy = _SECOND.get(b)
    if len(x) != len(y):
        raise DimensionMismatch(len(x), len(y))
    if not len(x):
        return None
    dot = float(x @ y)
    if kind == "dot_product":
        return dot
    norms = xx * yy
    if norms == 0:
        return None
    cosine = dot / math.sqrt(norms)
    return 1.0 - cosine if kind == "cosine_distance" else cosine


def _check_arguments(relation, column_name, query, k, metric) -> np.ndarray:
    for name, value in (("relation", relation), ("column_name", column_name), ("query", query), ("k", k),
                        ("metric", metric)):
        if value is None:
            raise NullValue(f"pgml.nearest: {name} must not be NULL")
    if metric not in METRICS:
        raise InvalidParameter(f"pgml.nearest: unknown metric {metric!r}", hint=f"Use one of {', '.join(METRICS)}.")
    if k < 1:
        raise InvalidParameter(f"pgml.nearest: k must be at least 1, not {k}")
    if any(isinstance(e, list) for e in query):
        raise DataException("pgml.nearest: the query must be a one-dimensional array")
    if any(e is None for e in query):
        raise NullValue("pgml.nearest: the query must not contain NULL elements")
    if not query:
        raise InvalidParameter("pgml.nearest: the query vector is empty")
    return np.array(query, dtype=np.float64)


def _table(db, relation: str, column_name: str) -> dict:
    """The relation's oid and qualified name, its column's type, and whether it has child tables."""
    found = db.execute(
        "SELECT c.oid, pg_catalog.format('%I.%I', n.nspname, c.relname) AS name, c.relkind, a.atttypid AS type, "
        "       pg_catalog.format_type(a.atttypid, a.atttypmod) AS type_name, "
        "       EXISTS (SELECT FROM pg_catalog.pg_inherits i WHERE i.inhparent = c.oid) AS parent "
        "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attname = $2 AND a.attnum > 0 "
        "     AND NOT a.attisdropped "
        "WHERE c.oid = $1::pg_catalog.regclass", [relation, column_name], ["text", "name"])[0]
    if found["relkind"] not in ("r", "p"):
        raise WrongObjectType(f"pgml.nearest: {found['name']} is not a table")
    if found["type"] is None:
        raise UndefinedColumn(f"pgml.nearest: column {column_name} of {found['name']} does not exist")
    if found["type"] not in (FLOAT4_ARRAY, FLOAT8_ARRAY):
        raise DatatypeMismatch(f"pgml.nearest: column {column_name} of {found['name']} is {found['type_name']}, "
                               "not real[] or double precision[]",
                               hint="pgvector's vector columns have their own operators and indexes (<=>, <->, <#>).")
    return found


class _Nearest:
    """The k nearest rows seen so far, as arrays: NULL distance (a zero vector under cosine: after
    everything), distance (NaN after every number, as PostgreSQL sorts it), ctid, tableoid."""

    def __init__(self, k: int):
        self.k = k
        self.null = np.empty(0, dtype=bool)
        self.distance = np.empty(0)
        self.ctid = np.empty(0, dtype=np.int64)
        self.tableoid = np.empty(0, dtype=np.int64)

    def add(self, distance, null, ctid, tableoid: int) -> None:
        null = np.concatenate((self.null, null))
        distance = np.concatenate((self.distance, distance))
        ctid = np.concatenate((self.ctid, ctid))
        tableoid = np.concatenate((self.tableoid, np.full(len(ctid) - len(self.ctid), tableoid, dtype=np.int64)))
        order = np.lexsort((tableoid, ctid, distance, null))[:self.k]
        self.null, self.distance, self.ctid, self.tableoid = null[order], distance[order], ctid[order], tableoid[order]

    def kth(self) -> float:
        """The k-th distance so far: a row farther than it cannot be among the k (inf while unknown)."""
        if len(self.distance) < self.k or self.null[-1] or np.isnan(self.distance[-1]):
            return math.inf
        return float(self.distance[-1])

    def rows(self) -> list[tuple]:
        return [(int(t), _ctid(c), None if n else float(d))
                for n, d, c, t in zip(self.null, self.distance, self.ctid, self.tableoid)]


def _distances(vectors: np.ndarray, query: np.ndarray, query_norm2: float, metric: str):
    """(distance, NULL mask) of each row of vectors (float64, modified) to query.

    einsum computes each row's sum the same way wherever the row lies in the batch, so equal
    vectors get equal distances and their ties are decided by ctid alone. NaN and infinities
    come out as in PostgreSQL's float8 arithmetic (numpy's warnings about them are not wanted)."""
    with np.errstate(all="ignore"):
        if metric == "l2":
            vectors -= query
            return np.sqrt(np.einsum("ij,ij->i", vectors, vectors)), np.zeros(len(vectors), dtype=bool)
        dot = np.einsum("ij,j->i", vectors, query)
        if metric == "inner_product":
            return -dot, np.zeros(len(vectors), dtype=bool)
        norms = np.sqrt(np.einsum("ij,ij->i", vectors, vectors) * query_norm2)
        return 1.0 - dot / norms, norms == 0


ROUNDOFF = 2.0 ** -24  # float32's unit roundoff
TINY = 2.0 ** -100  # below this, float32 underflow could outweigh the rounding bound


def _candidates(vectors: np.ndarray, query: np.ndarray, query_norm2: float, metric: str, k: int,
                farthest: float) -> np.ndarray:
    """The rows of a float32 matrix that can be among the k nearest, found from float32 sums.

    A float32 sum of d products is within g = d * ROUNDOFF (twice that here, for room) of the
    exact one relative to the sum of their absolute values, which is at most |x| |q|: so each
    row's exact distance lies in [low, high] around the float32 one. A row whose low exceeds
    the k-th smallest high (or `farthest`, the k-th exact distance so far) is not among the k;
    the others, and the rows whose float32 sums bound nothing (not finite, or so small that
    underflow matters), get their exact float64 distance."""
    dims = vectors.shape[1]
    g = 2 * dims * ROUNDOFF
    if g > 0.01 or query_norm2 < TINY:  # tens of thousands of dimensions, or a (nearly) zero query
        return np.arange(len(vectors))
    q32 = query.astype(np.float32)
    with np.errstate(over="ignore", invalid="ignore"):  # overflows make rows unsure, as NaNs do
        dot = np.einsum("ij,j->i", vectors, q32).astype(np.float64)
        norm2 = np.einsum("ij,ij->i", vectors, vectors).astype(np.float64)
    unsure = ~(np.isfinite(dot) & np.isfinite(norm2) & (norm2 >= TINY))
    dot[unsure], norm2[unsure] = 0.0, 1.0  # keeps the arithmetic below finite; those rows are candidates anyway
    norms = np.sqrt(norm2 / (1 - g) * query_norm2) * (1 + 1e-9)  # >= |x| |q|
    if metric == "cosine":
        approximate, margin = 1.0 - dot / np.sqrt(norm2 * query_norm2), 2 * g + 1e-12
        low, high = approximate - margin, approximate + margin
    elif metric == "inner_product":
        margin = g * norms
        low, high = -dot - margin, -dot + margin
    else:  # l2: |x - q|^2 = |x|^2 - 2 x.q + |q|^2, each term within g (|x| + |q|)^2
        square = norm2 - 2 * dot + query_norm2
        margin = g * (np.sqrt(norm2 / (1 - g)) + math.sqrt(query_norm2)) ** 2 * (1 + 1e-9)
        low, high = np.sqrt(np.maximum(square - margin, 0)), np.sqrt(square + margin)
    sure_high = high[~unsure]
    limit = farthest
    if len(sure_high) >= k:
        limit = min(limit, float(np.partition(sure_high, k - 1)[k - 1]))
    return np.flatnonzero(unsure | (low <= limit))


_TID = np.dtype([("hi", "=u2"), ("lo", "=u2"), ("offset", "=u2")])  # ItemPointerData


def _ctids(raw: bytes) -> np.ndarray:
    """A tid[]'s bytes as int64 keys, block << 16 | offset (the order of tid's comparisons)."""
    count = struct.unpack_from("=i", raw, 12)[0]
    tids = np.frombuffer(raw, _TID, count, ONE_DIM_DATA)
    return (tids["hi"].astype(np.int64) << 32) | (tids["lo"].astype(np.int64) << 16) | tids["offset"]


def _ctid(key) -> str:
    return f"({int(key) >> 16},{int(key) & 0xFFFF})"


class _Range:
    """One range of blocks: its vectors as one array_agg (a (rows, dims) matrix) and its ctids."""

    def __init__(self, db, table: dict, column_name: str, dims: int):
        self.db, self.name, self.dims = db, table["name"], dims
        self.dtype = ELEMENTS[700 if table["type"] == FLOAT4_ARRAY else 701]
        col = db.quote_ident(column_name)
        rows = f"FROM {self.name} WHERE ctid >= $1 AND ctid < $2 AND {col} IS NOT NULL"
        # Child tables (partitions, inheritance) come back one row each.
        tableoid = "tableoid" if table["parent"] else f"{int(table['oid'])}::pg_catalog.oid"
        self.select = (f"SELECT {tableoid} AS tableoid, pgml._array_bytes(pg_catalog.array_agg({col})) AS vectors, "
                       f"pgml._array_bytes(pg_catalog.array_agg(ctid)) AS ctids {rows}"
                       + (" GROUP BY tableoid" if table["parent"] else ""))
        self.each = f"SELECT ctid, pgml._array_bytes({col}) AS vector {rows}"

    def read(self, first: int, last: int):
        """(tableoid, ctid keys, vectors, bytes read) of each table with rows in blocks [first, last);
        the vectors are a (rows, dims) matrix read in place, in the column's element type."""
        bounds = [f"({first},0)", f"({last},0)"]
        try:
            with self.db.subtransaction():
                results = self.db.execute(self.select, bounds, ["tid", "tid"])
        except SqlError as exc:
            if exc.sqlstate != "2202E":  # array_agg: arrays of different shapes
                raise
            self._bad_row(bounds)
        for result in results:
            if result["ctids"] is None:
                continue
            ctids, raw = _ctids(result["ctids"]), result["vectors"]
            ndim, dataoffset, _ = _HEAD.unpack_from(raw)
            if ndim != 2 or dataoffset or struct.unpack_from("=ii", raw, 12) != (len(ctids), self.dims):
                self._bad_row(bounds)
            count = len(ctids) * self.dims
            vectors = np.frombuffer(raw, self.dtype, count, len(raw) - count * self.dtype.itemsize)
            yield result["tableoid"], ctids, vectors.reshape(len(ctids), self.dims), len(raw)

    def _bad_row(self, bounds):
        """The error of the range's first vector that is not one-dimensional, has NULLs or the wrong size."""
        with self.db.cursor(self.each, bounds, ["tid", "tid"]) as rows:
            while batch := rows.fetch(100):
                for row in batch:
                    where = f"The row at ctid {row['ctid']} of {self.name}."
                    elements = _elements(row["vector"], where)
                    if len(elements) != self.dims:
                        raise DimensionMismatch(len(elements), self.dims, detail=where)
        raise PgmlError(f"pgml.nearest: unreadable vectors in {self.name}")  # not reached: some row differed


def _raise_malloc_thresholds() -> None:
    """Let the blocks of each range be reused rather than page-faulted afresh.

    glibc's malloc serves a block above its mmap threshold (128 kB at first) with mmap, and
    gives freed heap back to the system beyond its trim threshold; each range allocates a few
    blocks of BATCH_BYTES (the aggregate, its tuple, the Python bytes), so every range would
    fault in new pages (measured: 220,000 minor faults, 0.7 s of system time for 200,000
    REAL[384]). Freeing an mmapped block raises the mmap threshold to its size and the trim
    threshold to twice that (mallopt(3)), as any large allocation in the backend does: one
    untouched block freed at once does it here. Elsewhere than glibc it costs two system calls."""
    np.empty(MALLOC_PRIMER, dtype=np.uint8)


def nearest(db, relation, column_name, query, k, metric) -> list[tuple]:
    """pgml.nearest: (tableoid, ctid, distance) of the k rows nearest to query, nearest first."""
    started = time.perf_counter()
    q = _check_arguments(relation, column_name, query, k, metric)
    table = _table(db, relation, column_name)
    ranges = _Range(db, table, column_name, len(q))
    # Blocks of the largest table of the tree, read once the first range query holds its locks.
    size = ("WITH RECURSIVE tree(relid) AS (SELECT $1::pg_catalog.oid UNION "
            "  SELECT i.inhrelid FROM pg_catalog.pg_inherits i JOIN tree t ON i.inhparent = t.relid) "
            "SELECT pg_catalog.max(pg_catalog.pg_relation_size(relid)) "
            "       / pg_catalog.current_setting('block_size')::pg_catalog.int8 AS blocks FROM tree")

    _raise_malloc_thresholds()
    best = _Nearest(k)
    q_norm2 = float(np.einsum("ij,ij->i", q[None], q[None])[0])  # as each row's (a query row gets 0)
    start, step, end = 0, FIRST_BLOCKS, FIRST_BLOCKS
    seen = exact = queries = 0
    in_numpy = 0.0
    while start < end:
        got = 0
        for tableoid, ctids, vectors, size_read in ranges.read(start, min(start + step, end)):
            computing = time.perf_counter()
            seen += len(ctids)
            if vectors.dtype == np.float32:
                rows = _candidates(vectors, q, q_norm2, metric, k, best.kth())
                vectors, ctids = vectors[rows], ctids[rows]
            exact += len(ctids)
            best.add(*_distances(vectors.astype(np.float64), q, q_norm2, metric), ctids, tableoid)
            in_numpy += time.perf_counter() - computing
            got += size_read
        if queries == 0:
            end = db.execute(size, [table["oid"]], ["oid"])[0]["blocks"]
        queries += 1
        start += step
        # Size the next range to bring back about BATCH_BYTES (vectors stored out of line, in TOAST,
        # make a block carry far more than its 8 kB), growing at most 4x at a time.
        step = max(1, min(step * 4, step * BATCH_BYTES // got)) if got else step * 4
    elapsed = time.perf_counter() - started
    db.debug(f"pgml.nearest: {seen} vectors of {table['name']} ({exact} compared exactly) in {queries} range "
               f"queries, {elapsed:.3f} s: "
               f"{elapsed - in_numpy:.3f} s reading (SQL, bytes), {in_numpy:.3f} s computing distances")
    return best.rows()
