#!/bin/bash
# Fresh clone -> first job, following docs/quickstart.md, with pip's and npm's caches off (a new machine's downloads).
# Usage: bash scripts/measure_quickstart.sh [WORKDIR]   (port 7071 and Azurite's 10000-10002 must be free)
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=${1:-/tmp/aiaas-quickstart}
T0=$(date +%s.%N)
stamp() { echo "$(python3 -c "print(round($(date +%s.%N) - $T0, 1))") s  $*"; }
rm -rf "$WORK"; mkdir -p "$WORK/npm-cache"
export PIP_NO_CACHE_DIR=1 npm_config_cache=$WORK/npm-cache
git clone -q "$REPO" "$WORK/clone" && stamp "git clone"
cd "$WORK/clone"
make up > "$WORK/up.log" 2>&1 & UP=$!
until curl -sf http://127.0.0.1:7071/api/health/ready > /dev/null 2>&1; do
  sleep 1
  if ! kill -0 $UP 2>/dev/null; then stamp "make up ended: see $WORK/up.log"; exit 1; fi
done
stamp "make up: API ready"
# Steps 2-4: the doc's bash blocks as written, up to and including the one that reads the results.
python3 - > "$WORK/steps.sh" <<'PY'
import re
text = open("docs/quickstart.md").read()
out = ["set -euo pipefail"]
for skip, body in re.findall(r"(<!-- not executed[^>]*-->\n)?```bash\n(.*?)```", text, re.S):
    if not skip:
        out.append(body)
        if "/results" in body:
            break
print("\n".join(out))
PY
bash "$WORK/steps.sh" > "$WORK/steps.log" 2>&1; rc=$?
stamp "steps 2-4 rc=$rc (the first job's results read; output in $WORK/steps.log)"
# make runs aiaas up as its child: TERM stops the stack (a background job ignores SIGINT).
pkill -TERM -P $UP; wait $UP 2>/dev/null
exit $rc
