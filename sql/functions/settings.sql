-- Server settings. They decide what a backend may load, so they never come from GUCs that any user
-- can SET. Each is a trust setting (what code or weights may be loaded and from where: superusers
-- only) or a limit (pgml_admin may UPDATE its value); the class is declared in the package's
-- settings.py, and this table's trigger enforces it for every INSERT, UPDATE and DELETE.

CREATE TABLE IF NOT EXISTS pgml.settings (
  name text PRIMARY KEY,
  value jsonb NOT NULL,
  description text
);
COMMENT ON TABLE pgml.settings IS 'pgml_plpy settings, read on every call: trust settings change only by a '
  'superuser, limits also by pgml_admin (UPDATE ... SET value)';

-- Checks each new value, so that a typo cannot break every call, and that only a superuser adds,
-- changes or removes a trust setting.
CREATE OR REPLACE FUNCTION pgml._check_setting() RETURNS trigger
LANGUAGE plpython3u VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
if 'pgml_plpy' not in GD:
    plpy.execute('SELECT pgml._activate()')
return GD['pgml_plpy'].check_setting(plpy, TD)
$$;

CREATE OR REPLACE TRIGGER check_setting BEFORE INSERT OR UPDATE OR DELETE ON pgml.settings
FOR EACH ROW EXECUTE FUNCTION pgml._check_setting();

CREATE OR REPLACE FUNCTION pgml._setting_defaults()
RETURNS TABLE (name text, value text, description text)
LANGUAGE plpython3u VOLATILE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$
if 'pgml_plpy' not in GD:
    plpy.execute('SELECT pgml._activate()')
return GD['pgml_plpy'].setting_defaults(plpy)
$$;

-- New settings get their defaults; values a DBA changed stay.
INSERT INTO pgml.settings (name, value, description)
SELECT name, value::jsonb, description FROM pgml._setting_defaults()
ON CONFLICT (name) DO UPDATE SET description = EXCLUDED.description;
