-- One loaded model of a backend (what pgml.loaded_models, unload, clear_cache and preload return).
DO $$ BEGIN
  CREATE TYPE pgml.loaded_model AS (function text, task text, model text, device text, dtype text, bytes bigint,
                                    load_seconds float8, loaded_at timestamptz, last_used timestamptz, hits bigint);
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;
