"""The training data: the relation, its columns, the rows, and the train / test split.

The relation is resolved as a regclass in the caller's search_path, its columns are quoted
identifiers and values are bound parameters: no caller-given text becomes SQL. Rows come
through a server-side cursor in chunks; rows with a NULL in a column the task needs are
skipped and counted per column.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field

from ..errors import InvalidParameter, UndefinedColumn, WrongObjectType

FETCH_ROWS = 1000
RELKINDS = {"r": "table", "p": "partitioned table", "v": "view", "m": "materialized view", "f": "foreign table"}
INTEGER_TYPES = {"int2", "int4", "int8"}


@dataclass(frozen=True)
class Column:
    name: str
    type: str            # format_type(), e.g. "text", "integer", "text[]", "jsonb"
    typname: str         # pg_type.typname (arrays: "_text")
    category: str        # pg_type.typcategory ("S" strings, "N" numbers, "A" arrays, "B" boolean, "E" enums, ...)
    element: str | None  # the element's typname, for arrays
    element_category: str | None
    comment: str | None

    @property
    def is_text(self) -> bool:
        return self.category == "S"

    @property
    def is_json(self) -> bool:
        return self.typname in ("json", "jsonb")

    @property
    def is_text_array(self) -> bool:
        return self.category == "A" and self.element_category == "S"

    @property
    def is_label(self) -> bool:
        """Can hold class values: text, integers, booleans, enums."""
        return self.category in ("S", "B", "E") or self.typname in INTEGER_TYPES

    @property
    def class_names(self) -> list[str] | None:
        """Names of an integer ClassLabel column made by pgml.load_dataset (kept in its comment)."""
        if self.typname not in INTEGER_TYPES or not self.comment:
            return None
        try:
            names = json.loads(self.comment).get("class_label")
        except (ValueError, AttributeError):
            return None
        return names if isinstance(names, list) and all(isinstance(n, str) for n in names) else None


@dataclass
class Relation:
    oid: int
    name: str            # schema-qualified and quoted, ready for SQL
    kind: str
    columns: dict[str, Column]

    def column(self, name: str, role: str) -> Column:
        if name not in self.columns:
            shown = ", ".join(self.columns) or "none"
            raise UndefinedColumn(f"column {name} ({role}) does not exist in {self.name}",
                                  hint=f"Its columns: {shown}. Name the column with y_column_name or "
                                       f"hyperparams.dataset_args.")
        return self.columns[name]


def resolve(db, relation: int | str) -> Relation:
    """The relation (an oid, or a schema-qualified name recorded earlier) and its columns."""
    if relation is None or not str(relation).strip():
        raise InvalidParameter("relation_name must name a table or view")
    oid = relation if isinstance(relation, int) else db.regclass(relation)
    row = db.execute(
        "SELECT pg_catalog.format('%I.%I', n.nspname, c.relname) AS name, c.relkind::text AS kind "
        "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1",
        [oid], ["oid"])[0]
    if row["kind"] not in RELKINDS:
        raise WrongObjectType(f"{row['name']} is not a table or view")
    rows = db.execute(
        "SELECT a.attname::text AS name, pg_catalog.format_type(a.atttypid, a.atttypmod) AS type, "
        "t.typname::text AS typname, t.typcategory::text AS category, e.typname::text AS element, "
        "e.typcategory::text AS element_category, pg_catalog.col_description(a.attrelid, a.attnum) AS comment "
        "FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid "
        "LEFT JOIN pg_catalog.pg_type e ON e.oid = t.typelem AND t.typcategory = 'A' "
        "WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum", [oid], ["oid"])
    columns = {r["name"]: Column(r["name"], r["type"], r["typname"], r["category"], r["element"],
                                 r["element_category"], r["comment"]) for r in rows}
    return Relation(oid, row["name"], row["kind"], columns)


@dataclass
class Rows:
    """The usable rows (one dict per row, role -> value) and what was skipped."""

    values: list[dict]
    total: int                                              # rows in the relation
    nulls: dict[str, int] = field(default_factory=dict)     # column -> rows skipped for a NULL there
    other: dict[str, int] = field(default_factory=dict)     # another reason -> rows skipped for it

    @property
    def skipped(self) -> int:
        return self.total - len(self.values)

    def describe_skips(self) -> str:
        return ", ".join([f"{n} with NULL {c}" for c, n in self.nulls.items() if n]
                         + [f"{n} {why}" for why, n in self.other.items() if n])


def read(db, rel: Relation, roles: dict[str, str], optional: set[str] = frozenset(),
         pin_scan: bool = False) -> Rows:
    """The rows of rel as {role: value}: roles maps a role to its column; rows with a NULL in a required
    role's column are skipped and counted, NULLs in optional roles stay None. JSON columns are decoded.

    'last' sampling means the end of the relation as it is read, so no synchronized scan may start
    mid-table: pgml._tune says so in its SET clause; a procedure (pin_scan) sets it for its transaction."""
    columns = list(dict.fromkeys(roles.values()))
    select = ", ".join(db.quote_ident(c) for c in columns)
    if pin_scan:
        db.execute("SELECT pg_catalog.set_config('synchronize_seqscans', 'off', true)")
    json_columns = {c for c in columns if rel.columns[c].is_json}
    out, nulls, total = [], {c: 0 for c in columns}, 0
    with db.cursor(f"SELECT {select} FROM {rel.name}") as cursor:
        while chunk := cursor.fetch(FETCH_ROWS):
            for raw in chunk:
                total += 1
                missing = next((roles[r] for r in roles if r not in optional and raw[roles[r]] is None), None)
                if missing is not None:
                    nulls[missing] += 1
                    continue
                row = {}
                for role, column in roles.items():
                    value = raw[column]
                    if column in json_columns and value is not None:
                        value = json.loads(value)
                    row[role] = value
                out.append(row)
    return Rows(out, total, {c: n for c, n in nulls.items() if n})


def test_count(n: int, test_size: float) -> int:
    """Rows held out for testing: test_size < 1 is a fraction (rounded up), >= 1 a row count."""
    if test_size is None or not math.isfinite(test_size) or test_size <= 0:
        raise InvalidParameter(f"test_size must be a fraction between 0 and 1 or a row count, not {test_size}",
                               hint="The test split gives the metrics that decide deployment.")
    count = math.ceil(n * test_size) if test_size < 1 else int(test_size)
    if count >= n:
        raise InvalidParameter(f"test_size {test_size:g} leaves no rows to train on ({n} usable rows)",
                               hint="Pass a smaller fraction or row count, or add rows.")
    return max(count, 1)


def split(n: int, test_size: float, sampling: str, labels: list | None, seed: int) -> tuple[list[int], list[int]]:
    """(train, test) row indexes. random and stratified shuffle with seed; stratified keeps each class's
    share in both splits (classification only; other tasks split at random); last tests on the last rows."""
    count = test_count(n, test_size)
    if sampling == "last":
        return list(range(n - count)), list(range(n - count, n))
    rng = random.Random(seed)
    if sampling == "stratified" and labels is not None:
        by_class: dict = {}
        for i, label in enumerate(labels):
            by_class.setdefault(label, []).append(i)
        classes = sorted(by_class, key=str)
        exact = {c: len(by_class[c]) * count / n for c in classes}
        take = {c: math.floor(exact[c]) for c in classes}
        # largest remainders get the rows left over, never a class's last row
        for c in sorted(classes, key=lambda c: (-(exact[c] - take[c]), str(c))):
            if sum(take.values()) >= count:
                break
            if take[c] < len(by_class[c]) - 1:
                take[c] += 1
        test = []
        for c in classes:
            members = list(by_class[c])
            rng.shuffle(members)
            test += members[:take[c]]
        chosen = set(test)
        return [i for i in range(n) if i not in chosen], sorted(test)
    if sampling not in ("random", "stratified"):
        raise InvalidParameter(f"test_sampling must be random, last or stratified, not {sampling!r}")
    order = list(range(n))
    rng.shuffle(order)
    test = sorted(order[:count])
    chosen = set(test)
    return [i for i in range(n) if i not in chosen], test
