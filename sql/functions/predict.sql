-- Generated from src/pgml_plpy/sqlapi.py by scripts/gen_sql.py: edit the table, then run .venv/bin/python scripts/gen_sql.py
-- pgml.predict and pgml.predict_batch for tuned text classifiers, as PostgresML's examples call them
-- after pgml.tune: the label (text) a project's deployed model gives a text, or a pair of texts for a
-- text-pair-classification project. Other projects are an error naming the call that serves them.
-- (PostgresML's classic-ML overloads take real[] features; these take text, so neither shadows the other.)
-- STABLE: within one statement the project's deployed model does not change; NULL inputs give NULL
-- labels (STRICT, and element-wise in predict_batch). COST as one embedding (predict) or one
-- transform (predict_batch), so that WHERE and LIMIT apply first.

CREATE OR REPLACE FUNCTION pgml._predict(project text, texts text[], pairs text[])
RETURNS text[]
LANGUAGE plpython3u STABLE PARALLEL UNSAFE COST 10000000
SET search_path = pg_catalog, pg_temp
AS $$
if 'pgml_plpy' not in GD:
    plpy.execute('SELECT pgml._activate()')
return GD['pgml_plpy'].predict(plpy, *args)
$$;
COMMENT ON FUNCTION pgml._predict(text, text[], text[]) IS 'pgml.predict''s PL/Python body: the labels of texts (or pairs)';
REVOKE ALL ON FUNCTION pgml._predict(text, text[], text[]) FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON FUNCTION pgml._predict(text, text[], text[]) TO pgml_user;

CREATE OR REPLACE FUNCTION pgml.predict(project text, input text)
RETURNS text
LANGUAGE sql STABLE STRICT PARALLEL UNSAFE COST 1000000
SET search_path = pg_catalog, pg_temp
AS $$
SELECT (pgml._predict(project, ARRAY[input], NULL))[1]
$$;
COMMENT ON FUNCTION pgml.predict(text, text) IS 'the label a tuned classifier gives a text';
REVOKE ALL ON FUNCTION pgml.predict(text, text) FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON FUNCTION pgml.predict(text, text) TO pgml_user;

CREATE OR REPLACE FUNCTION pgml.predict(project text, text1 text, text2 text)
RETURNS text
LANGUAGE sql STABLE STRICT PARALLEL UNSAFE COST 1000000
SET search_path = pg_catalog, pg_temp
AS $$
SELECT (pgml._predict(project, ARRAY[text1], ARRAY[text2]))[1]
$$;
COMMENT ON FUNCTION pgml.predict(text, text, text) IS 'the label a tuned text-pair classifier gives a pair of texts';
REVOKE ALL ON FUNCTION pgml.predict(text, text, text) FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON FUNCTION pgml.predict(text, text, text) TO pgml_user;

CREATE OR REPLACE FUNCTION pgml.predict_batch(project text, inputs text[])
RETURNS text[]
LANGUAGE sql STABLE PARALLEL UNSAFE COST 10000000
SET search_path = pg_catalog, pg_temp
AS $$
SELECT pgml._predict(project, inputs, NULL)
$$;
COMMENT ON FUNCTION pgml.predict_batch(text, text[]) IS 'the labels a tuned classifier gives texts';
REVOKE ALL ON FUNCTION pgml.predict_batch(text, text[]) FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON FUNCTION pgml.predict_batch(text, text[]) TO pgml_user;
