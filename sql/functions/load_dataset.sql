-- Generated from src/pgml_plpy/sqlapi.py by scripts/gen_sql.py: edit the table, then run .venv/bin/python scripts/gen_sql.py
-- pgml.load_dataset: a Hugging Face dataset (from the server's datasets cache, or downloaded
-- where hub_downloads allows it) or files on the server (superusers and members of
-- pg_read_server_files only, like COPY FROM a file) into the typed table pgml."<name>".

-- VOLATILE and PARALLEL UNSAFE: it creates, replaces and fills a table. Not STRICT: a NULL
-- source is an error (22004). The table belongs to the calling role, which fills it with its own
-- privileges; pgml._create_table makes it, as roles have no CREATE on schema pgml.
CREATE OR REPLACE FUNCTION pgml.load_dataset(source text, subset text DEFAULT NULL,
                                             "limit" bigint DEFAULT NULL, kwargs jsonb DEFAULT '{}')
RETURNS TABLE (table_name text, "rows" bigint)
LANGUAGE plpython3u VOLATILE PARALLEL UNSAFE COST 100000000 ROWS 1
SET search_path = pg_catalog, pg_temp
AS $$
if 'pgml_plpy' not in GD:
    plpy.execute('SELECT pgml._activate()')
return GD['pgml_plpy'].load_dataset(plpy, *args)
$$;
COMMENT ON FUNCTION pgml.load_dataset(text, text, bigint, jsonb) IS 'a dataset or data files into the table pgml."<name>"';
REVOKE ALL ON FUNCTION pgml.load_dataset(text, text, bigint, jsonb) FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON FUNCTION pgml.load_dataset(text, text, bigint, jsonb) TO pgml_admin;

-- A table pgml."<table_name>" (load_dataset's tables, tune's snapshots) owned by owner, a role the
-- session may act as that is a member of pgml_admin: roles have no CREATE on schema pgml, so that
-- none can put a function, type or view there for others to run. Column types are types, never SQL
-- text; the caller fills the table with its own privileges.
CREATE OR REPLACE FUNCTION pgml._create_table(table_name text, column_names text[], column_types regtype[],
                                              owner name)
RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
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
END
$$;
COMMENT ON FUNCTION pgml._create_table(text, text[], regtype[], name) IS 'makes the table pgml."<table_name>" for a member of pgml_admin (load_dataset, tune''s snapshots)';
REVOKE ALL ON FUNCTION pgml._create_table(text, text[], regtype[], name) FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON FUNCTION pgml._create_table(text, text[], regtype[], name) TO pgml_admin;
