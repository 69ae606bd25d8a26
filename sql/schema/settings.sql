-- Server settings. They decide what a backend may load, so they never come from GUCs that any user
-- can SET. Each is a trust setting (what code or weights may be loaded and from where: superusers
-- only) or a limit (pgml_admin may UPDATE its value); the class is declared in the package's
-- settings.py, and this table's trigger enforces it for every INSERT, UPDATE and DELETE.
-- The trigger and the defaults come after the functions (sql/install.sql).

CREATE TABLE IF NOT EXISTS pgml.settings (
  name text PRIMARY KEY,
  value jsonb NOT NULL,
  description text
);
COMMENT ON TABLE pgml.settings IS 'pgml_plpy settings, read on every call: trust settings change only by a '
  'superuser, limits also by pgml_admin (UPDATE ... SET value)';
