-- One loaded model (what pgml.loaded_models, unload, clear_cache and preload return); runtime says where it
-- is loaded: 'backend' (this backend) or the shared runtime a route names.
DO $$ BEGIN
  CREATE TYPE pgml.loaded_model AS (function text, task text, model text, device text, dtype text, bytes bigint,
                                    load_seconds float8, loaded_at timestamptz, last_used timestamptz, hits bigint,
                                    runtime text);
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;
-- Upgrade: installs before the shared runtime lacked the runtime column.
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_catalog.pg_attribute WHERE attrelid = 'pgml.loaded_model'::pg_catalog.regclass
                 AND attname = 'runtime' AND NOT attisdropped) THEN
    ALTER TYPE pgml.loaded_model ADD ATTRIBUTE runtime text;
  END IF;
END $$;
