-- Generated from src/pgml_plpy/sqlapi.py by scripts/gen_sql.py: edit the table, then run .venv/bin/python scripts/gen_sql.py
-- Vectorizers: a table's text kept chunked and embedded in <name>_embeddings as its rows change
-- (the bookkeeping tables and the view pgml.vectorizers are in sql/schema/vectorizer.sql, the event
-- triggers in sql/install.sql). The API (create, alter, drop, run) is PL/Python, VOLATILE and PARALLEL
-- UNSAFE: it writes tables and the queue, through SPI. pgml_user may call it: each call checks the
-- caller's rights on the table and the vectorizer.
-- The bookkeeping functions pgml._vectorizer_* that pgml_user may call run as their owner (SECURITY
-- DEFINER) with a pinned search_path, and first check that the session may act as the vectorizer's
-- owner (as SET ROLE would require). The others are the owner's only: what those call as owner, and
-- the trigger functions (no role may attach them to a table).

-- The names of a relation's columns, in the order of attnums.
CREATE OR REPLACE FUNCTION pgml._vectorizer_columns(relation oid, attnums smallint[])
RETURNS name[]
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
SELECT array_agg(a.attname ORDER BY u.i)
FROM unnest(attnums) WITH ORDINALITY AS u(n, i)
JOIN pg_attribute a ON a.attrelid = relation AND a.attnum = u.n AND NOT a.attisdropped
$$;
COMMENT ON FUNCTION pgml._vectorizer_columns(oid, smallint[]) IS 'the names of a relation''s columns, in the order of their attnums';
REVOKE ALL ON FUNCTION pgml._vectorizer_columns(oid, smallint[]) FROM PUBLIC, pgml_user, pgml_admin;

-- The queue's key of a row: its key columns' values as the text of their JSON values, in key order
-- ("ARRAY[to_jsonb(<alias>.key1) #>> '{}', ...]"), as the row trigger reads them from to_jsonb(NEW).
-- Runs cast them back to the columns' types (keys of array, composite and JSON types are refused).
CREATE OR REPLACE FUNCTION pgml._vectorizer_key(relation oid, attnums smallint[], alias text)
RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
SELECT 'ARRAY[' || string_agg(format('to_jsonb(%s.%I) #>> ''{}''', alias, c), ', ') || ']'
FROM unnest(pgml._vectorizer_columns(relation, attnums)) AS c
$$;
COMMENT ON FUNCTION pgml._vectorizer_key(oid, smallint[], text) IS 'SQL text of an ARRAY of a row''s key columns as the text of their JSON values';
REVOKE ALL ON FUNCTION pgml._vectorizer_key(oid, smallint[], text) FROM PUBLIC, pgml_user, pgml_admin;

-- The first n columns of an embeddings table's primary key: the source's key as it was named when the
-- table was made (a source column renamed later keeps its old name there).
CREATE OR REPLACE FUNCTION pgml._vectorizer_table_key(relation oid, n integer)
RETURNS smallint[]
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
SELECT ARRAY(SELECT k.a FROM pg_index i, unnest(i.indkey::smallint[]) WITH ORDINALITY AS k(a, ord)
             WHERE i.indrelid = relation AND i.indisprimary ORDER BY k.ord LIMIT n)
$$;
COMMENT ON FUNCTION pgml._vectorizer_table_key(oid, integer) IS 'the first n columns of an embeddings table''s primary key';
REVOKE ALL ON FUNCTION pgml._vectorizer_table_key(oid, integer) FROM PUBLIC, pgml_user, pgml_admin;

-- The vectorizer named vectorizer_name, for a session that may act as its owner; locked for a change
-- (FOR NO KEY UPDATE: runs wait, the triggers' inserts do not) when for_change.
CREATE OR REPLACE FUNCTION pgml._vectorizer_get(vectorizer_name text, for_change boolean)
RETURNS TABLE (id bigint, owner name, source oid, embeddings oid, building oid, model text, chunking jsonb, kwargs jsonb, building_model text, building_chunking jsonb, building_kwargs jsonb)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
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
END
$$;
COMMENT ON FUNCTION pgml._vectorizer_get(text, boolean) IS 'a vectorizer by name, for a session that may act as its owner';
REVOKE ALL ON FUNCTION pgml._vectorizer_get(text, boolean) FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON FUNCTION pgml._vectorizer_get(text, boolean) TO pgml_user;

-- The session may act as the vectorizer's owner.
CREATE OR REPLACE FUNCTION pgml._vectorizer_check(vectorizer bigint, owner oid)
RETURNS void
LANGUAGE plpgsql STABLE SECURITY DEFINER PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF owner IS NULL OR NOT pg_has_role(session_user, owner, 'MEMBER') THEN
    RAISE EXCEPTION 'vectorizer % belongs to %',
        (SELECT quote_literal(v.name) FROM pgml._vectorizers v WHERE v.id = vectorizer),
        coalesce(owner::regrole::text, 'nobody')
      USING ERRCODE = '42501', HINT = 'Only its owner (the role that created it) or a superuser may run, alter or '
                                      'drop it.';
  END IF;
END
$$;
COMMENT ON FUNCTION pgml._vectorizer_check(bigint, oid) IS 'fails unless the session may act as the vectorizer''s owner';
REVOKE ALL ON FUNCTION pgml._vectorizer_check(bigint, oid) FROM PUBLIC, pgml_user, pgml_admin;

-- Whether a vectorizer has that name (names are per database, whoever owns them).
CREATE OR REPLACE FUNCTION pgml._vectorizer_name_taken(vectorizer_name text)
RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
SELECT EXISTS (SELECT FROM pgml._vectorizers v WHERE v.name = vectorizer_name)
$$;
COMMENT ON FUNCTION pgml._vectorizer_name_taken(text) IS 'whether a vectorizer has that name';
REVOKE ALL ON FUNCTION pgml._vectorizer_name_taken(text) FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON FUNCTION pgml._vectorizer_name_taken(text) TO pgml_user;

-- (Re)creates a vectorizer's triggers on its source. Inserts and deletes: one statement-level trigger
-- each, reading the transition table in one INSERT ... SELECT. Updates: a row trigger that fires only
-- when the text or the key changed, and carries the vectorizer's name and the key columns' names (a
-- column renamed later re-creates it: pgml._vectorizer_sources_altered).
CREATE OR REPLACE FUNCTION pgml._vectorizer_triggers(vectorizer bigint)
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
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
END
$$;
COMMENT ON FUNCTION pgml._vectorizer_triggers(bigint) IS '(re)creates a vectorizer''s triggers on its source';
REVOKE ALL ON FUNCTION pgml._vectorizer_triggers(bigint) FROM PUBLIC, pgml_user, pgml_admin;

-- Registers a vectorizer whose embeddings table the caller made: its triggers, its existing rows queued,
-- and with schedule a pg_cron job that runs it as its owner. Returns how many rows it queued.
CREATE OR REPLACE FUNCTION pgml._vectorizer_register(vectorizer_name text, owner name, source oid,
                                                     text_attnum smallint, key_attnums smallint[],
                                                     embeddings oid, model text, chunking jsonb,
                                                     kwargs jsonb, schedule text)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
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
END
$$;
COMMENT ON FUNCTION pgml._vectorizer_register(text, name, oid, smallint, smallint[], oid, text, jsonb, jsonb, text) IS 'registers a vectorizer: its triggers, its rows queued, its pg_cron job';
REVOKE ALL ON FUNCTION pgml._vectorizer_register(text, name, oid, smallint, smallint[], oid, text, jsonb, jsonb, text) FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON FUNCTION pgml._vectorizer_register(text, name, oid, smallint, smallint[], oid, text, jsonb, jsonb, text) TO pgml_user;

-- pg_cron's job name for a vectorizer (job names are per role, across databases).
CREATE OR REPLACE FUNCTION pgml._vectorizer_job(vectorizer_name text)
RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
SELECT format('pgml_vectorizer:%s:%s', current_database(), vectorizer_name)
$$;
COMMENT ON FUNCTION pgml._vectorizer_job(text) IS 'pg_cron''s job name for a vectorizer';
REVOKE ALL ON FUNCTION pgml._vectorizer_job(text) FROM PUBLIC, pgml_user, pgml_admin;

-- Queues every row of the source that has text (a new vectorizer, a rebuild). Called by the functions
-- above and below only: the owner's.
CREATE OR REPLACE FUNCTION pgml._vectorizer_queue_all(vectorizer bigint)
RETURNS bigint
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
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
END
$$;
COMMENT ON FUNCTION pgml._vectorizer_queue_all(bigint) IS 'queues every row of a vectorizer''s source that has text';
REVOKE ALL ON FUNCTION pgml._vectorizer_queue_all(bigint) FROM PUBLIC, pgml_user, pgml_admin;

-- The triggers' functions (TG_ARGV[0]: the vectorizer's id). They run as their owner for whichever
-- role changed the source, and only queue keys of the rows that changed. Only their owner may EXECUTE
-- them, so no role can attach them to another table (which would queue nothing harmful anyway: a
-- queued key only makes a run re-read that row as the vectorizer's owner).
-- Inserts, deletes (one INSERT ... SELECT from the statement's transition table) and TRUNCATE.
CREATE OR REPLACE FUNCTION pgml._vectorizer_enqueue()
RETURNS trigger
LANGUAGE plpgsql VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
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
END
$$;
COMMENT ON FUNCTION pgml._vectorizer_enqueue() IS 'the triggers that queue the keys of inserted, deleted and truncated rows';
REVOKE ALL ON FUNCTION pgml._vectorizer_enqueue() FROM PUBLIC, pgml_user, pgml_admin;

-- Updates: a row trigger whose WHEN clause lets through only rows whose text or key changed. Its
-- arguments are the vectorizer's id and name and the key columns' names, so that it reads no catalog:
-- one small statement takes the key from OLD and NEW (whatever the width of the rows), one inserts it.
CREATE OR REPLACE FUNCTION pgml._vectorizer_enqueue_row()
RETURNS trigger
LANGUAGE plpgsql VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
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
END
$$;
COMMENT ON FUNCTION pgml._vectorizer_enqueue_row() IS 'the trigger that queues the keys of rows whose text or key changed';
REVOKE ALL ON FUNCTION pgml._vectorizer_enqueue_row() FROM PUBLIC, pgml_user, pgml_admin;

-- What a run's batch works on: the source, its key and text columns, and the table it writes (the one
-- being rebuilt, while there is one) with its model, chunking and kwargs. FOR SHARE until the batch
-- commits: alter and drop wait for the batch, and the next batch sees what they changed. No row: the
-- vectorizer was dropped.
CREATE OR REPLACE FUNCTION pgml._vectorizer_config(vectorizer bigint)
RETURNS TABLE (source text, key_columns name[], key_types text[], text_column name, target text, target_key_columns name[], model text, chunking jsonb, kwargs jsonb)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
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
END
$$;
COMMENT ON FUNCTION pgml._vectorizer_config(bigint) IS 'what a run''s batch works on, locked FOR SHARE until it commits';
REVOKE ALL ON FUNCTION pgml._vectorizer_config(bigint) FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON FUNCTION pgml._vectorizer_config(bigint) TO pgml_user;

-- How many items are due now, and the newest item's id: a run processes the items queued before it
-- started (the ones queued meanwhile by the next run), so that it ends.
CREATE OR REPLACE FUNCTION pgml._vectorizer_due(vectorizer bigint)
RETURNS TABLE (items bigint, last_item bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  PERFORM pgml._vectorizer_check(v.id, v.owner) FROM pgml._vectorizers v WHERE v.id = vectorizer;
  RETURN QUERY
  SELECT count(*) FILTER (WHERE q.retry_at IS NULL OR q.retry_at <= now()), max(q.id)
  FROM pgml._vectorizer_queue q WHERE q.vectorizer_id = vectorizer;
END
$$;
COMMENT ON FUNCTION pgml._vectorizer_due(bigint) IS 'how many items are due now, and the newest item''s id';
REVOKE ALL ON FUNCTION pgml._vectorizer_due(bigint) FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON FUNCTION pgml._vectorizer_due(bigint) TO pgml_user;

-- Claims up to size due items with ids up to up_to, locked until the batch commits (others skip them),
-- and only items whose key no other run holds: a transaction advisory lock per (vectorizer, key hash),
-- so that two runs never write the chunks of one row at once. An item whose key another run holds
-- stays queued (the next batch or run re-reads that row).
CREATE OR REPLACE FUNCTION pgml._vectorizer_claim(vectorizer bigint, up_to bigint, size integer)
RETURNS TABLE (id bigint, key text[])
LANGUAGE plpgsql VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
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
END
$$;
COMMENT ON FUNCTION pgml._vectorizer_claim(bigint, bigint, integer) IS 'claims due items for a batch (SKIP LOCKED, one run per key)';
REVOKE ALL ON FUNCTION pgml._vectorizer_claim(bigint, bigint, integer) FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON FUNCTION pgml._vectorizer_claim(bigint, bigint, integer) TO pgml_user;

-- A batch's outcome: done items go (with the failed items of their keys, which that sync supersedes);
-- failed ones get their error and a retry after 1, 4, 16, then 64 minutes, then none (retry_at infinity).
CREATE OR REPLACE FUNCTION pgml._vectorizer_done(vectorizer bigint, done bigint[], failed bigint[],
                                                 errors text[])
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
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
END
$$;
COMMENT ON FUNCTION pgml._vectorizer_done(bigint, bigint[], bigint[], text[]) IS 'a batch''s outcome: done items go, failed ones wait for a retry with backoff';
REVOKE ALL ON FUNCTION pgml._vectorizer_done(bigint, bigint[], bigint[], text[]) FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON FUNCTION pgml._vectorizer_done(bigint, bigint[], bigint[], text[]) TO pgml_user;

-- The end of a run: when it ran and the error that ended it (NULL: none). When a rebuild is complete
-- (nothing queued, failed items included) it returns the old and the new table, which the run swaps
-- as the owner before calling pgml._vectorizer_swapped in the same transaction.
CREATE OR REPLACE FUNCTION pgml._vectorizer_finish(vectorizer bigint, error text)
RETURNS TABLE (old_table text, new_table text, schema name, table_name text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
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
END
$$;
COMMENT ON FUNCTION pgml._vectorizer_finish(bigint, text) IS 'records a run''s end; the tables to swap when a rebuild is complete';
REVOKE ALL ON FUNCTION pgml._vectorizer_finish(bigint, text) FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON FUNCTION pgml._vectorizer_finish(bigint, text) TO pgml_user;

-- The rebuilt table replaced the old one: it is now the vectorizer's, with what it was built with.
CREATE OR REPLACE FUNCTION pgml._vectorizer_swapped(vectorizer bigint)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  PERFORM pgml._vectorizer_check(v.id, v.owner) FROM pgml._vectorizers v WHERE v.id = vectorizer;
  UPDATE pgml._vectorizers v
  SET embeddings = v.building, model = v.building_model, chunking = v.building_chunking,
      kwargs = v.building_kwargs, building = NULL, building_model = NULL, building_chunking = NULL,
      building_kwargs = NULL
  WHERE v.id = vectorizer AND v.building IS NOT NULL;
END
$$;
COMMENT ON FUNCTION pgml._vectorizer_swapped(bigint) IS 'the rebuilt table replaced the old one';
REVOKE ALL ON FUNCTION pgml._vectorizer_swapped(bigint) FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON FUNCTION pgml._vectorizer_swapped(bigint) TO pgml_user;

-- alter_vectorizer: new_table (made by the caller, owned by the vectorizer's owner, in the source's
-- schema) is rebuilt with the model, chunking and kwargs given: every row is queued for it afresh.
CREATE OR REPLACE FUNCTION pgml._vectorizer_rebuild(vectorizer bigint, new_table oid, model text,
                                                    chunking jsonb, kwargs jsonb)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
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
END
$$;
COMMENT ON FUNCTION pgml._vectorizer_rebuild(bigint, oid, text, jsonb, jsonb) IS 'starts a rebuild into a new table with a new model, chunking or kwargs';
REVOKE ALL ON FUNCTION pgml._vectorizer_rebuild(bigint, oid, text, jsonb, jsonb) FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON FUNCTION pgml._vectorizer_rebuild(bigint, oid, text, jsonb, jsonb) TO pgml_user;

-- Failed items due now, as pending again (their attempts start over). Returns how many.
CREATE OR REPLACE FUNCTION pgml._vectorizer_retry(vectorizer bigint)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
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
END
$$;
COMMENT ON FUNCTION pgml._vectorizer_retry(bigint) IS 'failed items queued again now';
REVOKE ALL ON FUNCTION pgml._vectorizer_retry(bigint) FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON FUNCTION pgml._vectorizer_retry(bigint) TO pgml_user;

-- drop_vectorizer: its triggers, queue, pg_cron job and row go. Returns its tables (qualified names;
-- NULL where gone), which the caller drops as needed.
CREATE OR REPLACE FUNCTION pgml._vectorizer_unregister(vectorizer bigint)
RETURNS TABLE (embeddings text, building text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
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
END
$$;
COMMENT ON FUNCTION pgml._vectorizer_unregister(bigint) IS 'a vectorizer''s triggers, queue, pg_cron job and row removed; its tables';
REVOKE ALL ON FUNCTION pgml._vectorizer_unregister(bigint) FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON FUNCTION pgml._vectorizer_unregister(bigint) TO pgml_user;

-- The embeddings table <name>_embeddings in the source's schema, owned by the caller: the source's
-- primary-key columns, chunk_index, chunk, embedding real[]. kwargs are pgml.embed's; schedule a pg_cron
-- schedule for its runs. The source's rows are queued at once.
CREATE OR REPLACE FUNCTION pgml.create_vectorizer(name text, source regclass, text_column text, model text,
                                                  chunking jsonb DEFAULT '{"splitter": "recursive_character", "chunk_size": 1000, "chunk_overlap": 100}',
                                                  kwargs jsonb DEFAULT '{}', schedule text DEFAULT NULL)
RETURNS regclass
LANGUAGE plpython3u VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
if 'pgml_plpy' not in GD:
    plpy.execute('SELECT pgml._activate()')
return GD['pgml_plpy'].create_vectorizer(plpy, *args)
$$;
COMMENT ON FUNCTION pgml.create_vectorizer(text, regclass, text, text, jsonb, jsonb, text) IS 'keeps a table''s text chunked and embedded in <name>_embeddings';
REVOKE ALL ON FUNCTION pgml.create_vectorizer(text, regclass, text, text, jsonb, jsonb, text) FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON FUNCTION pgml.create_vectorizer(text, regclass, text, text, jsonb, jsonb, text) TO pgml_user;

CREATE OR REPLACE FUNCTION pgml.alter_vectorizer(name text, model text DEFAULT NULL,
                                                 chunking jsonb DEFAULT NULL, kwargs jsonb DEFAULT NULL)
RETURNS void
LANGUAGE plpython3u VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
if 'pgml_plpy' not in GD:
    plpy.execute('SELECT pgml._activate()')
return GD['pgml_plpy'].alter_vectorizer(plpy, *args)
$$;
COMMENT ON FUNCTION pgml.alter_vectorizer(text, text, jsonb, jsonb) IS 'a new model, chunking or kwargs for a vectorizer (a rebuild), or its failed rows retried';
REVOKE ALL ON FUNCTION pgml.alter_vectorizer(text, text, jsonb, jsonb) FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON FUNCTION pgml.alter_vectorizer(text, text, jsonb, jsonb) TO pgml_user;

CREATE OR REPLACE FUNCTION pgml.drop_vectorizer(name text, drop_table boolean DEFAULT false)
RETURNS void
LANGUAGE plpython3u VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
if 'pgml_plpy' not in GD:
    plpy.execute('SELECT pgml._activate()')
return GD['pgml_plpy'].drop_vectorizer(plpy, *args)
$$;
COMMENT ON FUNCTION pgml.drop_vectorizer(text, boolean) IS 'drops a vectorizer (and its embeddings table when asked)';
REVOKE ALL ON FUNCTION pgml.drop_vectorizer(text, boolean) FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON FUNCTION pgml.drop_vectorizer(text, boolean) TO pgml_user;

-- Commits after each batch, so it cannot carry SET search_path: it sets search_path (and the role of
-- the vectorizer's owner) locally in each of its transactions.
CREATE OR REPLACE PROCEDURE pgml.run_vectorizer(name text)
LANGUAGE plpython3u
AS $$
if 'pgml_plpy' not in GD:
    plpy.execute('SELECT pgml._activate()')
return GD['pgml_plpy'].run_vectorizer(plpy, *args)
$$;
COMMENT ON PROCEDURE pgml.run_vectorizer(text) IS 'embeds what a vectorizer has queued, in committed batches';
REVOKE ALL ON PROCEDURE pgml.run_vectorizer(text) FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON PROCEDURE pgml.run_vectorizer(text) TO pgml_user;

-- A source table dropped (DROP TABLE, DROP SCHEMA ... CASCADE, DROP OWNED) takes its vectorizers along:
-- their queue, pg_cron job and row go; their embeddings tables stay.
CREATE OR REPLACE FUNCTION pgml._vectorizer_sources_dropped()
RETURNS event_trigger
LANGUAGE plpgsql VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
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
END
$$;
COMMENT ON FUNCTION pgml._vectorizer_sources_dropped() IS 'a dropped source table takes its vectorizers along';
REVOKE ALL ON FUNCTION pgml._vectorizer_sources_dropped() FROM PUBLIC, pgml_user, pgml_admin;

-- An ALTER TABLE of a source (a key column renamed, say) re-creates its vectorizers' triggers, so that
-- the row trigger's arguments name the key columns as they are.
CREATE OR REPLACE FUNCTION pgml._vectorizer_sources_altered()
RETURNS event_trigger
LANGUAGE plpgsql VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  PERFORM pgml._vectorizer_triggers(v.id) FROM pgml._vectorizers v
  WHERE v.source IN (SELECT c.objid FROM pg_event_trigger_ddl_commands() c
                     WHERE c.classid = 'pg_class'::regclass);
END
$$;
COMMENT ON FUNCTION pgml._vectorizer_sources_altered() IS 'an altered source table gets its vectorizers'' triggers re-created';
REVOKE ALL ON FUNCTION pgml._vectorizer_sources_altered() FROM PUBLIC, pgml_user, pgml_admin;
