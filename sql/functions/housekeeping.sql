-- Generated from src/pgml_plpy/sqlapi.py by scripts/gen_sql.py: edit the table, then run .venv/bin/python scripts/gen_sql.py
-- Activation of the venv in each backend, version checks and PostgresML's housekeeping functions.

-- The venv's package must be the same release (checked on activation).
CREATE OR REPLACE FUNCTION pgml._sql_version()
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
SELECT '0.2.0'::text
$$;
COMMENT ON FUNCTION pgml._sql_version() IS 'the release these SQL functions belong to';
REVOKE ALL ON FUNCTION pgml._sql_version() FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON FUNCTION pgml._sql_version() TO pgml_user;

-- Records the venv as the body of pgml._venv(), which only its owner (the installing superuser)
-- can replace: the venv decides what code the server runs, so it is never a GUC that any user
-- could SET. New connections use the new venv.
CREATE OR REPLACE FUNCTION pgml.activate_venv(venv text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF venv IS NULL OR venv !~ '^/' THEN
    RAISE EXCEPTION 'pgml: the venv must be an absolute path, not %', coalesce(quote_literal(venv), 'NULL')
      USING ERRCODE = '22023';
  END IF;
  BEGIN
    PERFORM pg_stat_file(venv);
  EXCEPTION WHEN undefined_file THEN
    RAISE EXCEPTION 'pgml: the venv % does not exist on the database server', venv
      USING ERRCODE = '58P01', HINT = 'Create it with scripts/setup.sh, or pass the folder that holds it.';
  END;
  EXECUTE format('CREATE OR REPLACE FUNCTION pgml._venv() RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE '
                 'SET search_path = pg_catalog, pg_temp AS %L', format('SELECT %L::text', venv));
  REVOKE ALL ON FUNCTION pgml._venv() FROM PUBLIC;
  GRANT EXECUTE ON FUNCTION pgml._venv() TO pgml_user;
  RETURN true;
END
$$;
COMMENT ON FUNCTION pgml.activate_venv(text) IS 'records the venv the server''s Python uses';
REVOKE ALL ON FUNCTION pgml.activate_venv(text) FROM PUBLIC, pgml_user, pgml_admin;

-- Puts the venv's site-packages (with its .pth files) in front of the server's sys.path once
-- per backend and imports the package; every plpython3u function calls it on first use.
CREATE OR REPLACE FUNCTION pgml._activate()
RETURNS text
LANGUAGE plpython3u VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
import os, site, sys
row = plpy.execute("SELECT pgml._venv() AS venv, pgml._sql_version() AS version")[0]
if 'pgml_plpy' not in GD:
    venv = row['venv']
    lib = 'python%d.%d' % sys.version_info[:2]
    site_packages = os.path.join(venv, 'lib', lib, 'site-packages')
    if not os.access(site_packages, os.R_OK | os.X_OK):
        plpy.error('pgml: %s is missing or not readable by the server' % site_packages,
                   hint="The server's Python is %s: build the venv with it (scripts/setup.sh), make it readable "
                        "by the server's OS user, and re-run sql/install.sql with -v venv=..." % lib,
                   sqlstate='55000')
    before = list(sys.path)
    site.addsitedir(site_packages)
    sys.path[:] = [p for p in sys.path if p not in before] + before
    try:
        import pgml_plpy.server as server
    except Exception as exc:
        plpy.error('pgml: cannot import pgml_plpy from %s: %s' % (venv, exc),
                   hint='Install the package into the venv (scripts/setup.sh) and re-run sql/install.sql.',
                   sqlstate='55000')
    server.check_install(plpy, row['version'])
    GD['pgml_plpy'] = server
return row['venv']
$$;
COMMENT ON FUNCTION pgml._activate() IS 'puts the venv on sys.path and imports pgml_plpy, once per backend';
REVOKE ALL ON FUNCTION pgml._activate() FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON FUNCTION pgml._activate() TO pgml_user;

CREATE OR REPLACE FUNCTION pgml.version()
RETURNS text
LANGUAGE plpython3u VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
if 'pgml_plpy' not in GD:
    plpy.execute('SELECT pgml._activate()')
return GD['pgml_plpy'].version(plpy)
$$;
COMMENT ON FUNCTION pgml.version() IS 'the version of pgml_plpy';
REVOKE ALL ON FUNCTION pgml.version() FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON FUNCTION pgml.version() TO pgml_user;

CREATE OR REPLACE FUNCTION pgml.python_version()
RETURNS text
LANGUAGE plpython3u VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
import sys
return sys.version
$$;
COMMENT ON FUNCTION pgml.python_version() IS 'the version of the server''s Python';
REVOKE ALL ON FUNCTION pgml.python_version() FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON FUNCTION pgml.python_version() TO pgml_user;

CREATE OR REPLACE FUNCTION pgml.python_package_version(name text)
RETURNS text
LANGUAGE plpython3u VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
if 'pgml_plpy' not in GD:
    plpy.execute('SELECT pgml._activate()')
return GD['pgml_plpy'].python_package_version(plpy, *args)
$$;
COMMENT ON FUNCTION pgml.python_package_version(text) IS 'the version of a Python distribution in the venv';
REVOKE ALL ON FUNCTION pgml.python_package_version(text) FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON FUNCTION pgml.python_package_version(text) TO pgml_admin;

CREATE OR REPLACE FUNCTION pgml.validate_python_dependencies()
RETURNS TABLE (package text, version text)
LANGUAGE plpython3u VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
if 'pgml_plpy' not in GD:
    plpy.execute('SELECT pgml._activate()')
return GD['pgml_plpy'].validate_python_dependencies(plpy)
$$;
COMMENT ON FUNCTION pgml.validate_python_dependencies() IS 'each dependency of pgml_plpy and its version; an error names any that is missing';
REVOKE ALL ON FUNCTION pgml.validate_python_dependencies() FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON FUNCTION pgml.validate_python_dependencies() TO pgml_admin;

CREATE OR REPLACE FUNCTION pgml.validate()
RETURNS TABLE (item text, ok boolean, detail text)
LANGUAGE plpython3u VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
if 'pgml_plpy' not in GD:
    plpy.execute('SELECT pgml._activate()')
return GD['pgml_plpy'].validate(plpy)
$$;
COMMENT ON FUNCTION pgml.validate() IS 'the installation checked end to end: one row per part, whether it works, and what to fix';
REVOKE ALL ON FUNCTION pgml.validate() FROM PUBLIC, pgml_user, pgml_admin;
GRANT EXECUTE ON FUNCTION pgml.validate() TO pgml_admin;
