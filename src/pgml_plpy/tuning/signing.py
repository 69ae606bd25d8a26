"""Which tuned models the server itself wrote: an HMAC-SHA256 per model, keyed with the server's key.

pgml.files holds a model's files in parts with a SHA-256 each; a checksum catches damage, not
forgery, since whoever writes a part can write its checksum too. So each successful tune signs its
model: the MAC covers the model's id, what serving reads from its pgml.models row (base model,
LoRA flag, revision) and every file's path and part checksums, exactly as the tune wrote them
(pgml.models.files_mac). Serving checks it before restoring anything; then each part's data is
checked against its checksum.

The key is the file pgml_plpy.key in the data directory, mode 0600, made by the install: only the
server's OS user can read it (and, through SQL, superusers and members of pg_read_server_files,
who can read every file the server can). It is read by the backend's own Python, which no role
below superuser can run code in; no SQL function returns it or signs with it, so pgml_admin and
pgml_user have no way to it. A key kept in a table would have to be handed to the tuning code,
which runs as the calling role, by a function that role could call itself.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets

from ..errors import DataCorrupted, InstallError

# Relative: a backend's working directory is the data directory (PostgreSQL opens its own files so).
KEY_FILE = "pgml_plpy.key"
_KEY_BYTES = 32


def key_path() -> str:
    return os.path.abspath(KEY_FILE)


def create_key() -> bool:
    """Make the server's key unless it exists; whether it was made."""
    try:
        fd = os.open(KEY_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(_KEY_BYTES) + "\n")
    return True


def load_key() -> bytes:
    """The server's key; an error saying how to make it when it is missing or unreadable."""
    try:
        with open(KEY_FILE) as fh:
            key = bytes.fromhex(fh.read().strip())
    except (OSError, ValueError) as exc:
        raise InstallError(f"the server's key for signing tuned models ({KEY_FILE} in the data directory) cannot "
                           f"be read: {exc.__class__.__name__}",
                           hint="Re-run sql/install.sql as a superuser: it makes the key (and signs the models "
                                "that have none). A copy of the cluster needs the original's key file.") from None
    if len(key) < _KEY_BYTES:
        raise InstallError(f"the server's key for signing tuned models ({KEY_FILE}) is too short",
                           hint="Restore it from a backup of the data directory.")
    return key


def _message(model_id: int, base_model: str, lora: bool, revision, files) -> bytes:
    """What is signed: the model's identity and its files as [path, [part sha256, ...]], by path."""
    listed = sorted([str(path), list(parts)] for path, parts, *_ in files)
    return json.dumps({"model_id": int(model_id), "base_model": base_model, "lora": bool(lora),
                       "revision": revision, "files": listed}, sort_keys=True, separators=(",", ":")).encode()


def sign(key: bytes, model_id: int, base_model: str, lora: bool, revision, files) -> str:
    return hmac.new(key, _message(model_id, base_model, lora, revision, files), hashlib.sha256).hexdigest()


def verify(key: bytes, model_id: int, base_model: str, lora: bool, revision, files, mac: str | None) -> None:
    """Refuse a model whose files the server's tuning did not write."""
    if mac is None:
        raise InstallError(f"model {model_id} is not signed: its files were stored before pgml_plpy signed tuned "
                           "models, or outside pgml.tune",
                           hint="If its rows are trusted, a superuser signs the models stored before the upgrade "
                                "by re-running sql/install.sql.")
    if not hmac.compare_digest(mac, sign(key, model_id, base_model, lora, revision, files)):
        raise DataCorrupted(f"model {model_id} is refused: its files and pgml.models row are not what this "
                            "server's pgml.tune wrote (their MAC does not match)",
                            hint="They were changed outside pgml.tune, or come from a server with another key "
                                 f"({KEY_FILE} in its data directory). Deploy another model, or tune again.")
