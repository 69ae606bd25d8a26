-- Vectorizers: a table's text kept chunked and embedded in <name>_embeddings as its rows change.
--
-- pgml.create_vectorizer puts triggers on the source table that queue the primary key of every row
-- inserted, deleted, or updated in its text or key; CALL pgml.run_vectorizer (by hand, from pg_cron, or
-- from python -m pgml_plpy.worker) re-chunks and re-embeds what is queued, in committed batches. Their
-- functions are in sql/functions/vectorizer.sql; the event triggers that follow sources being dropped
-- or altered come after the functions (sql/install.sql).
--
-- The bookkeeping is two tables that no role but their owner (the installing superuser) reads or
-- writes: pgml._vectorizers (one row each) and pgml._vectorizer_queue (keys of rows to re-sync).
-- Roles reach them only through the SECURITY DEFINER functions pgml._vectorizer_*, which check what
-- they touch: the session must be a member of the vectorizer's owner (the role that created it).
-- The queue holds keys, never text: a run reads each row as the vectorizer's owner, so the embeddings
-- hold what the owner may see (row-level security included), and a row the owner cannot see has none.
-- The view pgml.vectorizers shows a role the vectorizers it owns or whose embeddings it may read.
-- Privileges are in roles.sql.

CREATE TABLE IF NOT EXISTS pgml._vectorizers (
  id bigserial PRIMARY KEY,
  name text NOT NULL UNIQUE,
  owner oid NOT NULL,
  source oid NOT NULL,
  text_attnum smallint NOT NULL,
  key_attnums smallint[] NOT NULL,   -- the source's primary key, in its order
  embeddings oid NOT NULL,
  model text NOT NULL,
  chunking jsonb NOT NULL,
  kwargs jsonb NOT NULL,
  schedule text,
  cron_job bigint,
  -- alter_vectorizer's table under construction and what it is built with, until it replaces embeddings
  building oid,
  building_model text,
  building_chunking jsonb,
  building_kwargs jsonb,
  last_run timestamptz,
  last_error text,             -- the error that ended the last run (item errors are on the queue)
  created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
COMMENT ON TABLE pgml._vectorizers IS 'pgml vectorizers (read pgml.vectorizers): source, model, chunking, '
  'the embeddings table, and the one being rebuilt';

-- No unique key: a row changed while a run embeds its old text gets a second item, which the next
-- batch processes. Runs serialize the items of one key with a transaction advisory lock.
CREATE TABLE IF NOT EXISTS pgml._vectorizer_queue (
  id bigserial PRIMARY KEY,
  vectorizer_id bigint NOT NULL,
  key text[] NOT NULL,          -- the primary key's values as text, in its column order
  queued_at timestamptz NOT NULL DEFAULT now(),
  attempts integer NOT NULL DEFAULT 0,
  retry_at timestamptz,         -- NULL: due now; after a failure, when it is tried again (infinity: never)
  error text,
  failed_at timestamptz
);
CREATE INDEX IF NOT EXISTS _vectorizer_queue_vectorizer_idx ON pgml._vectorizer_queue (vectorizer_id, id);
CREATE INDEX IF NOT EXISTS _vectorizer_queue_failed_idx ON pgml._vectorizer_queue (vectorizer_id, key)
  WHERE error IS NOT NULL;
COMMENT ON TABLE pgml._vectorizer_queue IS 'keys of source rows a vectorizer has to re-sync, and failed ones '
  'with their error and next retry';

-- The view: counts, not keys. pending: queued and not failed; failed: failed, waiting for a retry or
-- given up. last_error: the newest error of a failed item, else the error that ended the last run.
CREATE OR REPLACE VIEW pgml.vectorizers AS
SELECT v.name, v.source::pg_catalog.regclass AS source, v.embeddings::pg_catalog.regclass AS embeddings, v.model,
       coalesce(q.pending, 0) AS pending, coalesce(q.failed, 0) AS failed, v.last_run,
       coalesce(q.last_error, v.last_error) AS last_error
FROM pgml._vectorizers v
LEFT JOIN LATERAL (
  SELECT count(*) FILTER (WHERE i.error IS NULL) AS pending, count(*) FILTER (WHERE i.error IS NOT NULL) AS failed,
         (array_agg(i.error ORDER BY i.failed_at DESC) FILTER (WHERE i.error IS NOT NULL))[1] AS last_error
  FROM pgml._vectorizer_queue i WHERE i.vectorizer_id = v.id) q ON true
WHERE pg_catalog.pg_has_role(current_user, v.owner, 'USAGE')
   OR coalesce(pg_catalog.has_table_privilege(current_user, v.embeddings, 'SELECT'), false);
