-- Server settings: a table only its owner (the installing superuser) may change.
-- They decide what a backend may load, so they never come from GUCs that any user can SET.

CREATE TABLE IF NOT EXISTS pgml.settings (
  name text PRIMARY KEY,
  value jsonb NOT NULL,
  description text
);
COMMENT ON TABLE pgml.settings IS 'pgml_plpy settings; read on every call, changed with UPDATE by pgml_admin';

-- Checks each new value, so that a typo cannot break every call.
CREATE OR REPLACE FUNCTION pgml._check_setting() RETURNS trigger
LANGUAGE plpython3u VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
if 'pgml_plpy' not in GD:
    plpy.execute('SELECT pgml._activate()')
return GD['pgml_plpy'].check_setting(plpy, TD)
$$;

CREATE OR REPLACE TRIGGER check_setting BEFORE INSERT OR UPDATE ON pgml.settings
FOR EACH ROW EXECUTE FUNCTION pgml._check_setting();

CREATE OR REPLACE FUNCTION pgml._setting_defaults()
RETURNS TABLE (name text, value text, description text)
LANGUAGE plpython3u VOLATILE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$
if 'pgml_plpy' not in GD:
    plpy.execute('SELECT pgml._activate()')
return GD['pgml_plpy'].setting_defaults()
$$;

-- New settings get their defaults; values a DBA changed stay.
INSERT INTO pgml.settings (name, value, description)
SELECT name, value::jsonb, description FROM pgml._setting_defaults()
ON CONFLICT (name) DO UPDATE SET description = EXCLUDED.description;
