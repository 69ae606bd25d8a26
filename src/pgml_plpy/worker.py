"""Runs vectorizers as their rows change, for databases without pg_cron.

    python -m pgml_plpy.worker --dsn 'host=... dbname=... user=...' [--vectorizer NAME ...] [--poll 30]

It LISTENs on the channel the vectorizers' triggers NOTIFY (pgml_vectorizers), and on each
notification, and every --poll seconds in case one was missed (the connection dropped, a failed row
came due for its retry), it runs `CALL pgml.run_vectorizer(name)` for each vectorizer with queued
or failed rows. It runs as the role of the DSN: a superuser, or the owner of the vectorizers it
should run (a run acts as the vectorizer's owner either way). SIGTERM or SIGINT stops it: a run in
progress is cancelled, which leaves its unfinished rows queued for the next run. It reconnects
when the connection is lost. It needs psycopg (pip install 'pgml-plpy[worker]').
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time

CHANNEL = "pgml_vectorizers"
log = logging.getLogger("pgml_plpy.worker")


class Stopped(Exception):
    """SIGTERM or SIGINT while waiting."""


class Worker:
    def __init__(self, dsn: str, names: list[str] | None, poll: float):
        self.dsn, self.names, self.poll = dsn, names, poll
        self.stop = False
        self.conn = None
        self.running = False   # a CALL is in progress on self.conn
        self.waiting = False

    def handle(self, signum, frame) -> None:
        self.stop = True
        if self.running and self.conn is not None:
            self.conn.cancel_safe()   # the CALL ends with 57014; its batch's rows stay queued
        elif self.waiting:
            raise Stopped

    def connect(self):
        import psycopg

        conn = psycopg.connect(self.dsn, autocommit=True)
        conn.add_notice_handler(lambda diag: log.info("%s", diag.message_primary))
        conn.execute(f"LISTEN {CHANNEL}")
        return conn

    def with_work(self) -> list[str]:
        # the ones with work that this role may run (a member of the owner of their embeddings table)
        rows = self.conn.execute("SELECT v.name FROM pgml.vectorizers v JOIN pg_catalog.pg_class c "
                                 "ON c.oid = v.embeddings WHERE (v.pending > 0 OR v.failed > 0) "
                                 "AND pg_catalog.pg_has_role(c.relowner, 'MEMBER') ORDER BY v.name").fetchall()
        return [name for (name,) in rows if self.names is None or name in self.names]

    def run_once(self) -> None:
        import psycopg

        for name in self.with_work():
            if self.stop:
                return
            self.running = True
            try:
                self.conn.execute("CALL pgml.run_vectorizer(%s)", (name,))
            except psycopg.errors.QueryCanceled:
                if self.stop:
                    return
                log.warning("the run of %s was cancelled", name)
            except psycopg.OperationalError:
                raise
            except psycopg.Error as exc:
                log.error("the run of %s failed: %s", name, exc.diag.message_primary or exc)
            finally:
                self.running = False

    def wait(self) -> None:
        """Until a notification arrives (or one came during the runs) or poll seconds pass."""
        self.waiting = True
        try:
            if self.stop:
                raise Stopped
            for _ in self.conn.notifies(timeout=self.poll, stop_after=1):
                pass
        finally:
            self.waiting = False

    def serve(self) -> int:
        import psycopg

        log.info("pgml_plpy.worker: listening on %s (poll every %s s)", CHANNEL, self.poll)
        pause = 1.0
        while not self.stop:
            try:
                if self.conn is None:
                    self.conn = self.connect()
                    pause = 1.0
                self.run_once()
                self.wait()
            except Stopped:
                break
            except psycopg.OperationalError as exc:
                log.warning("connection lost (%s); reconnecting in %.0f s", exc, pause)
                self.close()
                try:
                    self.waiting = True
                    time.sleep(pause)
                except Stopped:
                    break
                finally:
                    self.waiting = False
                pause = min(pause * 2, 60.0)
        self.close()
        log.info("pgml_plpy.worker: stopped")
        return 0

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            finally:
                self.conn = None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pgml_plpy.worker", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", required=True, help="libpq connection string or URI")
    parser.add_argument("--vectorizer", action="append", dest="names", metavar="NAME",
                        help="run only these vectorizers (repeatable; default: every one the role sees)")
    parser.add_argument("--poll", type=float, default=30.0, help="seconds between checks without notifications")
    opts = parser.parse_args(argv)
    if opts.poll <= 0:
        parser.error("--poll must be positive")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        parser.error("the worker needs psycopg: pip install 'pgml-plpy[worker]'")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    worker = Worker(opts.dsn, opts.names, opts.poll)
    signal.signal(signal.SIGTERM, worker.handle)
    signal.signal(signal.SIGINT, worker.handle)
    return worker.serve()


if __name__ == "__main__":
    sys.exit(main())
