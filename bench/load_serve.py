"""Bounded load test of `kbqa serve`: N concurrent clients on loopback for a fixed time.

Starts its own server in a temporary home (the sample documents in knowledge/ as knowledge base
'bench', one API key) unless --url/--key point at a running one. Each client streams chat
completions back to back; a 503 (queue full) is counted as 'busy' and the client waits the
Retry-After (capped at 1 s). Meanwhile one client uploads and removes a document every ~5 s.
Afterwards it checks the knowledge base is intact: the same documents and chunks as before, and
the same sources for a fixed question.

    .venv/bin/python bench/load_serve.py --llm ~/.cache/kbqa-tests/models/smollm2-135m-instruct-float32 \\
        --clients 4 --seconds 30 --max-tokens 16
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
from machine_facts import with_machine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

QUESTIONS = ["入职满一年的员工每年享有几天带薪年假？", "IT服务台的分机号是多少？",
             "差旅费用多久内报销？", "产品的保修期是多久？", "火星的卫星叫什么名字？"]
CHECK_QUESTION = QUESTIONS[0]
KB = "bench"


def start_server(stack: ExitStack, llm: str, max_tokens: int, queue: int) -> tuple[str, str]:
    """A kbqa serve in a thread over a fresh home; returns (base URL, API key)."""
    from kbqa.config import Settings
    from kbqa.server.app import create_app, running
    from kbqa.server.auth import add_key
    from kbqa.service import KbqaService

    home = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="kbqa-load-")))
    settings = Settings(home=home, llm=llm, llm_dtype="float32", max_new_tokens=max_tokens,
                        serve_queue=queue)
    service = KbqaService(settings)
    service.ingest(sorted((ROOT / "knowledge").iterdir()), KB)
    key = add_key(settings.keys_path, "load", [KB])
    url = stack.enter_context(running(create_app(settings, service)))
    return url, key


def snapshot(client: httpx.Client) -> dict:
    docs = client.get(f"/v1/kbs/{KB}/documents").json()["data"]
    answer = client.post("/v1/chat/completions", json={
        "model": "plain", "kb": KB, "max_tokens": 1,
        "messages": [{"role": "user", "content": CHECK_QUESTION}]}).json()
    return {"documents": sorted((d["name"], d["chunks"]) for d in docs),
            "sources": [(s["document"], s["snippet"]) for s in answer["sources"]]}


def chat_client(client: httpx.Client, index: int, stop_at: float, results: list[dict]) -> None:
    n = index
    while time.monotonic() < stop_at:
        body = {"model": "plain", "kb": KB, "stream": True,
                "messages": [{"role": "user", "content": QUESTIONS[n % len(QUESTIONS)]}]}
        n += 1
        start = time.monotonic()
        first = None
        try:
            with client.stream("POST", "/v1/chat/completions", json=body) as response:
                if response.status_code == 503:
                    results.append({"kind": "busy"})
                    time.sleep(min(1.0, float(response.headers.get("retry-after", 1))))
                    continue
                if response.status_code != 200:
                    results.append({"kind": "error", "detail": response.status_code})
                    continue
                for line in response.iter_lines():
                    if line.startswith("data: {") and first is None and '"content": "' in line \
                            and '"content": ""' not in line:
                        first = time.monotonic() - start
                    if '"error"' in line:
                        raise RuntimeError(line)
            results.append({"kind": "ok", "latency": time.monotonic() - start, "ttft": first})
        except (httpx.HTTPError, RuntimeError) as exc:
            results.append({"kind": "error", "detail": repr(exc)[:200]})


def upload_client(client: httpx.Client, stop_at: float, results: list[dict]) -> None:
    """Writes during the reads: upload a document, wait for its job, remove it; repeat."""
    text = "# 临时\n\n负载测试期间临时上传的文档，测试结束前会被删除。\n".encode()
    while time.monotonic() < stop_at - 5:
        response = client.post(f"/v1/kbs/{KB}/documents",
                               files={"files": ("load-temp.md", text, "text/markdown")})
        job = response.json()
        while job.get("status") in ("queued", "running"):
            time.sleep(0.2)
            job = client.get(f"/v1/kbs/{KB}/jobs/{job['id']}").json()
        removed = client.delete(f"/v1/kbs/{KB}/documents/load-temp.md")
        ok = job.get("status") == "done" and removed.status_code == 200
        results.append({"kind": "write-ok" if ok else "write-error", "detail": job})
        time.sleep(5.0)


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 \
        else (values[0] if values else float("nan"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running kbqa serve (default: start one)")
    parser.add_argument("--key", help="API key for --url, allowed knowledge base 'bench'")
    parser.add_argument("--llm", default="embedded", help="model for the server started here")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--queue", type=int, default=8, help="serve_queue of the server started here")
    args = parser.parse_args()

    with ExitStack() as stack:
        url, key = (args.url, args.key) if args.url else start_server(
            stack, args.llm, args.max_tokens, args.queue)
        client = stack.enter_context(httpx.Client(base_url=url, timeout=300,
                                                  headers={"Authorization": f"Bearer {key}"}))
        before = snapshot(client)
        results: list[dict] = []
        stop_at = time.monotonic() + args.seconds
        threads = [threading.Thread(target=chat_client, args=(client, i, stop_at, results))
                   for i in range(args.clients)]
        threads.append(threading.Thread(target=upload_client, args=(client, stop_at, results)))
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        after = snapshot(client)
        health = httpx.get(url + "/health").json()

    ok = [r for r in results if r["kind"] == "ok"]
    latencies = [r["latency"] for r in ok]
    ttfts = [r["ttft"] for r in ok if r["ttft"] is not None]
    errors = [r for r in results if r["kind"] in ("error", "write-error")]
    summary = {
        "clients": args.clients, "seconds": round(elapsed, 1), "max_tokens": args.max_tokens,
        "completed": len(ok), "throughput_rps": round(len(ok) / elapsed, 2),
        "latency_p50_s": round(percentile(latencies, 50), 2),
        "latency_p95_s": round(percentile(latencies, 95), 2),
        "ttft_p50_s": round(percentile(ttfts, 50), 2) if ttfts else None,
        "busy_503": sum(r["kind"] == "busy" for r in results),
        "errors": len(errors),
        "writes_ok": sum(r["kind"] == "write-ok" for r in results),
        "kb_intact": before == after,
        "mean_generation_s": health["queue"]["mean_generation_s"],
    }
    print(json.dumps(with_machine(summary), ensure_ascii=False, indent=1))
    for error in errors[:5]:
        print("error:", error, file=sys.stderr)
    return 0 if not errors and before == after else 1


if __name__ == "__main__":
    sys.exit(main())
