#!/usr/bin/env bash
# Predict through the ingress like a client would: POST a dataframe_split to /model/invocations.
#   SMOKE_URL=http://localhost kind/smoke.sh
set -euo pipefail
source "$(dirname "$0")/lib.sh"
base="${SMOKE_URL:-http://localhost}"
payload='{"dataframe_split": {"columns": ["temp"], "data": [[12.8], [68.0]]}}'
echo "POST $base/model/invocations $payload"
response="$(curl -fsS --max-time 30 -H 'Content-Type: application/json' -d "$payload" "$base/model/invocations")" ||
  die "no prediction from $base/model/invocations: has the pipeline deployed a model yet? (kubectl --context $KUBE_CONTEXT -n mlops get deploy model-server)"
echo "$response"
# Two finite numbers back, one per row: anything else is a failed smoke test.
python3 -c '
import json, math, sys
body = json.loads(sys.argv[1])
preds = body["predictions"] if isinstance(body, dict) else body
values = [p if isinstance(p, (int, float)) else next(iter(p.values())) for p in preds]
assert len(values) == 2 and all(math.isfinite(v) for v in values), body
print(f"ok: dew point {values[0]:.1f} F at 12.8 F, {values[1]:.1f} F at 68.0 F")
' "$response"
