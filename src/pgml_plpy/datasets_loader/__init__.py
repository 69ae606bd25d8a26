"""pgml.load_dataset: a Hugging Face dataset, or files on the database server, into pgml."<name>".

PostgresML's load_dataset(source, subset, limit, kwargs) called
`datasets.load_dataset(source, subset, **kwargs)` (with `split=f"train[:{limit}]"` when
a limit was given), concatenated the splits of a DatasetDict and wrote them into a
new table `pgml."<source>"`. This keeps those semantics and adds:

- no network unless the superuser allowed it (the `hub_downloads` setting): a hub
  dataset comes from the server's datasets cache, and one that is not there is a
  clear error rather than a hang;
- local files (csv, tsv, json, jsonl, parquet, arrow, txt; an absolute path on the
  server) for superusers and members of pg_read_server_files, like COPY FROM a file;
- typed columns from the dataset's Features (ClassLabel names in a column comment)
  and NULLs kept;
- a table is replaced only if an earlier load_dataset made it (its comment says so).

The SQL built here quotes every identifier and binds every value: nothing a caller
passes becomes SQL text.

- sqltypes.py  PostgreSQL names and types for the dataset's features, values for the arrays
- arguments.py what to load and where, from the arguments, before anything is read
- reading.py   loading with the datasets library, offline unless allowed
- writing.py   the table made and filled in batches
"""

from __future__ import annotations

import shutil
import tempfile

from ..settings import Settings
from .arguments import plan
from .reading import parts_of, read
from .sqltypes import columns_of
from .writing import check_privileges, write


def load_dataset(db, source, subset, limit, kwargs, *, settings: Settings) -> list[tuple[str, int]]:
    """pgml.load_dataset's core: [(table_name, rows)]."""
    p = plan(source, subset, limit, kwargs)
    check_privileges(db, p)
    temporary = None
    if p.kind != "hub" and "cache_dir" not in p.options:
        # datasets converts files to Arrow in its cache: a copy the server need not keep
        temporary = tempfile.mkdtemp(prefix="pgml_load_dataset_")
    try:
        loaded = read(p, settings, cache_dir=temporary or settings.huggingface_cache)
        parts = parts_of(p, loaded)
        columns = columns_of(parts)
        rows = write(db, p, source.strip(), parts, columns)
        del loaded, parts
        return [(f"pgml.{db.quote_ident(p.table)}", rows)]  # usable as a regclass, as PostgresML's
    finally:
        if temporary:
            shutil.rmtree(temporary, ignore_errors=True)
