"""pgml.validate: the installation checked end to end, each finding with what to fix."""

from __future__ import annotations

import json
import os
import shutil
import sys

from . import __version__
from .errors import DiskFull, InstallError, to_pgml_error
from .settings import Settings

LOW_DISK = 256 << 20  # bytes free under which the models cache fails the check


def dependencies() -> list[tuple[str, str]]:
    """(distribution, version) for each of the package's dependencies; an error names any missing."""
    from importlib.metadata import PackageNotFoundError, requires
    from importlib.metadata import version as dist_version

    from packaging.requirements import Requirement

    found, missing = [], []
    for line in requires("pgml-plpy") or []:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        try:
            installed = dist_version(req.name)
        except PackageNotFoundError:
            missing.append(str(req))
            continue
        if req.specifier and installed not in req.specifier:
            missing.append(f"{req} (found {installed})")
        found.append((req.name, installed))
    if missing:
        raise InstallError(f"the venv lacks {', '.join(missing)}",
                           hint="Re-run scripts/setup.sh (or pip install the package) in the venv.")
    return found


def _folder(path: str, write: bool, what: str) -> str:
    if not os.path.isdir(path):
        raise InstallError(f"{what} {path} does not exist", hint="Create it, readable (and writable where "
                                                                 "models are stored) by the server's OS user.")
    mode = os.R_OK | os.X_OK | (os.W_OK if write else 0)
    if not os.access(path, mode):
        raise InstallError(f"the server's OS user cannot {'write' if write else 'read'} {what} {path}",
                           hint=f"chown or chmod {path} for the server's OS user.")
    return path


def _models_cache(settings: Settings) -> str:
    from .tuning.registry.files import cache_root

    root = cache_root(settings)
    free = shutil.disk_usage(root).free
    if free < LOW_DISK:
        raise DiskFull(f"only {free >> 20} MiB free under the models cache {root}",
                       hint="Free disk space there, or move models_cache.")
    return f"{root} ({free >> 30} GiB free)"


def _huggingface_cache(settings: Settings) -> str:
    from huggingface_hub.constants import HF_HUB_CACHE

    path = settings.huggingface_cache or HF_HUB_CACHE
    if not os.path.exists(path) and not settings.hub_downloads:
        return f"{path} (absent: hub ids other than packaged models cannot be found)"
    return _folder(path, settings.hub_downloads, "the Hugging Face cache")


def _signing_key() -> str:
    from .tuning import signing

    signing.load_key()
    return f"{signing.KEY_FILE} in the data directory: tuned models are signed and checked"


def _torch(settings: Settings) -> str:
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return (f"torch {torch.__version__}, {torch.get_num_threads()} thread(s) for this call (torch_threads "
            f"{json.dumps(settings.torch_threads)}), {gpus} CUDA device(s)")


def _inference(settings: Settings) -> str:
    from .embeddings import DEFAULT_EMBEDDER, embed

    vector = embed(DEFAULT_EMBEDDER, ["pgml validate"], None, settings)[0]
    return f"{DEFAULT_EMBEDDER}: {vector.count(',') + 1} dimensions"


def _route_check(route, settings: Settings):
    from .runtimes import runtime_of

    return lambda: runtime_of(route).check(route, settings)


def checks(db, settings: Settings) -> list[tuple[str, bool, str]]:
    """(item, ok, detail) for each part of the installation."""
    venv = db.execute("SELECT pgml._venv() AS venv")[0]["venv"]

    def roles() -> str:
        found = {r["rolname"] for r in db.execute(
            "SELECT rolname FROM pg_catalog.pg_roles WHERE rolname IN ('pgml_user', 'pgml_admin')")}
        if len(found) < 2:
            raise InstallError("the roles pgml_user and pgml_admin are missing",
                               hint="Re-run sql/install.sql as a superuser.")
        return "pgml_user, pgml_admin"

    items = [
        ("venv", lambda: f"{venv}: Python {sys.version.split()[0]}, pgml_plpy {__version__}"),
        ("dependencies", lambda: ", ".join(f"{name} {version}" for name, version in dependencies())),
        ("torch", lambda: _torch(settings)),
        ("roles", roles),
        ("signing key", _signing_key),
        ("huggingface cache", lambda: _huggingface_cache(settings)),
        ("models cache", lambda: _models_cache(settings)),
        ("inference", lambda: _inference(settings)),
    ]
    items += [(f"route {route.index}: {route.model} -> {route.runtime}", _route_check(route, settings))
              for route in settings.runtimes]
    results = []
    for item, check in items:
        try:
            results.append((item, True, check()))
        except Exception as exc:  # noqa: BLE001 - each finding is reported, not raised
            err = to_pgml_error(exc, item)
            results.append((item, False, err.message + (f" (HINT: {err.hint})" if err.hint else "")))
    return results
