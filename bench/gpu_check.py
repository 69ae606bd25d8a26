"""Exercise the Python core on a CUDA machine (no PostgreSQL needed), or say what it skipped.

Checks, through pgml_plpy's own loading and cache code:
  - device placement: a model asked for on cuda is on cuda (loaded_models' device);
  - dtypes: float16 and bfloat16 weights load as asked and run;
  - memory: after unload, torch.cuda.memory_allocated() is back where it was;
  - throughput: transform() vs the same pipeline called directly, same device, batch 64;
  - streaming generation and embeddings on the device.
Without CUDA it runs the CPU parts and says which GPU parts it skipped. It builds its
models locally (tests/tiny_models.py plus a BERT-base-sized classifier with random
weights), so it needs no network.

    python bench/gpu_check.py            # PYTHONPATH is set up by the script itself
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "src"), str(REPO / "tests")]

from pgml_plpy.cache import MODELS  # noqa: E402
from pgml_plpy.settings import Settings  # noqa: E402
from pgml_plpy.transform import transform, transform_stream  # noqa: E402

SETTINGS = Settings(max_models=16, superuser=True)  # this process owns the machine: any folder


def base_sized_classifier(root: Path, tokenizer_folder: Path) -> str:
    """A BERT-base-sized sequence classifier with random weights and a tiny model's tokenizer."""
    import shutil

    from transformers import BertConfig, BertForSequenceClassification

    folder = root / "bert-base-random"
    if not folder.exists():
        shutil.copytree(tokenizer_folder, folder)
        config = BertConfig.from_pretrained(tokenizer_folder)
        config.update(dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072))
        BertForSequenceClassification(config).save_pretrained(folder)
    return str(folder)


def run(task: dict, inputs: list, args: dict | None = None):
    return transform(json.dumps(task), json.dumps(args or {}), inputs, task_is_json=True, inputs_are_json=False,
                     settings=SETTINGS)


def alternate(a, b, rounds: int = 7) -> tuple[float, float]:
    """Median seconds of a and of b, run in alternation after a warm-up of each."""
    import statistics

    a(), b()
    times: tuple[list, list] = ([], [])
    for _ in range(rounds):
        for fn, spent in ((a, times[0]), (b, times[1])):
            started = time.perf_counter()
            fn()
            spent.append(time.perf_counter() - started)
    return statistics.median(times[0]), statistics.median(times[1])


def main() -> int:
    import torch
    import transformers

    import tiny_models

    root = Path(tempfile.gettempdir()) / "pgml_plpy_gpu_check"
    models = tiny_models.build_all(root, ["bert-sentiment", "gpt2-chat"])
    big = base_sized_classifier(root, models["bert-sentiment"])
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, "
          f"device: {torch.cuda.get_device_name(0) if cuda else 'cpu (no CUDA: GPU parts skipped)'}")
    failures = []

    def check(ok: bool, what: str):
        print(("ok    " if ok else "FAIL  ") + what)
        if not ok:
            failures.append(what)

    baseline = torch.cuda.memory_allocated() if cuda else 0
    task = {"task": "text-classification", "model": big, "device": device}
    out = run(task, ["I love it"])
    entry = MODELS.entries()[-1]
    check(entry.device.startswith(device) and out[0]["label"], f"placement: on {entry.device}")
    if cuda:
        for dtype in ("float16", "bfloat16"):
            run({**task, "torch_dtype": dtype}, ["I love it"])
            check(MODELS.entries()[-1].dtype == dtype, f"dtype {dtype}: loaded as {MODELS.entries()[-1].dtype}")
        loaded = torch.cuda.memory_allocated()
        freed = MODELS.unload(lambda e: True)
        after = torch.cuda.memory_allocated()
        check(after - baseline < 1 << 20, f"unload: {len(freed)} models, {(loaded - baseline) >> 20} MiB allocated, "
              f"{(after - baseline) >> 20} MiB left")
    else:
        print("skip  dtypes float16 / bfloat16 and CUDA memory after unload (no CUDA)")

    inputs = ["the food arrived cold and the room was far too noisy for a quiet dinner"] * 64
    pipe = transformers.pipeline("text-classification", model=big, device=device)
    ours, direct = alternate(lambda: run(task, inputs, {"batch_size": 64}), lambda: pipe(inputs, batch_size=64))
    check(ours / direct < 1.05, f"throughput: transform {ours * 1000:.1f} ms vs pipeline {direct * 1000:.1f} ms "
          f"per batch of 64 (ratio {ours / direct:.3f})")

    gen = {"task": "text-generation", "model": str(models["gpt2-chat"]), "device": device}
    args = {"max_new_tokens": 12, "do_sample": False}
    whole = run(gen, ["The cat"], args)[0][0]["generated_text"]
    pieces = list(transform_stream(json.dumps(gen), json.dumps(args), ["The cat"], task_is_json=True,
                                   inputs_are_json=False, settings=SETTINGS))
    check("The cat" + "".join(pieces) == whole, f"streaming on {device}: {len(pieces)} pieces equal the result")

    try:
        from pgml_plpy.embeddings import embed

        vectors = embed("sentence-transformers/all-MiniLM-L6-v2", ["hello"], json.dumps({"device": device}),
                        SETTINGS)
        check(len(vectors) == 1, f"embedding on {device}")
    except Exception as exc:  # noqa: BLE001 - the packaged MiniLM may be absent on a bare GPU machine
        print(f"skip  embeddings: {type(exc).__name__}: {exc}")
    MODELS.unload(lambda e: True)
    print("all checks passed" if not failures else f"{len(failures)} check(s) failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
