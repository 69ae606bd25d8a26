"""Test fixtures: tiny models built by the suite, and a real PostgreSQL with plpython3u.

The server comes from testcontainers (an image built from the Dockerfile) where a Docker
engine answers, and otherwise from a throwaway initdb cluster (scripts/localpg.py).
A database test never skips: without a server the fixture fails the test.

Markers (registered in pyproject.toml): every test that uses the server is marked `db` here,
from its fixtures, so `pytest -m "not db"` runs the unit tests alone, in seconds; modules
mark themselves `slow`, `soak` or `faults`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg
import pytest
from psycopg.types.json import Jsonb

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO / "tests"))

import tiny_models  # noqa: E402
from localengine import free_port  # noqa: E402
from localpg import LocalCluster  # noqa: E402

VENV = Path(os.environ.get("PGML_VENV", REPO / ".venv"))
MODELS_ROOT = Path(os.environ.get("PGML_TEST_MODELS", Path(tempfile.gettempdir()) / "pgml_plpy_test_models"))


# The fixtures that start a PostgreSQL server: this file's, and the names a module gives its own server
# (test_openai.py's cluster and db, with another environment).
SERVER_FIXTURES = {"dsn", "private_cluster", "cron_cluster", "cluster", "db"}


def pytest_collection_modifyitems(items):
    """Mark `db` every test that needs a PostgreSQL server (through any of its fixtures)."""
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.db)


@pytest.fixture(scope="session")
def models() -> dict[str, str]:
    """name -> folder of the deterministic tiny models (built once, cached across runs)."""
    return {name: str(path) for name, path in tiny_models.build_all(MODELS_ROOT).items()}


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env().ping()
        return True
    except Exception:  # noqa: BLE001 - no engine, no socket, no permission: use a local cluster
        return False


def _own_models_cache(dsn: str, folder: str) -> None:
    """Tuned models restored into a folder of this server's own: suites running at once on one machine
    (and the tests that empty or damage that folder) never share ~/.cache/pgml_plpy/models."""
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("UPDATE pgml.settings SET value = to_jsonb(%s::text) WHERE name = 'models_cache'", (folder,))


@pytest.fixture(scope="session")
def dsn(models):
    """Connection string of a PostgreSQL with pgml_plpy installed in database postgres."""
    if _docker_answers():
        from testcontainers.core.image import DockerImage
        from testcontainers.postgres import PostgresContainer

        with DockerImage(path=str(REPO), tag="pgml-plpy-test") as image:
            container = PostgresContainer(str(image), username="postgres", password="pgml", dbname="postgres",
                                          driver=None)
            container.with_volume_mapping(str(MODELS_ROOT), str(MODELS_ROOT), "ro")
            with container:
                dsn = (f"host={container.get_container_host_ip()} port={container.get_exposed_port(5432)} "
                       "user=postgres password=pgml dbname=postgres")
                _own_models_cache(dsn, "/var/lib/postgresql/pgml_test_models_cache")
                yield dsn
        return
    if os.geteuid() == 0:
        readable = subprocess.run(["runuser", "-u", "postgres", "--", "test", "-r",
                                   str(VENV / "pyvenv.cfg")]).returncode == 0
        assert readable, f"the postgres OS user cannot read the venv {VENV}: put the checkout where it can"
    root = tempfile.mkdtemp(prefix="pgml_plpy_pg_")  # not pytest's tmp: the postgres user must enter it
    cluster = LocalCluster(root, free_port()).start()
    try:
        try:
            cluster.install(VENV)
        except subprocess.CalledProcessError as exc:
            pytest.fail(f"sql/install.sql failed:\n{exc.stderr}")
        _own_models_cache(cluster.dsn, os.path.join(root, "models_cache"))
        yield cluster.dsn
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def setting(conn):
    """Change settings for one test; they come back afterwards."""
    saved = dict(conn.execute("SELECT name, value FROM pgml.settings").fetchall())

    def change(name, value):
        conn.execute("UPDATE pgml.settings SET value = %s WHERE name = %s", (Jsonb(value), name))

    yield change
    for name, value in saved.items():
        conn.execute("UPDATE pgml.settings SET value = %s WHERE name = %s AND value <> %s",
                     (Jsonb(value), name, Jsonb(value)))


@contextlib.contextmanager
def local_cluster(config: dict[str, str] | None = None, sockets_setting: str | None = None,
                  env: dict[str, str] | None = None):
    """A throwaway local initdb cluster with pgml_plpy installed, its postgresql.conf extended with config
    (and sockets_setting set to its socket folder, for settings that must name it), its server started
    with env added to this process's environment."""
    root = tempfile.mkdtemp(prefix="pgml_plpy_private_")
    cluster = LocalCluster(root, free_port(), config)
    if sockets_setting:
        cluster.config[sockets_setting] = str(cluster.sockets)
    try:
        with pytest.MonkeyPatch.context() as patch:
            for name, value in (env or {}).items():
                patch.setenv(name, value)
            cluster.start()
        cluster.install(VENV)
        _own_models_cache(cluster.dsn, os.path.join(root, "models_cache"))
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def private_cluster(models):
    """A throwaway local cluster of the module's own, for tests that crash or break a server.

    It is always a local initdb cluster (kill -9 needs the server's processes at hand)."""
    with local_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="module")
def cron_cluster(models):
    """A local cluster of the module's own with pg_cron loaded (Debian's postgresql-15-cron: scripts/setup.sh
    --tests installs it) and created in database postgres; its jobs connect over the cluster's socket."""
    config = {"shared_preload_libraries": "pg_cron", "cron.database_name": "postgres"}
    with local_cluster(config, sockets_setting="cron.host") as cluster:
        cluster.psql("-q", "-c", "CREATE EXTENSION pg_cron", capture=True)
        yield cluster


@pytest.fixture(scope="session")
def conn(dsn):
    """One backend shared by the tests: models stay loaded between them."""
    with psycopg.connect(dsn, autocommit=True) as c:
        yield c


@pytest.fixture
def new_conn(dsn):
    """A fresh backend (an empty model cache)."""
    with psycopg.connect(dsn, autocommit=True) as c:
        yield c

