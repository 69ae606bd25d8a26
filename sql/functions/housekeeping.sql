-- Activation of the venv in each backend, version checks and PostgresML's housekeeping functions.

-- The release these SQL functions belong to; the venv's package must match it.
CREATE OR REPLACE FUNCTION pgml._sql_version() RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT '0.1.0'::text $$;

-- Records the venv as the body of pgml._venv(), which only its owner (the installing
-- superuser) can replace: the venv decides what code the server runs, so it is never a
-- GUC that any user could SET. New connections use the new venv.
CREATE OR REPLACE FUNCTION pgml.activate_venv(venv text) RETURNS boolean
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
  RETURN true;
END
$$;
REVOKE ALL ON FUNCTION pgml.activate_venv(text) FROM PUBLIC;

-- Puts the venv's site-packages (with its .pth files) in front of the server's sys.path once
-- per backend and imports the package; every plpython3u function calls it on first use.
CREATE OR REPLACE FUNCTION pgml._activate() RETURNS text
LANGUAGE plpython3u VOLATILE PARALLEL RESTRICTED
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

CREATE OR REPLACE FUNCTION pgml.version() RETURNS text
LANGUAGE plpython3u VOLATILE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$
if 'pgml_plpy' not in GD:
    plpy.execute('SELECT pgml._activate()')
return GD['pgml_plpy'].version(plpy)
$$;

CREATE OR REPLACE FUNCTION pgml.python_version() RETURNS text
LANGUAGE plpython3u VOLATILE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$
import sys
return sys.version
$$;

CREATE OR REPLACE FUNCTION pgml.python_package_version(name text) RETURNS text
LANGUAGE plpython3u VOLATILE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$
if 'pgml_plpy' not in GD:
    plpy.execute('SELECT pgml._activate()')
return GD['pgml_plpy'].python_package_version(plpy, name)
$$;

CREATE OR REPLACE FUNCTION pgml.validate_python_dependencies()
RETURNS TABLE (package text, version text)
LANGUAGE plpython3u VOLATILE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$
if 'pgml_plpy' not in GD:
    plpy.execute('SELECT pgml._activate()')
return GD['pgml_plpy'].validate_python_dependencies(plpy)
$$;

-- The installation checked end to end: one row per part, whether it works, and what to fix.
CREATE OR REPLACE FUNCTION pgml.validate()
RETURNS TABLE (item text, ok boolean, detail text)
LANGUAGE plpython3u VOLATILE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$
if 'pgml_plpy' not in GD:
    plpy.execute('SELECT pgml._activate()')
return GD['pgml_plpy'].validate(plpy)
$$;
