#!/usr/bin/env bash
# Predict through the ingress like a client would: POST a dataframe_split to /model/invocations.
#   SMOKE_URL=http://localhost kind/smoke.sh
set -euo pipefail
source "$(dirname "$0")/lib.sh"
base="${SMOKE_URL:-http://localhost}"
payload='{"dataframe_split": {"columns": ["temp"], "data": [[12.8], [68.0]]}}'
echo "POST $base/model/invocations $payload"
need curl python3
url="$base/model/invocations"
body="$(mktemp)"
errors="$(mktemp)"
trap 'rm -f "$body" "$errors"' EXIT
# curl's own messages and the HTTP status are captured and reported in the one error line.
if ! status="$(curl -sS --max-time 30 -o "$body" -w '%{http_code}' -H 'Content-Type: application/json' \
  -d "$payload" "$url" 2>"$errors")"; then
  die "cannot reach $url ($(tr '\n' ' ' <"$errors")): is the cluster up (make kind-up) and nothing else on port 80?"
fi
if [[ "$status" != 200 ]]; then
  die "$url answered HTTP $status ($(head -c 200 "$body" | tr '\n' ' ')): has the pipeline deployed a model yet? (kubectl --context $KUBE_CONTEXT -n mlops get deploy model-server)"
fi
cat "$body"
echo
# Two finite numbers back, one per row: anything else is a failed smoke test, said in one line.
python3 - "$body" <<'PY' || exit 1
import json, math, sys
text = open(sys.argv[1], encoding="utf-8", errors="replace").read()
try:
    body = json.loads(text)
except ValueError:
    sys.exit(f"error: not the model server's answer (not JSON): {text[:200]!r}")
preds = body.get("predictions") if isinstance(body, dict) else body
try:
    values = [p if isinstance(p, (int, float)) else next(iter(p.values())) for p in preds]
    ok = len(values) == 2 and all(math.isfinite(v) for v in values)
except (TypeError, AttributeError, StopIteration):
    ok = False
if not ok:
    sys.exit(f"error: the answer holds not two dew points (one per row): {text[:200]!r}")
print(f"ok: dew point {values[0]:.1f} F at 12.8 F, {values[1]:.1f} F at 68.0 F")
PY
