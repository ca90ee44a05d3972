#!/usr/bin/env bash
# The README's "Run it" command, copied from README.md at run time, as a new user runs it: a copy
# of the tracked files, a fresh HOME (no model cache, no pip cache, no config), a venv made by
# that command itself without extras, no KBQA_* or HF_* variables. Then `kbqa serve` from the same
# venv answers the same question over the OpenAI-compatible API. Fails if either does not hold
# the fact and its source.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d /tmp/fresh-machine.XXXXXX)"
trap 'kill "${server_pid:-}" 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$work/repo" "$work/home"
(cd "$repo" && git ls-files -z | tar --null -T - -cf -) | tar -xf - -C "$work/repo"

run_command="$(python3 "$repo/.ci/readme_command.py" "Run it" "$repo/README.md")"
echo "== README 'Run it' command (fresh HOME $work/home):"
echo "$run_command"
# The machine's pip configuration stays (where its wheels lie: torch==2.13.0's CPU build is a local
# file here; PyPI's is the CUDA build); nothing else of HOME or the environment does.
pip_env=()
for name in $(compgen -e | grep '^PIP_' || true); do pip_env+=("$name=${!name}"); done
if [ -d "$HOME/.config/pip" ]; then mkdir -p "$work/home/.config" && cp -r "$HOME/.config/pip" "$work/home/.config/"; fi
clean_env=(env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
           HOME="$work/home" LANG=C.UTF-8 TERM=dumb "${pip_env[@]}")
start=$(date +%s)
(cd "$work/repo" && "${clean_env[@]}" bash -c "$run_command") 2>&1 | tee "$work/run.log"
echo "== 'Run it' took $(( $(date +%s) - start )) s"
grep -q "10天" "$work/run.log" || { echo "FAIL: the answer does not hold the fact '10天'" >&2; exit 1; }
grep -Eq '^\s*\[1\] employee_handbook\.md' "$work/run.log" \
  || { echo "FAIL: no source line '[1] employee_handbook.md …'" >&2; exit 1; }
if "$work/repo/.venv/bin/python" -c "import pytest" 2>/dev/null; then
  echo "FAIL: the 'Run it' venv has test extras (pytest): it would not show a missing dependency" >&2
  exit 1
fi
if "$work/repo/.venv/bin/python" -c "import pymupdf" 2>/dev/null; then
  echo "FAIL: the base install pulled PyMuPDF (AGPL-3.0): it belongs in the pdf extra only" >&2
  exit 1
fi
grep -Eq 'added +\S*price_and_service\.pdf' "$work/run.log" \
  || { echo "FAIL: the base install did not ingest knowledge/price_and_service.pdf" >&2; exit 1; }
grep -Fq "pip install 'kbqa[pdf]'" "$work/run.log" \
  || { echo "FAIL: 'kbqa ingest' did not say what the pdf extra adds" >&2; exit 1; }

echo "== kbqa serve from the same venv"
kbqa=("${clean_env[@]}" "$work/repo/.venv/bin/kbqa")
key="$("${kbqa[@]}" keys add ci --allow '*' | tail -n 1)"  # the key is printed alone on the last line
[[ "$key" == kbqa-* ]] || { echo "FAIL: 'kbqa keys add' printed no key on its last line" >&2; exit 1; }
port="$("$work/repo/.venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
"${kbqa[@]}" serve --port "$port" > "$work/serve.log" 2>&1 &
server_pid=$!
"$work/repo/.venv/bin/python" - "$port" "$key" <<'PY' || { cat "$work/serve.log" >&2; exit 1; }
import sys, time, httpx
base, key = f"http://127.0.0.1:{sys.argv[1]}", sys.argv[2]
for _ in range(240):
    try:
        if httpx.get(base + "/health", timeout=2).status_code == 200:
            break
    except httpx.HTTPError:
        time.sleep(0.5)
else:
    sys.exit("FAIL: kbqa serve did not answer /health within 120 s")
reply = httpx.post(base + "/v1/chat/completions", timeout=600,
                   headers={"Authorization": f"Bearer {key}"},
                   json={"model": "plain", "kb": "default", "messages": [
                       {"role": "user", "content": "入职满一年的员工每年享有几天带薪年假？"}]})
reply.raise_for_status()
body = reply.json()
answer, sources = body["choices"][0]["message"]["content"], body.get("sources", [])
print("serve answered:", answer, "| sources:", [s.get("source") or s for s in sources][:3])
assert "10天" in answer, f"FAIL: served answer lacks '10天': {answer!r}"
assert any("employee_handbook.md" in str(s) for s in sources), f"FAIL: no source: {sources!r}"
PY
echo "== fresh machine: OK"
