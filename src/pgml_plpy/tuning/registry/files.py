"""A model's files into pgml.files, and back into a local folder.

Files are stored in parts of PART_SIZE bytes, each with its SHA-256. A restored folder's name is a hash
of the model's file list and part checksums; every part is checked while it is written, and a folder
that is already there is used only when its files still hash to the parts in the database.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import posixpath
import shutil
import tempfile
from pathlib import Path

from ...errors import DataCorrupted, IoError, ModelNotFound
from ...settings import Settings

PART_SIZE = 32 << 20         # bytes per pgml.files row
MANIFEST = ".pgml_files.json"
PICKLES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")  # never stored, never restored


def check_path(path: str) -> str:
    """A file path from pgml.files, refused unless it stays inside the model's folder."""
    normal = posixpath.normpath(path)
    if (not path or path.startswith("/") or normal != path or normal.startswith("..") or "\\" in path
            or any(part.startswith(".") for part in normal.split("/"))):
        raise DataCorrupted(f"pgml.files holds a path that is not a plain relative file name: {path!r}")
    if normal.endswith(PICKLES):
        raise DataCorrupted(f"pgml.files holds {path!r}, a pickle-based file, which is never restored (loading "
                            "one can run code)", hint="Tuned models are stored as safetensors.")
    return normal


def _parts(path: str | Path):
    """(part's bytes, its SHA-256) of a file, PART_SIZE bytes each; an empty file is one empty part."""
    with open(path, "rb") as fh:
        first = True
        while True:
            data = fh.read(PART_SIZE)
            if not data and not first:
                return
            yield data, hashlib.sha256(data).hexdigest()
            first = False
            if len(data) < PART_SIZE:
                return


def store_files(db, model_id: int, folder: str, files: list[str]) -> list[list]:
    """The files of folder into pgml.files, in parts of PART_SIZE bytes with their SHA-256; returns what
    was written, as manifest() reads it back."""
    written = []
    for rel in sorted(files):
        check_path(rel)
        parts, size = [], 0
        for data, sha256 in _parts(os.path.join(folder, rel)):
            db.execute("SELECT pgml._registry_file($1, $2, $3, $4, $5)", [model_id, rel, len(parts), sha256, data],
                       ["int8", "text", "int4", "text", "bytea"])
            parts.append(sha256)
            size += len(data)
        written.append([rel, parts, size])
    return written


def manifest(db, model_id: int) -> list[list]:
    """[[path, [part sha256, ...], size], ...] of a model's files, without reading their data."""
    rows = db.execute("SELECT path, array_agg(sha256 ORDER BY part) AS parts, "
                      "sum(pg_catalog.octet_length(data))::int8 AS size FROM pgml.files "
                      "WHERE model_id = $1 GROUP BY path ORDER BY path", [model_id], ["int8"])
    return [[r["path"], list(r["parts"]), int(r["size"])] for r in rows]


def cache_root(settings: Settings) -> Path:
    """Where restored models live: the setting models_cache, else ~/.cache/pgml_plpy/models of the
    server's OS user, else the temporary folder. Only that user may read it (0700)."""
    if settings.models_cache:
        candidates = [Path(settings.models_cache)]
    else:
        candidates = [Path(os.path.expanduser("~")) / ".cache" / "pgml_plpy" / "models",
                      Path(tempfile.gettempdir()) / f"pgml_plpy-{os.getuid()}" / "models"]
    for root in candidates:
        try:
            root.mkdir(parents=True, exist_ok=True, mode=0o700)
            if os.access(root, os.W_OK | os.X_OK):
                return root
        except OSError:
            continue
    raise IoError(f"the server's OS user cannot write the folder for restored models ({candidates[0]})",
                  hint="A superuser sets the setting models_cache to a folder that user can write: "
                       "UPDATE pgml.settings SET value = '\"/path\"' WHERE name = 'models_cache'.")


def _valid(folder: Path, files: list[list]) -> bool:
    """Whether folder holds exactly the files of the manifest, each hashing to its parts."""
    try:
        if json.loads((folder / MANIFEST).read_text()) != files:
            return False
        for path, parts, size in files:
            local = folder / path
            if local.stat().st_size != size or [sha256 for _, sha256 in _parts(local)] != parts:
                return False
        return True
    except (OSError, ValueError):
        return False


def read_part(db, model_id: int, path: str, part: int) -> bytes:
    """One part of one of a model's files from pgml.files, checked against its SHA-256."""
    rows = db.execute("SELECT sha256, data FROM pgml.files WHERE model_id = $1 AND path = $2 AND part = $3",
                      [model_id, path, part], ["int8", "text", "int4"])
    if not rows:
        raise ModelNotFound(f"pgml.files of model {model_id} has no part {part} of {path}",
                            hint="The model was deleted meanwhile: call again to use the deployed one.")
    return _checked(model_id, path, part, rows[0])


def _checked(model_id: int, path: str, part: int, row) -> bytes:
    """The data of a pgml.files row, once it hashes to the row's SHA-256."""
    data = bytes(row["data"])
    if hashlib.sha256(data).hexdigest() != row["sha256"]:
        raise DataCorrupted(f"pgml.files of model {model_id}: part {part} of {path} does not match its SHA-256",
                            hint="The stored model is damaged: deploy another model, or tune again.")
    return data


def files_key(files: list[list]) -> str:
    """The name of the folder holding a manifest's files: a hash of its paths and part checksums."""
    return hashlib.sha256(json.dumps(files).encode()).hexdigest()[:40]


def restored(files: list[list], root: Path) -> Path | None:
    """The folder under root that already holds the manifest's files intact, if there is one."""
    folder = root / files_key(files)
    return folder if _valid(folder, files) else None


def materialize(files: list[list], root: Path, write) -> Path:
    """The folder under root holding exactly the manifest's files (already trusted), each written by
    write(path, fh) unless a valid copy is there: the backend streams the parts from pgml.files, the
    shared runtime copies the parts a backend sent it. Every file is checked against its part checksums
    before the folder is used."""
    for path, _, _ in files:
        check_path(path)
    key = files_key(files)
    folder = root / key
    if restored(files, root) is not None:
        return folder
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=root))
    try:
        for path, _, _ in files:
            target = tmp / path
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "wb") as fh:
                write(path, fh)
        (tmp / MANIFEST).write_text(json.dumps(files))
        if not _valid(tmp, files):
            raise IoError(f"the files of {key} did not restore intact into {tmp}")
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)
        try:
            os.rename(tmp, folder)
        except OSError as exc:  # another process restored it meanwhile
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not _valid(folder, files):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def restore(db, model_id: int, files: list[list], settings: Settings) -> Path:
    """The files (a manifest() of model_id, already trusted) in a local folder; fetched from pgml.files
    unless a valid copy is there."""
    def write(path: str, fh) -> None:
        with db.cursor("SELECT part, sha256, data FROM pgml.files WHERE model_id = $1 AND path = $2 ORDER BY part",
                       [model_id, path], ["int8", "text"]) as parts:
            while rows := parts.fetch(1):
                fh.write(_checked(model_id, path, rows[0]["part"], rows[0]))

    return materialize(files, cache_root(settings), write)
