"""A throwaway local PostgreSQL cluster with pgml_plpy installed (stdlib only).

Used by the demo and by the test suite when no Docker engine answers. The server
refuses to run as root, so as root the cluster belongs to the `postgres` OS user.

    python scripts/localpg.py start DIR [--venv VENV]   # initdb if needed, start, install
    python scripts/localpg.py stop DIR
"""

from __future__ import annotations

import argparse
import glob
import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def pg_bindir() -> Path:
    found = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True) if shutil.which(
        "pg_config") else None
    candidates = ([Path(found.stdout.strip())] if found and found.returncode == 0 else []) + sorted(
        (Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin")), reverse=True)
    for path in candidates:
        if (path / "initdb").exists():
            return path
    raise SystemExit("PostgreSQL server binaries (initdb) not found: run scripts/setup.sh first")


class LocalCluster:
    """config: more postgresql.conf settings for a new cluster (e.g. shared_preload_libraries)."""

    def __init__(self, root: str | os.PathLike, port: int = 5432, config: dict[str, str] | None = None):
        self.root = Path(root).resolve()
        self.data = self.root / "data"
        self.sockets = self.root / "sock"
        self.log = self.root / "server.log"
        self.port = port
        self.config = dict(config or {})
        self.bin = pg_bindir()
        self.as_root = os.geteuid() == 0

    def _run(self, *cmd, check=True, **kwargs):
        if self.as_root:
            cmd = ("runuser", "-u", "postgres", "--") + cmd
        done = subprocess.run(cmd, text=True, **kwargs)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stdout or ''}{done.stderr or ''}")
        return done

    @property
    def dsn(self) -> str:
        return f"host={self.sockets} port={self.port} user=postgres dbname=postgres"

    def start(self) -> "LocalCluster":
        self.sockets.mkdir(parents=True, exist_ok=True)
        if self.as_root:
            owner = pwd.getpwnam("postgres")
            for path in (self.root, self.sockets):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        if not (self.data / "PG_VERSION").exists():
            self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
                      "-E", "UTF8", "--locale=C.UTF-8", capture_output=True)
            with open(self.data / "postgresql.conf", "a") as conf:
                for name, value in self.config.items():
                    conf.write(f"{name} = '{value.replace(chr(39), chr(39) * 2)}'\n")
        status = self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "status", check=False,
                           capture_output=True)
        if status.returncode != 0:
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-o",
                      f"-p {self.port} -k {self.sockets} -c listen_addresses=''", "start", capture_output=True)
        return self

    def stop(self) -> None:
        if (self.data / "PG_VERSION").exists():
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop", check=False,
                      capture_output=True)

    def psql(self, *args: str, check: bool = True, capture: bool = False):
        cmd = [str(self.bin / "psql"), "-X", "-v", "ON_ERROR_STOP=1", "-h", str(self.sockets), "-p",
               str(self.port), "-U", "postgres", "-d", "postgres", *args]
        return subprocess.run(cmd, check=check, text=True, capture_output=capture)

    def install(self, venv: str | os.PathLike) -> None:
        self.psql("-q", "-v", f"venv={Path(venv).resolve()}", "-f", str(REPO / "sql" / "install.sql"),
                  capture=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("dir")
    parser.add_argument("--port", type=int, default=5432)
    parser.add_argument("--venv", default=str(REPO / ".venv"))
    opts = parser.parse_args(argv)
    cluster = LocalCluster(opts.dir, opts.port)
    if opts.action == "stop":
        cluster.stop()
        return 0
    cluster.start()
    try:
        cluster.install(opts.venv)
    except subprocess.CalledProcessError as exc:
        sys.stderr.write(exc.stderr or "")
        return 1
    print(cluster.dsn)
    return 0


if __name__ == "__main__":
    sys.exit(main())
