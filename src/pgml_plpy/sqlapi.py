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

# ---------------------------------------------------------------------------------------------- lifecycle

LIFECYCLE = Area("lifecycle", "Model lifecycle in a backend: what is loaded, unloading (really freeing memory), "
                              "warm-up.\nEviction caps are the settings max_models and max_model_bytes.", (
    Routine("loaded_models", "", "SETOF pgml.loaded_model", U, "the models this backend has loaded",
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

AREAS = (HOUSEKEEPING, SETTINGS, TRANSFORM, CHUNK, LOAD_DATASET, EMBED, VECTORS, LIFECYCLE, TUNE, PREDICT)

# Routines earlier releases made that this one has not: dropped by the install (after the areas above).
RETIRED = (
    "pgml._dimension_mismatch(real[], real[])",  # the helper of the SQL similarity functions
)
