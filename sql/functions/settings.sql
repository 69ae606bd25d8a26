-- Generated from src/pgml_plpy/sqlapi.py by scripts/gen_sql.py: edit the table, then run .venv/bin/python scripts/gen_sql.py
-- Server settings (the table pgml.settings is in sql/schema/settings.sql).

-- Checks each new value, so that a typo cannot break every call, and that only a superuser adds,
-- changes or removes a trust setting.
CREATE OR REPLACE FUNCTION pgml._check_setting()
RETURNS trigger
LANGUAGE plpython3u VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
if 'pgml_plpy' not in GD:
    plpy.execute('SELECT pgml._activate()')
return GD['pgml_plpy'].check_setting(plpy, TD)
$$;
COMMENT ON FUNCTION pgml._check_setting() IS 'checks each change of pgml.settings';
REVOKE ALL ON FUNCTION pgml._check_setting() FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON FUNCTION pgml._check_setting() TO pgml_admin;

CREATE OR REPLACE FUNCTION pgml._setting_defaults()
RETURNS TABLE (name text, value text, description text)
LANGUAGE plpython3u VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
if 'pgml_plpy' not in GD:
    plpy.execute('SELECT pgml._activate()')
return GD['pgml_plpy'].setting_defaults(plpy)
$$;
COMMENT ON FUNCTION pgml._setting_defaults() IS 'every setting''s default and description (seeds pgml.settings)';
REVOKE ALL ON FUNCTION pgml._setting_defaults() FROM PUBLIC, pgml_user, pgml_admin;
