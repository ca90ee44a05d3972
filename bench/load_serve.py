"""Bounded load test of `kbqa serve`: N concurrent clients on loopback for a fixed time.

Starts its own server in a temporary home (the sample documents in knowledge/ as knowledge base
'bench', one API key) unless --url/--key point at a running one. Each client streams chat
completions back to back; a 503 (queue full) is counted as 'busy' and the client waits the
Retry-After (capped at 1 s). Meanwhile one writer adds a new document (its own name each time,
answering the first question) and removes it again, over and over: through the API
(`--writer api`: upload, wait for the job, DELETE) or as the real CLI in another process
(`--writer cli`: `kbqa ingest`, then `kbqa kb remove`, each its own process, as an operator
would). A second knowledge base, 'other', with its own key, is listed back to back by one more
client, to show what the writes cost another tenant.

Counted besides latency: 5xx answers, and stale answers, i.e. answers that cite a document whose
removal had returned before the question was sent (names are used once, so a cited name says
which write it came from). Afterwards it checks the knowledge base is intact: the same documents
and chunks as before, and the same sources for a fixed question.

    .venv/bin/python bench/load_serve.py --llm ~/.cache/kbqa-tests/models/smollm2-135m-instruct-float32 \\
        --clients 4 --seconds 30 --max-tokens 16 --writer cli
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
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
OTHER = "other"  # another tenant's knowledge base


def temp_text(name: str) -> str:
    """A document the first question cites while it is there, named inside."""
    return (f"# 临时规定 {name}\n\n入职满一年的员工每年享有几天带薪年假，以临时规定 {name} 为准，"
            "负载测试结束前删除。\n")


@dataclass
class Server:
    url: str
    key: str
    other_key: str | None = None
    home: Path | None = None  # set when started here: the CLI writer works on it


def start_server(stack: ExitStack, llm: str, max_tokens: int, queue: int) -> Server:
    """A kbqa serve in a thread over a fresh home: 'bench' (knowledge/) and 'other' (one file)."""
    from kbqa.config import Settings
    from kbqa.server.app import create_app, running
    from kbqa.server.auth import add_key
    from kbqa.service import KbqaService

    home = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="kbqa-load-")))
    settings = Settings(home=home, llm=llm, llm_dtype="float32", max_new_tokens=max_tokens,
                        serve_queue=queue)
    service = KbqaService(settings)
    service.ingest(sorted((ROOT / "knowledge").iterdir()), KB)
    service.ingest([ROOT / "knowledge" / "faq.txt"], OTHER)
    key = add_key(settings.keys_path, "load", [KB])
    other_key = add_key(settings.keys_path, "other", [OTHER])
    url = stack.enter_context(running(create_app(settings, service)))
    return Server(url, key, other_key, home)


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
        cited: list[str] = []
        try:
            with client.stream("POST", "/v1/chat/completions", json=body) as response:
                if response.status_code == 503:
                    results.append({"kind": "busy"})
                    time.sleep(min(1.0, float(response.headers.get("retry-after", 1))))
                    continue
                if response.status_code != 200:
                    response.read()
                    results.append({"kind": "error", "status": response.status_code,
                                    "detail": response.text[:200]})
                    continue
                for line in response.iter_lines():
                    if line.startswith("data: {") and '"sources"' in line and not cited:
                        cited = [s["document"] for s in json.loads(line[6:])["sources"]]
                    if line.startswith("data: {") and first is None and '"content": "' in line \
                            and '"content": ""' not in line:
                        first = time.monotonic() - start
                    if '"error"' in line:
                        raise RuntimeError(line)
            results.append({"kind": "ok", "latency": time.monotonic() - start, "ttft": first,
                            "sent": start, "cited": cited})
        except (httpx.HTTPError, RuntimeError) as exc:
            results.append({"kind": "error", "detail": repr(exc)[:200]})


def other_tenant(url: str, key: str, stop_at: float, results: list[dict]) -> None:
    """Another key lists its own knowledge base back to back: what the writes cost it."""
    with httpx.Client(base_url=url, timeout=300,
                      headers={"Authorization": f"Bearer {key}"}) as client:
        while time.monotonic() < stop_at:
            start = time.monotonic()
            response = client.get(f"/v1/kbs/{OTHER}/documents")
            results.append({"kind": "other", "status": response.status_code,
                            "latency": time.monotonic() - start})
            time.sleep(0.2)


def api_writer(client: httpx.Client, stop_at: float, results: list[dict],
               removed: dict[str, float]) -> None:
    """Upload a new document, wait for its job, remove it; repeat (about every 5 s)."""
    n = 0
    while time.monotonic() < stop_at - 5:
        name = f"load-{n}.md"
        n += 1
        response = client.post(f"/v1/kbs/{KB}/documents", files={
            "files": (name, temp_text(name).encode(), "text/markdown")})
        job = response.json()
        while job.get("status") in ("queued", "running"):
            time.sleep(0.2)
            job = client.get(f"/v1/kbs/{KB}/jobs/{job['id']}").json()
        deleted = client.delete(f"/v1/kbs/{KB}/documents/{name}")
        while deleted.status_code == 409:  # busy: try again
            time.sleep(0.2)
            deleted = client.delete(f"/v1/kbs/{KB}/documents/{name}")
        if deleted.status_code == 200:
            removed[name] = time.monotonic()
        ok = job.get("status") == "done" and deleted.status_code == 200
        results.append({"kind": "write-ok" if ok else "write-error", "detail": job})
        time.sleep(5.0)


def cli_writer(home: Path, stop_at: float, results: list[dict],
               removed: dict[str, float]) -> None:
    """The same writes as `kbqa ingest` and `kbqa kb remove`, each command its own process."""
    env = {**os.environ, "KBQA_HOME": str(home), "PYTHONPATH": str(ROOT)}
    folder = home / "cli-docs"
    folder.mkdir(exist_ok=True)
    n = 0
    while time.monotonic() < stop_at - 5:
        name = f"cli-{n}.md"
        n += 1
        path = folder / name
        path.write_text(temp_text(name), encoding="utf-8")
        codes = []
        for command in (["ingest", str(path)], ["kb", "remove", str(path.resolve()), "--yes"]):
            for _ in range(20):  # exit 1: the server is writing the same base; try again
                done = subprocess.run([sys.executable, "-m", "kbqa.cli", *command, "--kb", KB],
                                      env=env, capture_output=True, text=True, check=False)
                if done.returncode == 0:
                    break
                time.sleep(0.5)
            codes.append(done.returncode)
        if codes[-1] == 0:
            removed[name] = time.monotonic()
        results.append({"kind": "write-ok" if codes == [0, 0] else "write-error",
                        "detail": done.stderr[-300:]})


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
    parser.add_argument("--writer", choices=("api", "cli"), default="api",
                        help="write through the API, or as the CLI in other processes (needs "
                             "the server started here)")
    args = parser.parse_args()
    if args.writer == "cli" and args.url:
        parser.error("--writer cli works on the server this script starts (no --url)")

    with ExitStack() as stack:
        server = (Server(args.url, args.key) if args.url else
                  start_server(stack, args.llm, args.max_tokens, args.queue))
        url = server.url
        client = stack.enter_context(httpx.Client(
            base_url=url, timeout=300, headers={"Authorization": f"Bearer {server.key}"}))
        before = snapshot(client)
        results: list[dict] = []
        removed: dict[str, float] = {}
        stop_at = time.monotonic() + args.seconds
        threads = [threading.Thread(target=chat_client, args=(client, i, stop_at, results))
                   for i in range(args.clients)]
        threads.append(threading.Thread(target=api_writer, args=(client, stop_at, results, removed))
                       if args.writer == "api" else
                       threading.Thread(target=cli_writer,
                                        args=(server.home, stop_at, results, removed)))
        if server.other_key:
            threads.append(threading.Thread(target=other_tenant,
                                            args=(url, server.other_key, stop_at, results)))
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
    stale = [(r["sent"], name) for r in ok for name in r["cited"]
             if name in removed and removed[name] < r["sent"]]
    other = [r["latency"] for r in results if r["kind"] == "other"]
    summary = {
        "clients": args.clients, "writer": args.writer, "seconds": round(elapsed, 1),
        "max_tokens": args.max_tokens,
        "completed": len(ok), "throughput_rps": round(len(ok) / elapsed, 2),
        "latency_p50_s": round(percentile(latencies, 50), 2),
        "latency_p95_s": round(percentile(latencies, 95), 2),
        "ttft_p50_s": round(percentile(ttfts, 50), 2) if ttfts else None,
        "busy_503": sum(r["kind"] == "busy" for r in results),
        "errors": len(errors),
        "server_errors_5xx": sum(r.get("status", 0) >= 500 for r in results),
        "writes_ok": sum(r["kind"] == "write-ok" for r in results),
        "stale_answers": len(stale),
        "other_tenant_list_p50_s": round(percentile(other, 50), 3) if other else None,
        "other_tenant_list_p95_s": round(percentile(other, 95), 3) if other else None,
        "other_tenant_errors": sum(r.get("status") != 200 for r in results if r["kind"] == "other"),
        "kb_intact": before == after,
        "mean_generation_s": health["queue"]["mean_generation_s"],
    }
    print(json.dumps(with_machine(summary), ensure_ascii=False, indent=1))
    for error in errors[:5]:
        print("error:", error, file=sys.stderr)
    return 0 if not errors and not stale and before == after else 1


if __name__ == "__main__":
    sys.exit(main())
