"""The demo: PostgreSQL as a vector database, on the embedded all-MiniLM-L6-v2.

It loads a real text corpus (the summaries of the Python standard library's documented
functions and classes, read from this Python's own docstrings) into a table with
pgml.load_dataset, embeds every row with CALL pgml.embed_table (progress is printed
while it runs), and answers natural-language questions with pgml.nearest, printing the
time of each question's embedding and of its search. Run it through scripts/demo.sh, which sets everything up.
It exits non-zero when a step fails or finds nothing, so CI can run it as a smoke test.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import sys
import tempfile
import time

import psycopg

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
MODULES = """argparse array asyncio base64 bisect bz2 calendar collections concurrent.futures configparser contextlib
copy csv datetime decimal difflib email.message email.utils enum filecmp fnmatch fractions ftplib functools getpass
glob gzip hashlib heapq hmac html html.parser http.client http.server imaplib ipaddress itertools json logging
lzma mailbox math mimetypes multiprocessing operator os os.path pathlib pickle platform pprint queue random re
sched secrets shelve shlex shutil signal smtplib socket sqlite3 ssl statistics string struct subprocess
tarfile tempfile textwrap threading time timeit tomllib traceback unicodedata unittest urllib.parse
urllib.request uuid venv warnings weakref xml.etree.ElementTree zipfile zlib zoneinfo""".split()
QUESTIONS = [
    "How do I read a compressed file?",
    "parse command line options",
    "what time is it now",
    "send an email",
    "pick a random element from a list",
    "run another program and capture its output",
]


def corpus() -> list[dict]:
    """One row per documented public function or class: its name and its docstring's first paragraph."""
    rows = []
    for name in MODULES:
        module = importlib.import_module(name)
        for attr, value in sorted(vars(module).items()):
            if attr.startswith("_") or not (inspect.isfunction(value) or inspect.isclass(value)
                                            or inspect.isbuiltin(value)):
                continue
            if (getattr(value, "__module__", None) or name).lstrip("_") not in (name, name.replace(".", "_")):
                continue  # re-exported from elsewhere
            doc = inspect.getdoc(value)
            summary = " ".join(doc.split("\n\n")[0].split()) if doc else ""
            if len(summary) >= 20:
                rows.append({"name": f"{name}.{attr}", "doc": summary})
    return rows


def main(dsn: str) -> int:
    rows = corpus()
    folder = tempfile.mkdtemp(prefix="pgml_demo_")
    os.chmod(folder, 0o755)
    path = os.path.join(folder, "python_docs.jsonl")
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    os.chmod(path, 0o644)

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.add_notice_handler(lambda diag: print("  ", diag.message_primary, flush=True))
        print(f"pgml {conn.execute('SELECT pgml.version()').fetchone()[0]}: semantic search over the Python "
              f"{sys.version_info.major}.{sys.version_info.minor} standard library's documentation\n")
        table, count = conn.execute("SELECT * FROM pgml.load_dataset(%s)", (path,)).fetchone()
        print(f"1. SELECT * FROM pgml.load_dataset('{path}')\n   -> {count} rows in {table}\n")
        if count != len(rows):
            return failed(f"{len(rows)} rows written, {count} loaded")
        print(f"2. CALL pgml.embed_table('{table}', 'doc', 'embedding', '{MODEL}')")
        started = time.perf_counter()
        conn.execute("CALL pgml.embed_table(%s, 'doc', 'embedding', %s)", (table, MODEL))
        print(f"   ({time.perf_counter() - started:.1f} s)\n")
        vectors = conn.execute(f"SELECT count(embedding) FROM {table}").fetchone()[0]
        if vectors != count:
            return failed(f"{vectors} of {count} rows embedded")
        print("3. For each question: its embedding, then the 3 nearest rows (pgml.nearest: numpy over the table)\n"
              "   SELECT pgml.embed(model, question) AS q;\n"
              f"   SELECT d.name, d.doc, 1 - n.distance FROM pgml.nearest('{table}', 'embedding', q, 3) "
              f"WITH ORDINALITY AS n\n   JOIN {table} d ON (d.tableoid, d.ctid) = (n.tableoid, n.ctid) "
              "ORDER BY n.ordinality\n")
        for question in QUESTIONS:
            started = time.perf_counter()
            query = conn.execute("SELECT pgml.embed(%s, %s)", (MODEL, question)).fetchone()[0]
            embedded = time.perf_counter()
            hits = conn.execute(
                f"""SELECT d.name, d.doc, 1 - n.distance AS similarity
                    FROM pgml.nearest(%s, 'embedding', %s::real[], 3) WITH ORDINALITY AS n
                    JOIN {table} d ON (d.tableoid, d.ctid) = (n.tableoid, n.ctid)
                    ORDER BY n.ordinality""", (table, query)).fetchall()
            searched = time.perf_counter()
            print(f"   Q: {question}   (embedding {(embedded - started) * 1000:.0f} ms, "
                  f"pgml.nearest {(searched - embedded) * 1000:.0f} ms)")
            for name, doc, similarity in hits:
                print(f"      {similarity:.3f}  {name}: {doc[:90]}")
            print()
            if len(hits) != 3 or any(similarity is None for _, _, similarity in hits):
                return failed(f"no answer to {question!r}")
    return 0


def failed(why: str) -> int:
    print(f"demo: failed: {why}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
