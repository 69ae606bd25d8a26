-- Generated from src/pgml_plpy/sqlapi.py by scripts/gen_sql.py: edit the table, then run .venv/bin/python scripts/gen_sql.py
-- Every function and procedure of schema pgml, with its grants.
\ir housekeeping.sql
\ir settings.sql
\ir transform.sql
\ir chunk.sql
\ir load_dataset.sql
\ir embed.sql
\ir vectors.sql
\ir vectorizer.sql
\ir lifecycle.sql
\ir tune.sql
\ir predict.sql

-- Routines of earlier releases that this one has not.
DROP ROUTINE IF EXISTS pgml._dimension_mismatch(real[], real[]);
