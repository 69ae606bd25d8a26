"""The SQL API in one table: every function and procedure of schema pgml, with its attributes and grants.

scripts/gen_sql.py writes sql/functions/*.sql from it (committed, so installing stays `psql -f
sql/install.sql`); tests/test_sqlapi.py fails when they differ. Types, tables, views and triggers stay
hand-written in sql/schema/. Each routine gets REVOKE ALL FROM PUBLIC and one grant:

- pgml_user:  run models and manage its own backend's models;
- pgml_admin: also tune, deploy, load datasets, embed tables, validate (pgml_admin is a member of pgml_user);
- superuser:  nothing granted (the venv, the settings' defaults).

A PL/Python routine with an `entry` calls server.<entry>(plpy, *args): PL/Python hands the arguments over
as the list `args` (as well as by name, where a parameter named `args`, or named like a result column, is
shadowed), so they go on by position, in the SQL order, to an entry point that takes them in that order.

PARALLEL UNSAFE, unless a routine runs no PL/Python: PL/Python runs every SPI call in a subtransaction,
which PostgreSQL refuses in parallel mode, also in the leader of a parallel plan (where RESTRICTED
functions run): the package's activation and every settings read would fail ("cannot start
subtransactions during a parallel operation"), and on PostgreSQL 15 a backend crashed after such
failures. An UNSAFE function keeps the whole statement serial, which costs nothing here: the models
batch and thread inside one call.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from . import __version__

PINNED = (("search_path", "pg_catalog, pg_temp"),)
GRANTEES = ("pgml_user", "pgml_admin", "superuser")

ACTIVATE = """if 'pgml_plpy' not in GD:
    plpy.execute('SELECT pgml._activate()')"""


@dataclass(frozen=True)
class Param:
    mode: str      # IN, INOUT, OUT
    name: str      # as written in SQL (quoted where it must be); "" when unnamed
    type: str
    default: str | None


def params(signature: str) -> list[Param]:
    """The parameters of a signature such as `task text, args jsonb DEFAULT '{}'`."""
    parts, depth, quoted, start = [], 0, False, 0
    for i, ch in enumerate(signature):
        if ch == "'":
            quoted = not quoted
        elif not quoted and ch in "([":
            depth += 1
        elif not quoted and ch in ")]":
            depth -= 1
        elif not quoted and depth == 0 and ch == ",":
            parts.append(signature[start:i])
            start = i + 1
    parts.append(signature[start:])
    out = []
    for part in (p.strip() for p in parts):
        if not part:
            continue
        mode = "IN"
        found = re.match(r"(IN|INOUT|OUT)\s+", part)
        if found:
            mode, part = found.group(1), part[found.end():]
        if re.fullmatch(r"[\w.\[\]]+", part):  # a type alone: an unnamed parameter
            out.append(Param(mode, "", part, None))
            continue
        found = re.match(r'("[^"]+"|\w+)\s+(.+?)(?:\s+DEFAULT\s+(.+))?$', part, re.S)
        if not found:
            raise ValueError(f"cannot read the parameter {part!r}")
        out.append(Param(mode, found.group(1), found.group(2), found.group(3)))
    return out


@dataclass(frozen=True)
class Routine:
    name: str                    # in schema pgml
    signature: str               # the parameters, as in CREATE FUNCTION
    returns: str | None          # None: a procedure
    grant: str                   # pgml_user, pgml_admin or superuser
    summary: str                 # COMMENT ON: one line for \df+
    notes: str = ""              # why its attributes are what they are (comment lines above it)
    entry: str | None = None     # server.<entry>(plpy, *args): the body, in PL/Python
    entry_kwargs: str = ""       # keyword arguments for the entry, as Python text
    body: str | None = None      # a body of its own, in its language
    language: str = "plpython3u"
    volatility: str = "VOLATILE"
    parallel: str = "UNSAFE"       # see PARALLEL in the module's notes
    strict: bool = False
    cost: int | None = None
    rows: int | None = None
    set: tuple = PINNED          # SET clauses: (name, value[, trailing comment])
    security_definer: bool = False

    def __post_init__(self):
        assert self.grant in GRANTEES, self.grant
        assert (self.entry is None) != (self.body is None), f"{self.name}: an entry or a body"
        assert self.entry is None or self.language == "plpython3u", self.name
        assert self.language != "plpython3u" or self.parallel == "UNSAFE", f"{self.name}: PL/Python in parallel mode"
        assert self.returns is not None or not self.set, f"{self.name}: a procedure that commits has no SET"

    @property
    def kind(self) -> str:
        return "FUNCTION" if self.returns is not None else "PROCEDURE"

    @property
    def identity(self) -> str:
        """pgml.name(types) as GRANT and COMMENT name it."""
        types = ", ".join(p.type for p in params(self.signature) if p.mode != "OUT")
        return f"pgml.{self.name}({types})"

    def code(self) -> str:
        if self.body is not None:
            return self.body
        if self.returns == "trigger":
            call = "plpy, TD"
        else:
            ins = [p for p in params(self.signature) if p.mode == "IN"]
            given = "*args" if len(ins) == len(params(self.signature)) else f"*args[:{len(ins)}]"
            call = f"plpy, {given}" if ins else "plpy"
        if self.entry_kwargs:
            call += f", {self.entry_kwargs}"
        return f"{ACTIVATE}\nreturn GD['pgml_plpy'].{self.entry}({call})"


@dataclass(frozen=True)
class Area:
    name: str                    # sql/functions/<name>.sql
    header: str
    routines: tuple[Routine, ...]


U, A, S = GRANTEES

# ------------------------------------------------------------------------------------------- housekeeping

HOUSEKEEPING = Area("housekeeping", "Activation of the venv in each backend, version checks and PostgresML's "
                                    "housekeeping functions.", (
    Routine("_sql_version", "", "text", U, "the release these SQL functions belong to",
            notes="The venv's package must be the same release (checked on activation).",
            language="sql", volatility="IMMUTABLE", parallel="SAFE", body=f"SELECT '{__version__}'::text"),
    Routine("activate_venv", "venv text", "boolean", S, "records the venv the server's Python uses",
            notes="Records the venv as the body of pgml._venv(), which only its owner (the installing superuser)\n"
                  "can replace: the venv decides what code the server runs, so it is never a GUC that any user\n"
                  "could SET. New connections use the new venv.",
            language="plpgsql", body="""BEGIN
  IF venv IS NULL OR venv !~ '^/' THEN
    RAISE EXCEPTION 'pgml: the venv must be an absolute path, not %', coalesce(quote_literal(venv), 'NULL')
      USING ERRCODE = '22023';
  END IF;
  BEGIN
    PERFORM pg_stat_file(venv);
  EXCEPTION WHEN undefined_file THEN
    RAISE EXCEPTION 'pgml: the venv % does not exist on the database server', venv
      USING ERRCODE = '58P01', HINT = 'Create it with scripts/setup.sh, or pass the folder that holds it.';
  END;
  EXECUTE format('CREATE OR REPLACE FUNCTION pgml._venv() RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE '
                 'SET search_path = pg_catalog, pg_temp AS %L', format('SELECT %L::text', venv));
  REVOKE ALL ON FUNCTION pgml._venv() FROM PUBLIC;
  GRANT EXECUTE ON FUNCTION pgml._venv() TO pgml_user;
  RETURN true;
END"""),
    Routine("_activate", "", "text", U, "puts the venv on sys.path and imports pgml_plpy, once per backend",
            notes="Puts the venv's site-packages (with its .pth files) in front of the server's sys.path once\n"
                  "per backend and imports the package; every plpython3u function calls it on first use.",
            body="""import os, site, sys
row = plpy.execute("SELECT pgml._venv() AS venv, pgml._sql_version() AS version")[0]
if 'pgml_plpy' not in GD:
    venv = row['venv']
    lib = 'python%d.%d' % sys.version_info[:2]
    site_packages = os.path.join(venv, 'lib', lib, 'site-packages')
    if not os.access(site_packages, os.R_OK | os.X_OK):
        plpy.error('pgml: %s is missing or not readable by the server' % site_packages,
                   hint="The server's Python is %s: build the venv with it (scripts/setup.sh), make it readable "
                        "by the server's OS user, and re-run sql/install.sql with -v venv=..." % lib,
                   sqlstate='55000')
    before = list(sys.path)
    site.addsitedir(site_packages)
    sys.path[:] = [p for p in sys.path if p not in before] + before
    try:
        import pgml_plpy.server as server
    except Exception as exc:
        plpy.error('pgml: cannot import pgml_plpy from %s: %s' % (venv, exc),
                   hint='Install the package into the venv (scripts/setup.sh) and re-run sql/install.sql.',
                   sqlstate='55000')
    server.check_install(plpy, row['version'])
    GD['pgml_plpy'] = server
return row['venv']"""),
    Routine("version", "", "text", U, "the version of pgml_plpy", entry="version"),
    Routine("python_version", "", "text", U, "the version of the server's Python",
            body="import sys\nreturn sys.version"),
    Routine("python_package_version", "name text", "text", A, "the version of a Python distribution in the venv",
            entry="python_package_version"),
    Routine("validate_python_dependencies", "", "TABLE (package text, version text)", A,
            "each dependency of pgml_plpy and its version; an error names any that is missing",
            entry="validate_python_dependencies"),
    Routine("validate", "", "TABLE (item text, ok boolean, detail text)", A,
            "the installation checked end to end: one row per part, whether it works, and what to fix",
            entry="validate"),
))

# ----------------------------------------------------------------------------------------------- settings

SETTINGS = Area("settings", "Server settings (the table pgml.settings is in sql/schema/settings.sql).", (
    Routine("_check_setting", "", "trigger", A, "checks each change of pgml.settings",
            notes="Checks each new value, so that a typo cannot break every call, and that only a superuser adds,\n"
                  "changes or removes a trust setting.",
            entry="check_setting"),
    Routine("_setting_defaults", "", "TABLE (name text, value text, description text)", S,
            "every setting's default and description (seeds pgml.settings)", entry="setting_defaults"),
))

# ---------------------------------------------------------------------------------------------- transform


def _overloads(name: str, text_inputs: str, as_array: str, returns: str, rows: int | None) -> tuple[Routine, ...]:
    """PostgresML's four overloads of pgml.<name>: task JSONB or TEXT; inputs as text (text_inputs, as_array
    its text[] form) or JSONB[]. Each a one-line SQL wrapper over pgml._<name>."""
    return tuple(
        Routine(name, f"task {task}, args jsonb DEFAULT '{{}}', {inputs}, cache boolean DEFAULT false", returns, U,
                f"PostgresML's pgml.{name}: task as {task}, {inputs.split(' DEFAULT')[0]}",
                language="sql", cost=10000000, rows=rows,
                body=f"SELECT pgml._{name}({task_expr}, {task_is_json}, args, {expr}, {inputs_are_json})")
        for inputs, expr, inputs_are_json in ((text_inputs, as_array, "false"),
                                              ("inputs jsonb[] DEFAULT '{}'", "inputs::text[]", "true"))
        for task, task_expr, task_is_json in (("jsonb", "task::text", "true"), ("text", "task", "false")))


TRANSFORM = Area("transform", "pgml.transform: PostgresML's four overloads (task TEXT or JSONB; inputs TEXT[] or "
                              "JSONB[]),\neach a one-line SQL wrapper over pgml._transform.\n"
                              "`cache` is accepted for compatibility: models are always cached per backend.\n"
                              "COST as PostgresML, so that LIMIT and WHERE apply before the call.", (
    Routine("_transform", "task text, task_is_json boolean, args jsonb, inputs text[], inputs_are_json boolean",
            "jsonb", U, "pgml.transform's PL/Python body", entry="transform", cost=10000000),
    *_overloads("transform", "inputs text[] DEFAULT '{}'", "inputs", "jsonb", None),
    Routine("_transform_stream",
            "task text, task_is_json boolean, args jsonb, inputs text[], inputs_are_json boolean",
            "SETOF jsonb", U, "pgml.transform_stream's PL/Python body",
            notes="pgml.transform_stream: the generated text as rows of JSON arrays of pieces, while it is\n"
                  "generated; read it through a cursor (DECLARE c CURSOR FOR SELECT pgml.transform_stream(...)).\n"
                  "Call it in the SELECT list, as above: in FROM, PostgreSQL collects every row before the first.",
            entry="transform_stream", cost=10000000, rows=100),
    *_overloads("transform_stream", "input text DEFAULT ''", "ARRAY[input]", "SETOF jsonb", 100),
))

# -------------------------------------------------------------------------------------------------- chunk

CHUNK = Area("chunk", "pgml.chunk: PostgresML's splitter names and kwargs (LangChain's text splitters).", (
    Routine("chunk", "splitter text, \"text\" text, kwargs jsonb DEFAULT '{}'",
            "TABLE (chunk_index bigint, chunk text)", U, "a text split into chunks, chunk_index from 1",
            notes="Not STRICT: a NULL splitter or text is an error (22004) rather than silently no rows.\n"
                  "IMMUTABLE: the chunks depend only on the arguments (and the installed splitter library,\n"
                  "as collations depend on theirs). chunk_index counts from 1, in document order.",
            entry="chunk", volatility="IMMUTABLE", cost=1000, rows=20),
))

# ------------------------------------------------------------------------------------------- load_dataset

LOAD_DATASET = Area("load_dataset", "pgml.load_dataset: a Hugging Face dataset (from the server's datasets cache, "
                                    "or downloaded\nwhere hub_downloads allows it) or files on the server (superusers "
                                    "and members of\npg_read_server_files only, like COPY FROM a file) into the typed "
                                    "table pgml.\"<name>\".", (
    Routine("load_dataset", "source text, subset text DEFAULT NULL, \"limit\" bigint DEFAULT NULL, "
                            "kwargs jsonb DEFAULT '{}'", "TABLE (table_name text, \"rows\" bigint)", A,
            "a dataset or data files into the table pgml.\"<name>\"",
            notes="VOLATILE and PARALLEL UNSAFE: it creates, replaces and fills a table. Not STRICT: a NULL\n"
                  "source is an error (22004). The table belongs to the calling role, which fills it with its own\n"
                  "privileges; pgml._create_table makes it, as roles have no CREATE on schema pgml.",
            entry="load_dataset", cost=100000000, rows=1),
    Routine("_create_table", "table_name text, column_names text[], column_types regtype[], owner name", "text", A,
            "makes the table pgml.\"<table_name>\" for a member of pgml_admin (load_dataset, tune's snapshots)",
            notes="A table pgml.\"<table_name>\" (load_dataset's tables, tune's snapshots) owned by owner, a role the\n"
                  "session may act as that is a member of pgml_admin: roles have no CREATE on schema pgml, so that\n"
                  "none can put a function, type or view there for others to run. Column types are types, never SQL\n"
                  "text; the caller fills the table with its own privileges.",
            language="plpgsql", security_definer=True, body="""DECLARE
  qualified text := format('pgml.%I', table_name);
  columns text;
BEGIN
  IF NOT (pg_has_role(session_user, owner, 'MEMBER') AND pg_has_role(owner, 'pgml_admin', 'MEMBER')) THEN
    RAISE EXCEPTION 'role % may not create tables in schema pgml', owner
      USING ERRCODE = '42501', HINT = 'pgml.load_dataset and pgml.tune make tables there for members of pgml_admin.';
  END IF;
  IF coalesce(cardinality(column_names), 0) = 0 OR cardinality(column_names) <> cardinality(column_types) THEN
    RAISE EXCEPTION 'a table needs as many column types as column names, and at least one'
      USING ERRCODE = '22023';
  END IF;
  SELECT string_agg(format('%I %s', c.name, format_type(c.type, NULL)), ', ' ORDER BY c.i) INTO columns
  FROM unnest(column_names, column_types) WITH ORDINALITY AS c(name, type, i);
  EXECUTE format('CREATE TABLE %s (%s)', qualified, columns);
  EXECUTE format('ALTER TABLE %s OWNER TO %I', qualified, owner);
  RETURN qualified;
END"""),
))

# -------------------------------------------------------------------------------------------------- embed

EMBED = Area("embed", "Embeddings (sentence-transformers), cross-encoder ranking, and the DBA's procedure that embeds\n"
                      "a whole table in committed batches. Similarity and nearest-neighbour search: vectors.sql.", (
    Routine("_embed", "transformer text, inputs text[], kwargs jsonb", "SETOF text", U,
            "pgml.embed's PL/Python body: one array literal per input",
            notes="Vectors cross PL/Python as array literals (one C-level format per row) and become REAL[]\n"
                  "here: returning Python float lists costs a text round trip per float.",
            entry="embed", cost=1000000, rows=100),
    Routine("embed", "transformer text, \"text\" text, kwargs jsonb DEFAULT '{}'", "real[]", U,
            "the embedding of one text",
            notes="IMMUTABLE as in PostgresML: the same model gives the same vector, so a constant query's\n"
                  "embedding is computed once per statement (and generated columns may use it).",
            language="sql", volatility="IMMUTABLE", cost=1000000,
            body="SELECT e::real[] FROM pgml._embed(transformer, ARRAY[\"text\"], kwargs) AS e"),
    Routine("embed", "transformer text, inputs text[], kwargs jsonb DEFAULT '{}'", "SETOF real[]", U,
            "the embeddings of texts, in their order", language="sql", volatility="IMMUTABLE", cost=1000000,
            rows=100,
            body="SELECT e::real[] FROM pgml._embed(transformer, inputs, kwargs) WITH ORDINALITY AS r(e, n) "
                 "ORDER BY n"),
    Routine("rank", "transformer text, query text, documents text[], kwargs jsonb DEFAULT '{}'",
            "TABLE (corpus_id bigint, score float8, \"text\" text)", U,
            "documents ranked against a query by a cross-encoder, best first",
            entry="rank", volatility="IMMUTABLE", cost=1000000, rows=10),
    Routine("embed_table", "relation regclass, text_column text, embedding_column text, "
                           "transformer text DEFAULT 'sentence-transformers/all-MiniLM-L6-v2', "
                           "kwargs jsonb DEFAULT '{}', batch_size integer DEFAULT 256", None, A,
            "fills a table's embedding column in committed batches",
            notes="No SET clause: a procedure that commits cannot have one. It sets search_path locally in\n"
                  "each of its transactions and builds its SQL from the regclass and quoted column names.",
            entry="embed_table", set=()),
))

# ------------------------------------------------------------------------------------------------ vectors


def _similarity(kind: str, summary: str) -> Routine:
    return Routine(kind, "a real[], b real[]", "float8", U, summary, language="sql", volatility="IMMUTABLE",
                   strict=True, set=(),
                   body=f"SELECT pgml._similarity('{kind}', pgml._array_bytes(a), pgml._array_bytes(b))")


VECTORS = Area("vectors", "Vectors over REAL[] without pgvector: the similarity functions and pgml.nearest.", (
    Routine("_array_bytes", "anyarray", "bytea", U, "an array's own bytes, as bytea",
            notes="An array's own bytes as bytea: PostgreSQL's byteasend returns its (detoasted) varlena argument\n"
                  "unchanged, and any varlena is a valid bytea, so declared for arrays it hands a vector, or a\n"
                  "whole batch of them aggregated with array_agg, to PL/Python in one copy. (A binary-coercible\n"
                  "cast cannot be made for array types, and array_send costs a function call per element: 17 us\n"
                  "for a REAL[384].) No SET clause: it is C code that looks nothing up.",
            language="internal", volatility="IMMUTABLE", strict=True, parallel="SAFE", set=(), body="byteasend"),
    Routine("_similarity", "kind text, a bytea, b bytea", "float8", U,
            "cosine_distance, cosine_similarity or dot_product of two vectors' bytes",
            notes="kind: cosine_distance, cosine_similarity or dot_product of two vectors' bytes, in float8.\n"
                  "No SET clause, which costs 2 us of a row's 10: the only SQL it runs is the schema-qualified\n"
                  "activation (pgml._activate pins its own search_path), so the caller's search_path changes "
                  "nothing.\nIts entry point is called once per row: it reports errors itself, without entry's "
                  "per-call work.",
            entry="similarity", volatility="IMMUTABLE", strict=True, set=()),
    Routine("cosine_distance", "a real[], b real[]", "float8", U, "1 - the cosine similarity (pgvector's <=>)",
            notes="Similarity without pgvector. STRICT: a NULL vector gives NULL (it sorts last); a zero vector\n"
                  "gives NULL in the cosine functions; different dimensions are an error (22000), and so are NULL\n"
                  "elements (22004) and arrays of more than one dimension (22000).\n"
                  "The planner inlines these SQL bodies into the calling query, which a SET clause would prevent:\n"
                  "a row then costs two byte copies and one PL/Python call. Every name in them is schema-qualified\n"
                  "and they use no operator, so the caller's search_path cannot change what they run.",
            language="sql", volatility="IMMUTABLE", strict=True, set=(),
            body="SELECT pgml._similarity('cosine_distance', pgml._array_bytes(a), pgml._array_bytes(b))"),
    _similarity("cosine_similarity", "the cosine similarity of two vectors"),
    _similarity("dot_product", "the dot product of two vectors"),
    Routine("nearest", "relation regclass, column_name text, query real[], k integer, metric text DEFAULT 'cosine'",
            "TABLE (tableoid oid, ctid tid, distance double precision)", U,
            "the k rows of a relation nearest to a query vector",
            notes="The k rows of relation nearest to query, read in ranges of blocks as bytes and compared in numpy.\n"
                  "SECURITY INVOKER (the default): the caller's privileges and row-level security apply. STABLE:\n"
                  "its queries see the calling statement's snapshot. Join back on (tableoid, ctid).",
            entry="nearest", volatility="STABLE", cost=100000, rows=10),
))

# -------------------------------------------------------------------------------------------- vectorizer

VECTORIZER = Area("vectorizer", """Vectorizers: a table's text kept chunked and embedded in <name>_embeddings as its rows change
(the bookkeeping tables and the view pgml.vectorizers are in sql/schema/vectorizer.sql, the event
triggers in sql/install.sql). The API (create, alter, drop, run) is PL/Python, VOLATILE and PARALLEL
UNSAFE: it writes tables and the queue, through SPI. pgml_user may call it: each call checks the
caller's rights on the table and the vectorizer.
The bookkeeping functions pgml._vectorizer_* that pgml_user may call run as their owner (SECURITY
DEFINER) with a pinned search_path, and first check that the session may act as the vectorizer's
owner (as SET ROLE would require). The others are the owner's only: what those call as owner, and
the trigger functions (no role may attach them to a table).""", (
    Routine("_vectorizer_columns", "relation oid, attnums smallint[]", "name[]", S,
            "the names of a relation's columns, in the order of their attnums",
            language="sql", volatility="STABLE", parallel="SAFE",
            notes="""The names of a relation's columns, in the order of attnums.""",
            body="""SELECT array_agg(a.attname ORDER BY u.i)
FROM unnest(attnums) WITH ORDINALITY AS u(n, i)
JOIN pg_attribute a ON a.attrelid = relation AND a.attnum = u.n AND NOT a.attisdropped"""),
    Routine("_vectorizer_key", "relation oid, attnums smallint[], alias text", "text", S,
            "SQL text of an ARRAY of a row's key columns as the text of their JSON values",
            language="sql", volatility="STABLE", parallel="SAFE",
            notes="""The queue's key of a row: its key columns' values as the text of their JSON values, in key order
("ARRAY[to_jsonb(<alias>.key1) #>> '{}', ...]"), as the row trigger reads them from to_jsonb(NEW).
Runs cast them back to the columns' types (keys of array, composite and JSON types are refused).""",
            body="""SELECT 'ARRAY[' || string_agg(format('to_jsonb(%s.%I) #>> ''{}''', alias, c), ', ') || ']'
FROM unnest(pgml._vectorizer_columns(relation, attnums)) AS c"""),
    Routine("_vectorizer_table_key", "relation oid, n integer", "smallint[]", S,
            "the first n columns of an embeddings table's primary key",
            language="sql", volatility="STABLE", parallel="SAFE",
            notes="""The first n columns of an embeddings table's primary key: the source's key as it was named when the
table was made (a source column renamed later keeps its old name there).""",
            body="""SELECT ARRAY(SELECT k.a FROM pg_index i, unnest(i.indkey::smallint[]) WITH ORDINALITY AS k(a, ord)
             WHERE i.indrelid = relation AND i.indisprimary ORDER BY k.ord LIMIT n)"""),
    Routine("_vectorizer_get", "vectorizer_name text, for_change boolean", "TABLE (id bigint, owner name, source oid, embeddings oid, building oid, "
            "model text, chunking jsonb, kwargs jsonb, building_model text, building_chunking jsonb, building_kwargs jsonb)", U,
            "a vectorizer by name, for a session that may act as its owner",
            language="plpgsql", security_definer=True,
            notes="""The vectorizer named vectorizer_name, for a session that may act as its owner; locked for a change
(FOR NO KEY UPDATE: runs wait, the triggers' inserts do not) when for_change.""",
            body="""DECLARE
  v pgml._vectorizers;
BEGIN
  IF for_change THEN
    SELECT * INTO v FROM pgml._vectorizers x WHERE x.name = vectorizer_name FOR NO KEY UPDATE;
  ELSE
    SELECT * INTO v FROM pgml._vectorizers x WHERE x.name = vectorizer_name;
  END IF;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'there is no vectorizer named %', coalesce(quote_literal(vectorizer_name), 'NULL')
      USING ERRCODE = '42704', HINT = 'SELECT name FROM pgml.vectorizers lists yours.';
  END IF;
  PERFORM pgml._vectorizer_check(v.id, v.owner);
  RETURN QUERY SELECT v.id, (SELECT r.rolname FROM pg_roles r WHERE r.oid = v.owner), v.source, v.embeddings,
                      v.building, v.model, v.chunking, v.kwargs, v.building_model, v.building_chunking,
                      v.building_kwargs;
END"""),
    Routine("_vectorizer_check", "vectorizer bigint, owner oid", "void", S,
            "fails unless the session may act as the vectorizer's owner",
            language="plpgsql", volatility="STABLE", parallel="SAFE", security_definer=True,
            notes="""The session may act as the vectorizer's owner.""",
            body="""BEGIN
  IF owner IS NULL OR NOT pg_has_role(session_user, owner, 'MEMBER') THEN
    RAISE EXCEPTION 'vectorizer % belongs to %',
        (SELECT quote_literal(v.name) FROM pgml._vectorizers v WHERE v.id = vectorizer),
        coalesce(owner::regrole::text, 'nobody')
      USING ERRCODE = '42501', HINT = 'Only its owner (the role that created it) or a superuser may run, alter or '
                                      'drop it.';
  END IF;
END"""),
    Routine("_vectorizer_name_taken", "vectorizer_name text", "boolean", U,
            "whether a vectorizer has that name",
            language="sql", volatility="STABLE", parallel="SAFE", security_definer=True,
            notes="""Whether a vectorizer has that name (names are per database, whoever owns them).""",
            body="""SELECT EXISTS (SELECT FROM pgml._vectorizers v WHERE v.name = vectorizer_name)"""),
    Routine("_vectorizer_triggers", "vectorizer bigint", "void", S,
            "(re)creates a vectorizer's triggers on its source",
            language="plpgsql",
            notes="""(Re)creates a vectorizer's triggers on its source. Inserts and deletes: one statement-level trigger
each, reading the transition table in one INSERT ... SELECT. Updates: a row trigger that fires only
when the text or the key changed, and carries the vectorizer's name and the key columns' names (a
column renamed later re-creates it: pgml._vectorizer_sources_altered).""",
            body="""DECLARE
  v pgml._vectorizers;
  src regclass;
  text_col name;
  key_cols name[];
  prefix text;
BEGIN
  SELECT * INTO STRICT v FROM pgml._vectorizers x WHERE x.id = vectorizer;
  src := v.source::regclass;
  text_col := (pgml._vectorizer_columns(v.source, ARRAY[v.text_attnum]))[1];
  key_cols := pgml._vectorizer_columns(v.source, v.key_attnums);
  IF text_col IS NULL OR cardinality(key_cols) IS DISTINCT FROM cardinality(v.key_attnums) THEN
    RAISE EXCEPTION 'the key or text column of vectorizer % is gone from %', v.name, src
      USING ERRCODE = '55000', HINT = format('SELECT pgml.drop_vectorizer(%L) first.', v.name);
  END IF;
  prefix := 'pgml_vectorizer_' || v.id;
  EXECUTE format('CREATE OR REPLACE TRIGGER %I AFTER INSERT ON %s REFERENCING NEW TABLE AS pgml_new '
                 'FOR EACH STATEMENT EXECUTE FUNCTION pgml._vectorizer_enqueue(%L)', prefix || '_insert', src, v.id);
  EXECUTE format('CREATE OR REPLACE TRIGGER %I AFTER DELETE ON %s REFERENCING OLD TABLE AS pgml_old '
                 'FOR EACH STATEMENT EXECUTE FUNCTION pgml._vectorizer_enqueue(%L)', prefix || '_delete', src, v.id);
  EXECUTE format('CREATE OR REPLACE TRIGGER %I AFTER UPDATE OF %s ON %s FOR EACH ROW WHEN (%s) '
                 'EXECUTE FUNCTION pgml._vectorizer_enqueue_row(%s)', prefix || '_update',
                 (SELECT string_agg(format('%I', c), ', ') FROM unnest(key_cols || text_col) AS c), src,
                 (SELECT string_agg(format('OLD.%1$I IS DISTINCT FROM NEW.%1$I', c), ' OR ')
                  FROM unnest(text_col || key_cols) AS c),
                 (SELECT string_agg(quote_literal(a), ', ')
                  FROM unnest(ARRAY[v.id::text, v.name] || key_cols::text[]) AS a));
  EXECUTE format('CREATE OR REPLACE TRIGGER %I AFTER TRUNCATE ON %s FOR EACH STATEMENT '
                 'EXECUTE FUNCTION pgml._vectorizer_enqueue(%L)', prefix || '_truncate', src, v.id);
END"""),
    Routine("_vectorizer_register", "vectorizer_name text, owner name, source oid, text_attnum smallint, key_attnums smallint[], "
            "embeddings oid, model text, chunking jsonb, kwargs jsonb, schedule text", "bigint", U,
            "registers a vectorizer: its triggers, its rows queued, its pg_cron job",
            language="plpgsql", security_definer=True,
            notes="""Registers a vectorizer whose embeddings table the caller made: its triggers, its existing rows queued,
and with schedule a pg_cron job that runs it as its owner. Returns how many rows it queued.""",
            body="""DECLARE
  src regclass := source::regclass;
  owner_id oid := (SELECT r.oid FROM pg_roles r WHERE r.rolname = owner);
  new_id bigint;
  text_col name := (pgml._vectorizer_columns(source, ARRAY[text_attnum]))[1];
  key_cols name[] := pgml._vectorizer_columns(source, key_attnums);
  queued bigint;
  job bigint;
BEGIN
  IF owner_id IS NULL OR NOT pg_has_role(session_user, owner_id, 'MEMBER') THEN
    RAISE EXCEPTION 'role % may not create a vectorizer for %', session_user, owner USING ERRCODE = '42501';
  END IF;
  IF NOT has_table_privilege(owner, source, 'TRIGGER') THEN
    RAISE EXCEPTION 'a vectorizer of % needs its ownership or the TRIGGER privilege on it', src
      USING ERRCODE = '42501', HINT = 'Its triggers queue the rows that change.';
  END IF;
  IF text_col IS NULL OR EXISTS (SELECT FROM unnest(key_attnums || text_attnum) AS n
                                 WHERE NOT has_column_privilege(owner, source, n, 'SELECT')) THEN
    RAISE EXCEPTION 'a vectorizer of % needs SELECT on its key and text columns', src USING ERRCODE = '42501';
  END IF;
  IF key_attnums IS DISTINCT FROM (SELECT ARRAY(SELECT unnest(i.indkey::smallint[])) FROM pg_index i
                                   WHERE i.indrelid = source AND i.indisprimary) THEN
    RAISE EXCEPTION '% is not the primary key of %', key_cols, src USING ERRCODE = '22023';
  END IF;
  IF NOT EXISTS (SELECT FROM pg_class e JOIN pg_class s ON s.oid = source
                 WHERE e.oid = embeddings AND e.relkind = 'r' AND e.relowner = owner_id
                   AND e.relnamespace = s.relnamespace) THEN
    RAISE EXCEPTION 'the embeddings table must be a table of % in the schema of %', owner, src
      USING ERRCODE = '42501';
  END IF;

  BEGIN
    INSERT INTO pgml._vectorizers (name, owner, source, text_attnum, key_attnums, embeddings, model, chunking,
                                   kwargs, schedule)
    VALUES (vectorizer_name, owner_id, source, text_attnum, key_attnums, embeddings, model, chunking, kwargs,
            schedule)
    RETURNING _vectorizers.id INTO new_id;
  EXCEPTION WHEN unique_violation THEN
    RAISE EXCEPTION 'a vectorizer named % exists', quote_literal(vectorizer_name)
      USING ERRCODE = '42710', HINT = 'Pick another name, or pgml.drop_vectorizer it first.';
  END;

  PERFORM pgml._vectorizer_triggers(new_id);
  queued := pgml._vectorizer_queue_all(new_id);

  IF schedule IS NOT NULL THEN
    IF NOT EXISTS (SELECT FROM pg_extension WHERE extname = 'pg_cron') THEN
      RAISE EXCEPTION 'schedule needs pg_cron, which is not installed in database %', current_database()
        USING ERRCODE = '0A000',
              HINT = 'Install pg_cron (Debian: postgresql-15-cron), add it to shared_preload_libraries, set '
                     'cron.database_name, and CREATE EXTENSION pg_cron; or leave schedule NULL and run '
                     'python -m pgml_plpy.worker --dsn ..., or CALL pgml.run_vectorizer yourself.';
    END IF;
    BEGIN
      job := cron.schedule_in_database(pgml._vectorizer_job(vectorizer_name), schedule,
                                       format('CALL pgml.run_vectorizer(%L)', vectorizer_name),
                                       current_database(), owner);
    EXCEPTION WHEN internal_error OR invalid_parameter_value THEN
      RAISE EXCEPTION 'pg_cron refused the schedule %: %', quote_literal(schedule), SQLERRM
        USING ERRCODE = '22023', HINT = 'A cron schedule: pg_cron 1.4 counts in minutes, e.g. ''* * * * *''.';
    END;
    UPDATE pgml._vectorizers v SET cron_job = job WHERE v.id = new_id;
  END IF;
  PERFORM pg_notify('pgml_vectorizers', vectorizer_name);
  RETURN queued;
END"""),
    Routine("_vectorizer_job", "vectorizer_name text", "text", S,
            "pg_cron's job name for a vectorizer",
            language="sql", volatility="STABLE", parallel="SAFE",
            notes="""pg_cron's job name for a vectorizer (job names are per role, across databases).""",
            body="""SELECT format('pgml_vectorizer:%s:%s', current_database(), vectorizer_name)"""),
    Routine("_vectorizer_queue_all", "vectorizer bigint", "bigint", S,
            "queues every row of a vectorizer's source that has text",
            language="plpgsql",
            notes="""Queues every row of the source that has text (a new vectorizer, a rebuild). Called by the functions
above and below only: the owner's.""",
            body="""DECLARE
  v pgml._vectorizers;
  queued bigint;
BEGIN
  SELECT * INTO STRICT v FROM pgml._vectorizers x WHERE x.id = vectorizer;
  EXECUTE format('INSERT INTO pgml._vectorizer_queue (vectorizer_id, key) SELECT $1, %s FROM ONLY %s r '
                 'WHERE r.%I IS NOT NULL', pgml._vectorizer_key(v.source, v.key_attnums, 'r'), v.source::regclass,
                 (pgml._vectorizer_columns(v.source, ARRAY[v.text_attnum]))[1])
    USING v.id;
  GET DIAGNOSTICS queued = ROW_COUNT;
  RETURN queued;
END"""),
    Routine("_vectorizer_enqueue", "", "trigger", S,
            "the triggers that queue the keys of inserted, deleted and truncated rows",
            language="plpgsql", security_definer=True,
            notes="""The triggers' functions (TG_ARGV[0]: the vectorizer's id). They run as their owner for whichever
role changed the source, and only queue keys of the rows that changed. Only their owner may EXECUTE
them, so no role can attach them to another table (which would queue nothing harmful anyway: a
queued key only makes a run re-read that row as the vectorizer's owner).
Inserts, deletes (one INSERT ... SELECT from the statement's transition table) and TRUNCATE.""",
            body="""DECLARE
  v pgml._vectorizers;
  queued bigint := 0;
  keys_with_chunks text;
BEGIN
  SELECT * INTO v FROM pgml._vectorizers x WHERE x.id = TG_ARGV[0]::bigint;
  IF NOT FOUND OR v.source <> TG_RELID THEN
    RAISE EXCEPTION 'trigger % on % belongs to no vectorizer of this table', TG_NAME, TG_RELID::regclass
      USING ERRCODE = '55000', HINT = 'Drop the trigger.';
  END IF;
  IF TG_OP = 'INSERT' THEN
    EXECUTE format('INSERT INTO pgml._vectorizer_queue (vectorizer_id, key) SELECT $1, %s FROM pgml_new r '
                   'WHERE r.%I IS NOT NULL', pgml._vectorizer_key(v.source, v.key_attnums, 'r'),
                   (pgml._vectorizer_columns(v.source, ARRAY[v.text_attnum]))[1])
      USING v.id;
    GET DIAGNOSTICS queued = ROW_COUNT;
  ELSIF TG_OP = 'DELETE' THEN
    EXECUTE format('INSERT INTO pgml._vectorizer_queue (vectorizer_id, key) SELECT $1, %s FROM pgml_old r',
                   pgml._vectorizer_key(v.source, v.key_attnums, 'r'))
      USING v.id;
    GET DIAGNOSTICS queued = ROW_COUNT;
  ELSE  -- TRUNCATE: the keys that have chunks (in the table being rebuilt too) are re-synced, so removed
    SELECT string_agg(format('SELECT %s FROM %s r', pgml._vectorizer_key(t, pgml._vectorizer_table_key(
                               t, cardinality(v.key_attnums)), 'r'), t::regclass), ' UNION ')
    INTO keys_with_chunks
    FROM unnest(ARRAY[v.embeddings, v.building]) AS t WHERE EXISTS (SELECT FROM pg_class c WHERE c.oid = t);
    IF keys_with_chunks IS NOT NULL THEN
      EXECUTE format('INSERT INTO pgml._vectorizer_queue (vectorizer_id, key) SELECT $1, k FROM (%s) AS e(k)',
                     keys_with_chunks)
        USING v.id;
      GET DIAGNOSTICS queued = ROW_COUNT;
    END IF;
  END IF;
  IF queued > 0 THEN
    PERFORM pg_notify('pgml_vectorizers', v.name);
  END IF;
  RETURN NULL;
END"""),
    Routine("_vectorizer_enqueue_row", "", "trigger", S,
            "the trigger that queues the keys of rows whose text or key changed",
            language="plpgsql", security_definer=True,
            notes="""Updates: a row trigger whose WHEN clause lets through only rows whose text or key changed. Its
arguments are the vectorizer's id and name and the key columns' names, so that it reads no catalog:
one small statement takes the key from OLD and NEW (whatever the width of the rows), one inserts it.""",
            body="""DECLARE
  old_expr text := '';
  new_expr text := '';
  old_key text[];
  new_key text[];
BEGIN
  FOR i IN 2 .. TG_NARGS - 1 LOOP
    old_expr := old_expr || CASE WHEN i > 2 THEN ', ' ELSE '' END
                || format('to_jsonb(($1).%I) #>> ''{}''', TG_ARGV[i]);
    new_expr := new_expr || CASE WHEN i > 2 THEN ', ' ELSE '' END
                || format('to_jsonb(($2).%I) #>> ''{}''', TG_ARGV[i]);
  END LOOP;
  EXECUTE format('SELECT ARRAY[%s], ARRAY[%s]', old_expr, new_expr) INTO old_key, new_key USING OLD, NEW;
  INSERT INTO pgml._vectorizer_queue (vectorizer_id, key) VALUES (TG_ARGV[0]::bigint, new_key);
  IF old_key <> new_key THEN
    INSERT INTO pgml._vectorizer_queue (vectorizer_id, key) VALUES (TG_ARGV[0]::bigint, old_key);
  END IF;
  PERFORM pg_notify('pgml_vectorizers', TG_ARGV[1]);
  RETURN NULL;
END"""),
    Routine("_vectorizer_config", "vectorizer bigint", "TABLE (source text, key_columns name[], key_types text[], text_column name, "
            "target text, target_key_columns name[], model text, chunking jsonb, kwargs jsonb)", U,
            "what a run's batch works on, locked FOR SHARE until it commits",
            language="plpgsql", security_definer=True,
            notes="""What a run's batch works on: the source, its key and text columns, and the table it writes (the one
being rebuilt, while there is one) with its model, chunking and kwargs. FOR SHARE until the batch
commits: alter and drop wait for the batch, and the next batch sees what they changed. No row: the
vectorizer was dropped.""",
            body="""DECLARE
  v pgml._vectorizers;
  rebuilding boolean;
  target oid;
BEGIN
  SELECT * INTO v FROM pgml._vectorizers x WHERE x.id = vectorizer FOR SHARE;
  IF NOT FOUND THEN
    RETURN;
  END IF;
  PERFORM pgml._vectorizer_check(v.id, v.owner);
  rebuilding := v.building IS NOT NULL;
  target := CASE WHEN rebuilding THEN v.building ELSE v.embeddings END;
  RETURN QUERY
  SELECT (SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE c.oid = v.source),
         pgml._vectorizer_columns(v.source, v.key_attnums),
         (SELECT array_agg(format_type(a.atttypid, a.atttypmod) ORDER BY u.i)
          FROM unnest(v.key_attnums) WITH ORDINALITY AS u(n, i)
          JOIN pg_attribute a ON a.attrelid = v.source AND a.attnum = u.n),
         (pgml._vectorizer_columns(v.source, ARRAY[v.text_attnum]))[1],
         (SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE c.oid = target),
         pgml._vectorizer_columns(target, pgml._vectorizer_table_key(target, cardinality(v.key_attnums))),
         CASE WHEN rebuilding THEN v.building_model ELSE v.model END,
         CASE WHEN rebuilding THEN v.building_chunking ELSE v.chunking END,
         CASE WHEN rebuilding THEN v.building_kwargs ELSE v.kwargs END;
END"""),
    Routine("_vectorizer_due", "vectorizer bigint", "TABLE (items bigint, last_item bigint)", U,
            "how many items are due now, and the newest item's id",
            language="plpgsql", volatility="STABLE", parallel="SAFE", security_definer=True,
            notes="""How many items are due now, and the newest item's id: a run processes the items queued before it
started (the ones queued meanwhile by the next run), so that it ends.""",
            body="""BEGIN
  PERFORM pgml._vectorizer_check(v.id, v.owner) FROM pgml._vectorizers v WHERE v.id = vectorizer;
  RETURN QUERY
  SELECT count(*) FILTER (WHERE q.retry_at IS NULL OR q.retry_at <= now()), max(q.id)
  FROM pgml._vectorizer_queue q WHERE q.vectorizer_id = vectorizer;
END"""),
    Routine("_vectorizer_claim", "vectorizer bigint, up_to bigint, size integer", "TABLE (id bigint, key text[])", U,
            "claims due items for a batch (SKIP LOCKED, one run per key)",
            language="plpgsql", security_definer=True,
            notes="""Claims up to size due items with ids up to up_to, locked until the batch commits (others skip them),
and only items whose key no other run holds: a transaction advisory lock per (vectorizer, key hash),
so that two runs never write the chunks of one row at once. An item whose key another run holds
stays queued (the next batch or run re-reads that row).""",
            body="""BEGIN
  PERFORM pgml._vectorizer_check(v.id, v.owner) FROM pgml._vectorizers v WHERE v.id = vectorizer;
  RETURN QUERY
  WITH locked AS MATERIALIZED (
    SELECT q.id, q.key FROM pgml._vectorizer_queue q
    WHERE q.vectorizer_id = vectorizer AND q.id <= up_to AND (q.retry_at IS NULL OR q.retry_at <= now())
    ORDER BY q.id
    LIMIT size
    FOR UPDATE SKIP LOCKED)
  SELECT l.id, l.key FROM locked l
  WHERE pg_try_advisory_xact_lock(vectorizer::integer, hashtext(array_to_string(l.key, chr(31), '')))
  ORDER BY l.id;
END"""),
    Routine("_vectorizer_done", "vectorizer bigint, done bigint[], failed bigint[], errors text[]", "void", U,
            "a batch's outcome: done items go, failed ones wait for a retry with backoff",
            language="plpgsql", security_definer=True,
            notes="""A batch's outcome: done items go (with the failed items of their keys, which that sync supersedes);
failed ones get their error and a retry after 1, 4, 16, then 64 minutes, then none (retry_at infinity).""",
            body="""BEGIN
  PERFORM pgml._vectorizer_check(v.id, v.owner) FROM pgml._vectorizers v WHERE v.id = vectorizer;
  DELETE FROM pgml._vectorizer_queue q
  WHERE q.vectorizer_id = vectorizer
    AND (q.id = ANY (done)
         OR (q.error IS NOT NULL
             AND q.key IN (SELECT d.key FROM pgml._vectorizer_queue d
                           WHERE d.vectorizer_id = vectorizer AND d.id = ANY (done))));
  UPDATE pgml._vectorizer_queue q
  SET attempts = q.attempts + 1, error = f.error, failed_at = clock_timestamp(),
      retry_at = CASE WHEN q.attempts + 1 >= 5 THEN 'infinity'
                      ELSE clock_timestamp() + interval '1 minute' * 4 ^ q.attempts END
  FROM unnest(failed, errors) AS f(id, error)
  WHERE q.vectorizer_id = vectorizer AND q.id = f.id;
END"""),
    Routine("_vectorizer_finish", "vectorizer bigint, error text", "TABLE (old_table text, new_table text, schema name, table_name text)", U,
            "records a run's end; the tables to swap when a rebuild is complete",
            language="plpgsql", security_definer=True,
            notes="""The end of a run: when it ran and the error that ended it (NULL: none). When a rebuild is complete
(nothing queued, failed items included) it returns the old and the new table, which the run swaps
as the owner before calling pgml._vectorizer_swapped in the same transaction.""",
            body="""DECLARE
  v pgml._vectorizers;
BEGIN
  SELECT * INTO v FROM pgml._vectorizers x WHERE x.id = vectorizer FOR NO KEY UPDATE;
  IF NOT FOUND THEN
    RETURN;
  END IF;
  PERFORM pgml._vectorizer_check(v.id, v.owner);
  UPDATE pgml._vectorizers x SET last_run = clock_timestamp(), last_error = error WHERE x.id = vectorizer;
  IF error IS NULL AND v.building IS NOT NULL
     AND NOT EXISTS (SELECT FROM pgml._vectorizer_queue q WHERE q.vectorizer_id = vectorizer) THEN
    RETURN QUERY
    SELECT (SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c
            JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = v.embeddings),
           (SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c
            JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = v.building),
           (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = v.source),
           v.name || '_embeddings';
  END IF;
END"""),
    Routine("_vectorizer_swapped", "vectorizer bigint", "void", U,
            "the rebuilt table replaced the old one",
            language="plpgsql", security_definer=True,
            notes="""The rebuilt table replaced the old one: it is now the vectorizer's, with what it was built with.""",
            body="""BEGIN
  PERFORM pgml._vectorizer_check(v.id, v.owner) FROM pgml._vectorizers v WHERE v.id = vectorizer;
  UPDATE pgml._vectorizers v
  SET embeddings = v.building, model = v.building_model, chunking = v.building_chunking,
      kwargs = v.building_kwargs, building = NULL, building_model = NULL, building_chunking = NULL,
      building_kwargs = NULL
  WHERE v.id = vectorizer AND v.building IS NOT NULL;
END"""),
    Routine("_vectorizer_rebuild", "vectorizer bigint, new_table oid, model text, chunking jsonb, kwargs jsonb", "bigint", U,
            "starts a rebuild into a new table with a new model, chunking or kwargs",
            language="plpgsql", security_definer=True,
            notes="""alter_vectorizer: new_table (made by the caller, owned by the vectorizer's owner, in the source's
schema) is rebuilt with the model, chunking and kwargs given: every row is queued for it afresh.""",
            body="""DECLARE
  v pgml._vectorizers;
  queued bigint;
BEGIN
  SELECT * INTO STRICT v FROM pgml._vectorizers x WHERE x.id = vectorizer FOR NO KEY UPDATE;
  PERFORM pgml._vectorizer_check(v.id, v.owner);
  IF NOT EXISTS (SELECT FROM pg_class e JOIN pg_class s ON s.oid = v.source
                 WHERE e.oid = new_table AND e.relkind = 'r' AND e.relowner = v.owner
                   AND e.relnamespace = s.relnamespace AND e.oid <> v.embeddings) THEN
    RAISE EXCEPTION 'the new embeddings table must be another table of % in the schema of %', v.owner::regrole,
                    v.source::regclass USING ERRCODE = '42501';
  END IF;
  UPDATE pgml._vectorizers x SET building = new_table, building_model = _vectorizer_rebuild.model,
         building_chunking = _vectorizer_rebuild.chunking, building_kwargs = _vectorizer_rebuild.kwargs
  WHERE x.id = vectorizer;
  DELETE FROM pgml._vectorizer_queue q WHERE q.vectorizer_id = vectorizer;
  queued := pgml._vectorizer_queue_all(vectorizer);
  PERFORM pg_notify('pgml_vectorizers', v.name);
  RETURN queued;
END"""),
    Routine("_vectorizer_retry", "vectorizer bigint", "bigint", U,
            "failed items queued again now",
            language="plpgsql", security_definer=True,
            notes="""Failed items due now, as pending again (their attempts start over). Returns how many.""",
            body="""DECLARE
  retried bigint;
BEGIN
  PERFORM pgml._vectorizer_check(v.id, v.owner) FROM pgml._vectorizers v WHERE v.id = vectorizer;
  UPDATE pgml._vectorizer_queue q SET attempts = 0, retry_at = NULL, error = NULL, failed_at = NULL
  WHERE q.vectorizer_id = vectorizer AND q.error IS NOT NULL;
  GET DIAGNOSTICS retried = ROW_COUNT;
  IF retried > 0 THEN
    PERFORM pg_notify('pgml_vectorizers', v.name) FROM pgml._vectorizers v WHERE v.id = vectorizer;
  END IF;
  RETURN retried;
END"""),
    Routine("_vectorizer_unregister", "vectorizer bigint", "TABLE (embeddings text, building text)", U,
            "a vectorizer's triggers, queue, pg_cron job and row removed; its tables",
            language="plpgsql", security_definer=True,
            notes="""drop_vectorizer: its triggers, queue, pg_cron job and row go. Returns its tables (qualified names;
NULL where gone), which the caller drops as needed.""",
            body="""DECLARE
  v pgml._vectorizers;
  event text;
BEGIN
  SELECT * INTO STRICT v FROM pgml._vectorizers x WHERE x.id = vectorizer FOR UPDATE;
  PERFORM pgml._vectorizer_check(v.id, v.owner);
  IF EXISTS (SELECT FROM pg_class c WHERE c.oid = v.source) THEN
    FOREACH event IN ARRAY ARRAY['insert', 'delete', 'update', 'truncate'] LOOP
      EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', 'pgml_vectorizer_' || v.id || '_' || event,
                     v.source::regclass);
    END LOOP;
  END IF;
  IF v.cron_job IS NOT NULL AND EXISTS (SELECT FROM pg_extension WHERE extname = 'pg_cron') THEN
    PERFORM cron.unschedule(j.jobid) FROM cron.job j WHERE j.jobid = v.cron_job;
  END IF;
  DELETE FROM pgml._vectorizer_queue q WHERE q.vectorizer_id = vectorizer;
  DELETE FROM pgml._vectorizers x WHERE x.id = vectorizer;
  RETURN QUERY
  SELECT (SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c
          JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = v.embeddings),
         (SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c
          JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = v.building);
END"""),
    Routine("create_vectorizer", "name text, source regclass, text_column text, model text, chunking jsonb DEFAULT "
                                 "'{\"splitter\": \"recursive_character\", \"chunk_size\": 1000, \"chunk_overlap\": 100}', "
                                 "kwargs jsonb DEFAULT '{}', schedule text DEFAULT NULL", "regclass", U,
            "keeps a table's text chunked and embedded in <name>_embeddings",
            entry="create_vectorizer",
            notes="""The embeddings table <name>_embeddings in the source's schema, owned by the caller: the source's
primary-key columns, chunk_index, chunk, embedding real[]. kwargs are pgml.embed's; schedule a pg_cron
schedule for its runs. The source's rows are queued at once."""),
    Routine("alter_vectorizer", "name text, model text DEFAULT NULL, chunking jsonb DEFAULT NULL, "
                                "kwargs jsonb DEFAULT NULL", "void", U,
            "a new model, chunking or kwargs for a vectorizer (a rebuild), or its failed rows retried",
            entry="alter_vectorizer"),
    Routine("drop_vectorizer", "name text, drop_table boolean DEFAULT false", "void", U,
            "drops a vectorizer (and its embeddings table when asked)",
            entry="drop_vectorizer"),
    Routine("run_vectorizer", "name text", None, U,
            "embeds what a vectorizer has queued, in committed batches",
            entry="run_vectorizer", set=(),
            notes="""Commits after each batch, so it cannot carry SET search_path: it sets search_path (and the role of
the vectorizer's owner) locally in each of its transactions."""),
    Routine("_vectorizer_sources_dropped", "", "event_trigger", S,
            "a dropped source table takes its vectorizers along",
            language="plpgsql", security_definer=True,
            notes="""A source table dropped (DROP TABLE, DROP SCHEMA ... CASCADE, DROP OWNED) takes its vectorizers along:
their queue, pg_cron job and row go; their embeddings tables stay.""",
            body="""DECLARE
  v pgml._vectorizers;
BEGIN
  FOR v IN SELECT x.* FROM pgml._vectorizers x
           WHERE x.source IN (SELECT d.objid FROM pg_event_trigger_dropped_objects() d
                              WHERE d.classid = 'pg_class'::regclass AND d.objsubid = 0) LOOP
    IF v.cron_job IS NOT NULL AND EXISTS (SELECT FROM pg_extension WHERE extname = 'pg_cron') THEN
      PERFORM cron.unschedule(j.jobid) FROM cron.job j WHERE j.jobid = v.cron_job;
    END IF;
    DELETE FROM pgml._vectorizer_queue q WHERE q.vectorizer_id = v.id;
    DELETE FROM pgml._vectorizers x WHERE x.id = v.id;
    RAISE NOTICE 'pgml: vectorizer % went with its source table (its embeddings table stays)', v.name;
  END LOOP;
END"""),
    Routine("_vectorizer_sources_altered", "", "event_trigger", S,
            "an altered source table gets its vectorizers' triggers re-created",
            language="plpgsql", security_definer=True,
            notes="""An ALTER TABLE of a source (a key column renamed, say) re-creates its vectorizers' triggers, so that
the row trigger's arguments name the key columns as they are.""",
            body="""BEGIN
  PERFORM pgml._vectorizer_triggers(v.id) FROM pgml._vectorizers v
  WHERE v.source IN (SELECT c.objid FROM pg_event_trigger_ddl_commands() c
                     WHERE c.classid = 'pg_class'::regclass);
END"""),
))

# ---------------------------------------------------------------------------------------------- lifecycle

LIFECYCLE = Area("lifecycle", "Model lifecycle in a backend: what is loaded, unloading (really freeing memory), "
                              "warm-up.\nEviction caps are the settings max_models and max_model_bytes.", (
    Routine("loaded_models", "", "SETOF pgml.loaded_model", U,
            "the models this backend has loaded, then those of the shared runtimes its routes name",
            entry="loaded_models"),
    Routine("unload", "model text, task text DEFAULT NULL", "SETOF pgml.loaded_model", U,
            "unloads a model from this backend; rows of what it freed",
            notes="Every model this backend loaded under that name (for that task, when given).",
            entry="unload"),
    Routine("clear_cache", "", "SETOF pgml.loaded_model", U, "unloads every model of this backend",
            entry="clear_cache"),
    Routine("clear_gpu_cache", "memory_usage real DEFAULT NULL", "boolean", U,
            "empties the CUDA cache; false where there is no GPU", entry="clear_gpu_cache"),
    Routine("preload", "task text", "SETOF pgml.loaded_model", U, "loads a transform task's model ahead of use",
            notes="Load a model ahead of the first query (a connection pool's init query, for example). The task\n"
                  "is a name or a JSON object, as TEXT; the JSONB form hands its text over.",
            entry="preload"),
    Routine("preload", "task jsonb", "SETOF pgml.loaded_model", U, "loads a transform task's model ahead of use",
            language="sql", body="SELECT * FROM pgml.preload(task::text)"),
    Routine("preload_embed", "transformer text, kwargs jsonb DEFAULT '{}'", "SETOF pgml.loaded_model", U,
            "loads pgml.embed's model ahead of use", entry="preload_embed"),
))

# --------------------------------------------------------------------------------------------------- tune

_TUNE = ("project_name text, task text DEFAULT NULL, relation_name text DEFAULT NULL, "
         "y_column_name text DEFAULT NULL, model_name text DEFAULT NULL, hyperparams jsonb DEFAULT '{}', "
         "test_size real DEFAULT 0.25, test_sampling pgml.sampling DEFAULT 'stratified', "
         "automatic_deploy boolean DEFAULT true, materialize_snapshot boolean DEFAULT false")
_TUNE_RESULT = "TABLE (status text, task text, algorithm text, deployed boolean)"

_REGISTRY = """Writing the registry. These run as their owner (the installing superuser), with a pinned
search_path; pgml_admin may call them (pgml.tune's own code does) but writes no registry table
itself. Each checks what it touches, so that calling one directly does no more than a tune or
pgml.deploy could: a run's rows are written only by the backend running it, while it runs; a
deployment only of a successful model with files. What makes stored files trustworthy is not
these checks but the MAC, which only the server's own code can compute."""


def _registry(name: str, signature: str, returns: str, summary: str, body: str, *, notes: str = "",
              language: str = "plpgsql", volatility: str = "VOLATILE", grant: str = A) -> Routine:
    """One of the SECURITY DEFINER functions that write the registry (see _REGISTRY)."""
    return Routine(name, signature, returns, grant, summary, notes=notes, language=language, volatility=volatility,
                   security_definer=True, body=body)


TUNE = Area("tune", "Fine-tuning from tables: pgml.tune (PostgresML's function, one transaction), CALL "
                    "pgml.tune_run (the\nsame, committing its progress as it goes), pgml.deploy, and the functions "
                    "that write the\nregistry. The registry's tables are in sql/schema/tune.sql.", (
    Routine("_sign_models", "", "integer", S, "makes the server's key and signs the models stored before signing",
            notes="Makes the server's key (pgml_plpy.key in the data directory, readable only by the server's OS\n"
                  "user) unless it exists, and signs the successful models that have no MAC: those stored before MACs\n"
                  "existed, which an upgrade keeps serving. Only its owner, the installing superuser, may run it\n"
                  "(sql/install.sql does): it vouches for whatever those rows hold.",
            entry="sign_models"),
    _registry("_registry_run", "model_id bigint", "bigint", "the project of a run this backend is tuning now",
              notes=_REGISTRY + "\n\nThe project of model_id, which this backend must be tuning now (the owner's only: "
                                "the other\n_registry_* functions call it as owner).",
              volatility="STABLE", grant=S, body="""DECLARE
  project bigint;
BEGIN
  SELECT m.project_id INTO project FROM pgml.models m
  WHERE m.id = _registry_run.model_id AND m.status = 'in_progress' AND m.pid = pg_backend_pid()
    AND m.backend_start = (SELECT a.backend_start FROM pg_stat_get_activity(pg_backend_pid()) a);
  IF NOT FOUND THEN
    RAISE EXCEPTION 'model % is not being tuned by this backend', model_id
      USING ERRCODE = '42501', HINT = 'The registry is written by pgml.tune itself, for the run it registered.';
  END IF;
  RETURN project;
END"""),
    _registry("_registry_sweep", "", "integer", "marks failed the runs of backends that are gone",
              notes="Runs left in_progress by a backend that is gone (terminated, crashed) become failed.",
              language="sql", body="""WITH swept AS (
  UPDATE pgml.models m SET status = 'failed', updated_at = clock_timestamp(),
         error = 'the backend running it ended before it finished (terminated or crashed)'
  WHERE m.status = 'in_progress' AND NOT EXISTS (
    SELECT FROM pg_stat_get_activity(NULL) a WHERE a.pid = m.pid AND a.backend_start = m.backend_start)
  RETURNING 1)
SELECT count(*)::integer FROM swept"""),
    _registry("_registry_project", "name text, task text", "bigint", "a project (made unless it exists)",
              language="sql", body="""INSERT INTO pgml.projects (name, task) VALUES ($1, $2)
ON CONFLICT (name) DO UPDATE SET updated_at = clock_timestamp() RETURNING id"""),
    _registry("_registry_snapshot", "relation_name text, y_column_name text[], test_size real, "
                                    "test_sampling pgml.sampling, materialized boolean, columns jsonb, analysis jsonb",
              "bigint", "what a tune read", language="sql", body="""INSERT INTO pgml.snapshots (
  relation_name, y_column_name, test_size, test_sampling, materialized, columns, analysis)
VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id"""),
    _registry("_registry_start", "project_id bigint, snapshot_id bigint, task text, base_model text, "
                                 "hyperparams jsonb, lora boolean", "bigint", "a run of this backend",
              notes="A run of this backend: in_progress, with the backend's pid and start time.",
              language="sql", body="""INSERT INTO pgml.models (
  project_id, snapshot_id, task, base_model, hyperparams, lora, status, pid, backend_start)
SELECT $1, $2, $3, $4, $5, $6, 'in_progress', a.pid, a.backend_start
FROM pg_stat_get_activity(pg_backend_pid()) a RETURNING id"""),
    _registry("_registry_progress", "model_id bigint, log jsonb", "void", "a run's progress and its log record",
              notes="The run's latest progress on its row, and the record appended to pgml.logs.", body="""DECLARE
  project bigint := pgml._registry_run(model_id);
BEGIN
  UPDATE pgml.models SET progress = log, updated_at = clock_timestamp() WHERE id = model_id;
  INSERT INTO pgml.logs (model_id, project_id, logs) VALUES (model_id, project, log);
END"""),
    _registry("_registry_file", "model_id bigint, path text, part integer, sha256 text, data bytea", "void",
              "one part of one of a run's files",
              notes="One part of one of the run's files (the tune signs what it wrote when it finishes).", body="""BEGIN
  PERFORM pgml._registry_run(model_id);
  INSERT INTO pgml.files (model_id, path, part, sha256, data) VALUES (model_id, path, part, sha256, data);
END"""),
    _registry("_registry_finish", "model_id bigint, metrics jsonb, timings jsonb, files_mac text", "void",
              "a run finished: its metrics, timings and MAC", body="""BEGIN
  PERFORM pgml._registry_run(model_id);
  UPDATE pgml.models m SET status = 'successful', metrics = _registry_finish.metrics,
         timings = _registry_finish.timings, files_mac = _registry_finish.files_mac, updated_at = clock_timestamp()
  WHERE m.id = model_id;
END"""),
    _registry("_registry_fail", "model_id bigint, status text, error text", "void", "a run failed or cancelled",
              body="""BEGIN
  IF status NOT IN ('failed', 'cancelled') THEN
    RAISE EXCEPTION 'a run ends failed or cancelled, not %', status USING ERRCODE = '22023';
  END IF;
  PERFORM pgml._registry_run(model_id);
  UPDATE pgml.models m SET status = _registry_fail.status, error = _registry_fail.error,
         updated_at = clock_timestamp()
  WHERE m.id = model_id;
END"""),
    _registry("_registry_lock", "project_id bigint", "void", "serializes the deployment decisions of a project",
              notes="Serializes the deployment decisions of one project (the row lock lasts until the transaction "
                    "ends).", language="sql", body="SELECT FROM pgml.projects WHERE id = $1 FOR UPDATE"),
    _registry("_registry_deploy", "model_id bigint, strategy pgml.strategy", "TABLE (project text, algorithm text)",
              "deploys a successful model that has files",
              notes="Deploys a successful model that has files (its project's next deployments row).", body="""DECLARE
  m record;
BEGIN
  SELECT mm.id, mm.project_id, mm.status, mm.algorithm, p.name INTO m
  FROM pgml.models mm JOIN pgml.projects p ON p.id = mm.project_id WHERE mm.id = _registry_deploy.model_id;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'there is no model %', model_id
      USING ERRCODE = '42704', HINT = 'Models are listed in pgml.models (and pgml.tune_runs).';
  END IF;
  IF m.status <> 'successful' OR NOT EXISTS (SELECT FROM pgml.files f WHERE f.model_id = m.id) THEN
    RAISE EXCEPTION 'model % cannot be deployed: its tune is %', model_id, m.status
      USING ERRCODE = '55000', HINT = 'Only a successful tune''s model can be deployed.';
  END IF;
  PERFORM pgml._registry_lock(m.project_id);
  INSERT INTO pgml.deployments (project_id, model_id, strategy) VALUES (m.project_id, m.id, strategy);
  RETURN QUERY SELECT m.name, m.algorithm;
END"""),
    Routine("_tune", "project_name text, task text, relation oid, y_column_name text, model_name text, "
                     "hyperparams jsonb, test_size real, test_sampling pgml.sampling, automatic_deploy boolean, "
                     "materialize_snapshot boolean", _TUNE_RESULT, A, "pgml.tune's PL/Python body",
            entry="tune", entry_kwargs="procedure=False", cost=100000000, rows=1,
            set=PINNED + (("synchronize_seqscans", "off", "test_sampling 'last': the relation read from its start"),)),
    Routine("tune", _TUNE, _TUNE_RESULT, A, "PostgresML's pgml.tune: fine-tunes a model on a table, in one "
                                            "transaction",
            notes="PostgresML's signature and defaults. One transaction: progress arrives as NOTICEs; an error or a\n"
                  "cancel rolls the whole run back. VOLATILE, PARALLEL UNSAFE: it writes the registry.\n"
                  "Not pinned to a search_path, deliberately: relation_name is a name in the caller's search_path, "
                  "as\nin PostgresML, so it is resolved here, as the caller sees it (everything else is "
                  "schema-qualified),\nand the pinned pgml._tune gets its oid.",
            language="sql", cost=100000000, rows=1, set=(),
            body="SELECT * FROM pgml._tune($1, $2, $3::pg_catalog.regclass::pg_catalog.oid, $4, $5, $6, $7, $8, $9, "
                 "$10)"),
    Routine("tune_run", _TUNE + ", INOUT model_id bigint DEFAULT NULL, INOUT status text DEFAULT NULL, "
                                "INOUT deployed boolean DEFAULT NULL", None, A,
            "pgml.tune as a procedure that commits its progress as it goes",
            notes="The same arguments; commits the registered run, each progress report and the result, so another\n"
                  "session can follow it (SELECT * FROM pgml.tune_runs). A cancel marks the run cancelled. It "
                  "commits,\nso it cannot carry SET search_path: it resolves relation_name in the caller's "
                  "search_path first, then\nsets search_path locally in each of its transactions.",
            entry="tune", entry_kwargs="procedure=True", set=()),
    Routine("deploy", "model_id bigint", "TABLE (project text, strategy text, algorithm text)", A,
            "deploys one model (or rolls back to it)",
            notes="PostgresML's pgml.deploy: a model by id (deploy it, or roll back to it), or by strategy.",
            entry="deploy"),
    Routine("deploy", "project_name text, strategy pgml.strategy, algorithm text DEFAULT NULL",
            "TABLE (project text, strategy text, algorithm text)", A,
            "deploys a project's model chosen by strategy", entry="deploy_strategy"),
))

# ------------------------------------------------------------------------------------------------ predict

PREDICT = Area("predict", """pgml.predict and pgml.predict_batch for tuned text classifiers, as PostgresML's examples call them
after pgml.tune: the label (text) a project's deployed model gives a text, or a pair of texts for a
text-pair-classification project. Other projects are an error naming the call that serves them.
(PostgresML's classic-ML overloads take real[] features; these take text, so neither shadows the other.)
STABLE: within one statement the project's deployed model does not change; NULL inputs give NULL
labels (STRICT, and element-wise in predict_batch). COST as one embedding (predict) or one
transform (predict_batch), so that WHERE and LIMIT apply first.""", (
    Routine("_predict", "project text, texts text[], pairs text[]", "text[]", U,
            "pgml.predict's PL/Python body: the labels of texts (or pairs)", entry="predict", volatility="STABLE",
            cost=10000000),
    Routine("predict", "project text, input text", "text", U, "the label a tuned classifier gives a text",
            language="sql", volatility="STABLE", strict=True, cost=1000000,
            body="SELECT (pgml._predict(project, ARRAY[input], NULL))[1]"),
    Routine("predict", "project text, text1 text, text2 text", "text", U,
            "the label a tuned text-pair classifier gives a pair of texts", language="sql", volatility="STABLE",
            strict=True, cost=1000000, body="SELECT (pgml._predict(project, ARRAY[text1], ARRAY[text2]))[1]"),
    Routine("predict_batch", "project text, inputs text[]", "text[]", U, "the labels a tuned classifier gives texts",
            language="sql", volatility="STABLE", cost=10000000, body="SELECT pgml._predict(project, inputs, NULL)"),
))

AREAS = (HOUSEKEEPING, SETTINGS, TRANSFORM, CHUNK, LOAD_DATASET, EMBED, VECTORS, VECTORIZER, LIFECYCLE, TUNE,
         PREDICT)

# Routines earlier releases made that this one has not: dropped by the install (after the areas above).
RETIRED = (
    "pgml._dimension_mismatch(real[], real[])",  # the helper of the SQL similarity functions
)
