"""A small OpenAI-compatible embeddings and rerank server over sentence-transformers, for the tests.

No embeddings engine from PyPI installs beside the project's pins (infinity-emb needs numpy<2 and
sentence-transformers<4), and vLLM / text-embeddings-inference do not run here, so the tests serve
embeddings themselves, in the shapes those engines answer:

    GET  /v1/models       {"data": [{"id": ...}]}
    POST /v1/embeddings   {"model", "input": str | [str]} -> {"data": [{"index", "embedding"}]} (data in
                          reverse order, as an engine may answer: clients must sort by index)
    POST /v1/rerank       Cohere's shape (vLLM, Infinity, Jina): {"model", "query", "documents"}
                          -> {"results": [{"index", "relevance_score"}]}
    POST /tei/rerank      text-embeddings-inference's: {"query", "texts"} -> [{"index", "score"}]
    GET  /stats           requests served, and the most /v1/embeddings requests in flight at once

    python tests/embedding_server.py --port P --embedder NAME=FOLDER --reranker NAME=FOLDER
        [--slow NAME] [--ssl-certfile F --ssl-keyfile F]

With PGML_TEST_SERVER_KEY in its environment it wants "Authorization: Bearer <key>" and answers 401
otherwise, quoting the header it got (as a careless engine might: the client must hide it).
--slow NAME serves the first embedder under NAME too, holding each request HOLD seconds first, so
that requests sent at once are seen in flight together.
"""

from __future__ import annotations

import argparse
import os
import threading
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

MAX_CHARS = 2000  # longer inputs are refused with 400, as engines refuse inputs past their context
HOLD = 1.0        # seconds a request for the --slow model waits before it is served


def build_app(embedders: dict, rerankers: dict, slow: str | None, key: str | None):
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    app = FastAPI()
    stats = {"embeddings": 0, "rerank": 0, "in_flight": 0, "most_in_flight": 0}
    lock = threading.Lock()

    def error(status: int, message: str):
        return JSONResponse({"error": {"message": message, "code": status}}, status_code=status)

    @app.middleware("http")
    async def authenticate(request: Request, call_next):
        got = request.headers.get("authorization")
        if key is not None and request.url.path != "/stats" and got != f"Bearer {key}":
            return error(401, f"invalid API key in {got!r}")
        return await call_next(request)

    @app.get("/v1/models")
    def models():
        names = [*embedders, *rerankers] + ([slow] if slow else [])
        return {"object": "list", "data": [{"id": name, "object": "model"} for name in names]}

    @app.get("/stats")
    def get_stats():
        return stats

    @app.post("/v1/embeddings")
    def embeddings(body: dict):
        held = slow is not None and body.get("model") == slow
        model = next(iter(embedders.values())) if held else embedders.get(body.get("model"))
        if model is None:
            return error(404, f"The model `{body.get('model')}` does not exist.")
        texts = [body["input"]] if isinstance(body.get("input"), str) else body.get("input")
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            return error(400, "input must be a string or a list of strings")
        if any(len(t) > MAX_CHARS for t in texts):
            return error(400, f"an input is longer than this model's context ({MAX_CHARS} characters)")
        with lock:
            stats["embeddings"] += 1
            stats["in_flight"] += 1
            stats["most_in_flight"] = max(stats["most_in_flight"], stats["in_flight"])
        try:
            time.sleep(HOLD if held else 0)
            vectors = model.encode(texts, convert_to_numpy=True, show_progress_bar=False)
        finally:
            with lock:
                stats["in_flight"] -= 1
        data = [{"object": "embedding", "index": i, "embedding": v.tolist()} for i, v in enumerate(vectors)]
        return {"object": "list", "model": body["model"], "data": data[::-1]}

    def scores(model, query: str, documents: list[str]):
        stats["rerank"] += 1
        ranked = model.rank(query, documents, show_progress_bar=False)
        return [(int(r["corpus_id"]), float(r["score"])) for r in ranked]

    @app.post("/v1/rerank")
    def rerank(body: dict):
        model = rerankers.get(body.get("model"))
        if model is None:
            return error(404, f"The model `{body.get('model')}` does not exist.")
        found = scores(model, body["query"], body["documents"])
        return {"results": [{"index": i, "relevance_score": s} for i, s in found]}

    @app.post("/tei/rerank")
    def tei_rerank(body: dict):
        (model,) = rerankers.values()  # text-embeddings-inference serves one model
        return [{"index": i, "score": s} for i, s in scores(model, body["query"], body["texts"])]

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--embedder", action="append", default=[], help="NAME=FOLDER")
    parser.add_argument("--reranker", action="append", default=[], help="NAME=FOLDER")
    parser.add_argument("--slow")
    parser.add_argument("--ssl-certfile")
    parser.add_argument("--ssl-keyfile")
    opts = parser.parse_args()

    import torch
    import uvicorn
    from sentence_transformers import CrossEncoder, SentenceTransformer

    torch.set_num_threads(1)
    embedders = {name: SentenceTransformer(folder, device="cpu")
                 for name, folder in (item.split("=", 1) for item in opts.embedder)}
    rerankers = {name: CrossEncoder(folder, device="cpu")
                 for name, folder in (item.split("=", 1) for item in opts.reranker)}
    app = build_app(embedders, rerankers, opts.slow, os.environ.get("PGML_TEST_SERVER_KEY"))
    uvicorn.run(app, host="127.0.0.1", port=opts.port, log_level="warning", ssl_certfile=opts.ssl_certfile,
                ssl_keyfile=opts.ssl_keyfile)


if __name__ == "__main__":
    main()
