"""Record what transformers 4.x pipelines return for tests/reference_cases.py.

transformers 5 removed the question-answering, summarization, translation and text2text-generation
pipelines; pgml_plpy re-implements them and must return exactly what 4.x returned. Run this under a
transformers 4.57 overlay that reuses the venv's torch:

    /work/main/.venv/bin/pip install --target /work/main/.venv/tf4 --no-deps \\
        transformers==4.57.6 'huggingface-hub>=0.34,<1.0' 'tokenizers>=0.22.0,<=0.23.0' \\
        requests urllib3 charset-normalizer certifi
    PYTHONPATH=/work/main/.venv/tf4 /work/main/.venv/bin/python tests/tf4_reference.py MODELS_ROOT OUT.json

MODELS_ROOT is the folder given to tests/tiny_models.build_all (it must already hold the models:
this script does not build them, because a build under 4.x would differ from the 5.x one).
OUT.json gets {case_id: output} (numpy scalars turned into Python numbers); a case whose call raises
gets {"error": <exception class>, "message": <text>}.
"""

from __future__ import annotations

import os

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import json
import sys
import warnings
from pathlib import Path


def _jsonable(obj):
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if hasattr(obj, "tolist"):  # torch tensors
        return _jsonable(obj.tolist())
    return obj


def run_cases(models_root: Path, cases: list[dict]) -> dict:
    import torch
    import transformers

    if not transformers.__version__.startswith("4."):
        raise SystemExit(
            f"tf4_reference.py needs transformers 4.x, found {transformers.__version__} "
            "(run with PYTHONPATH=<4.x overlay>)"
        )
    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    warnings.filterwarnings("ignore")

    pipes: dict[tuple[str, str], object] = {}
    results: dict = {}
    for case in cases:
        folder = models_root / case["model"]
        if not (folder / "config.json").is_file():
            raise SystemExit(f"model folder {folder} is missing: build it with tests/tiny_models.py first")
        key = (case["task"], case["model"])
        if key not in pipes:
            pipes[key] = transformers.pipeline(case["task"], model=str(folder), tokenizer=str(folder), device="cpu")
        pipe = pipes[key]
        torch.manual_seed(0)
        try:
            with torch.no_grad():
                out = pipe(list(case["inputs"]), **case["args"])
            results[case["id"]] = _jsonable(out)
        except Exception as exc:  # recorded: the re-implementation must fail the same way
            results[case["id"]] = {"error": type(exc).__name__, "message": str(exc)}
    return results


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    here = Path(__file__).resolve().parent
    sys.path.insert(0, str(here))
    from reference_cases import CASES

    results = run_cases(Path(argv[0]).resolve(), CASES)
    Path(argv[1]).write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    errors = [k for k, v in results.items() if isinstance(v, dict) and "error" in v]
    print(f"{len(results)} cases written to {argv[1]}; {len(errors)} raised: {', '.join(errors) or '-'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
