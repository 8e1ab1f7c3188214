"""Run a rendered Argo WorkflowTemplate on this machine, no cluster: each DAG task's container runs
as a subprocess (backend `process`) or a `docker run` (backend `docker`), in dependency order.

What runs locally is the rendered dict Argo would get. It must first keep Argo's own rules (the
offline validator, `workflows/validate_resources.py`, and `workflows/argo_rules.py`); then the
runner supports exactly the subset our templates use and rejects everything else by name
(`LocalRunError`), never skipping it silently:

- `spec.entrypoint` names a `dag` template whose tasks each call a `container` template or a
  nested `dag` template (its tasks see its `{{inputs.parameters.N}}`; nodes `<dag node>.<task>`);
  tasks run one at a time in dependency order (ties keep template order). Argo would run
  independent tasks in parallel; our pipeline is a chain, so the result is the same.
- `withParam`/`withItems`: one node per item, named as Argo names it, in parallel processes, at
  most `spec.parallelism` / the entrypoint DAG's `parallelism` at once; a loop's
  `{{tasks.T.outputs.parameters[.N]}}` is its items' outputs aggregated as Argo does
  (`workflows.argo_rules.aggregate_outputs`). `memoize` with a ConfigMap cache and key-only
  artifacts live in the cache directory (`workflows/local_runner/cache.py`).
- `depends`: task names joined by `&&`, each bare (`a`: Succeeded or Skipped, as in Argo) or with
  `.Succeeded` or `.Skipped`; or the legacy `dependencies` list (same as bare names).
  A task whose dependencies are not met is `Omitted` (Argo's word) and does not run.
- `when`: after substitution, `true`/`false` or one comparison `X op Y` with op in
  `== != < <= > >=` (numbers compare as numbers, otherwise `==`/`!=` compare strings; quotes
  around either side are stripped). A false `when` marks the task `Skipped`.
- Variables: `{{workflow.parameters.N}}`, `{{workflow.name}}`, `{{workflow.uid}}`,
  `{{workflow.namespace}}`, `{{tasks.T.outputs.parameters.N}}` (in DAG tasks),
  `{{inputs.parameters.N}}`, `{{inputs.artifacts.N.path}}`, `{{outputs.parameters.N.path}}` and
  `{{outputs.artifacts.N.path}}` (in containers). The workflow name is `<template name>-<5 chars>`.
- Artifacts: `arguments.artifacts[].from: "{{tasks.T.outputs.artifacts.N}}"` copies the producer's
  file or directory to the consumer's `inputs.artifacts[].path` before it starts. All step paths
  live under `/work` (after resolving `..`), which the runner maps to `<run_dir>/<task>/work`.
- Output parameters are read from `valueFrom.path` (or `valueFrom.default` if the file is missing).
- `retryStrategy.limit` N: up to N+1 attempts on a non-zero exit (`retryPolicy` OnFailure or
  Always); backoff is capped at `MAX_LOCAL_BACKOFF_S` locally so a local run stays short.
  `retryStrategy.expression` is evaluated after each failed attempt as Argo does
  (`workflows/retry_expression.py`: `lastRetry.exitCode`, `.status` is `Failed` here, ...); an
  expression outside the subset read there is refused by name before anything runs.
- Workflow parameters: names and enums as Argo checks them; and each one the stage declarations
  name (steps/stages.py) is checked with the flags of every stage that takes it, as the
  pipeline's first task (`check-parameters`) does, so a bad value fails before anything runs.
- Env: `value` entries are substituted; a `valueFrom` entry takes its value from the caller's
  environment, else (fieldRef only) the template's namespace or the pod name, else (an optional
  secretKeyRef) stays unset as in a pod without that Secret, else is an error.
- Volumes: emptyDir at /work and /tmp (provided by the runner); an optional Secret volume is
  treated as absent, as in a pod when the Secret does not exist.

Backend `process`: `python`/`python3` as command[0] becomes this interpreter; the step's env is the
template's env over `env` over this process's environment less every variable a stage's flag reads
(`backends.STAGE_FLAG_ENV`: as in a pod, only the template and `env` set those; the command lines
pass SERVE_PORT and DEPLOY_STATE_DIR on as `env`); the cwd is the caller's. Backend `docker`:
`docker run --rm --network host --user 10001:10001 --read-only --tmpfs /tmp -v <task work
dir>:/work` with the template's image; only `env` and the template's env are passed in.

A run holds an exclusive lock for its whole duration, one per MLflow tracking server and model
(the `mlflow-tracking-uri` and `model-name` parameters; `runner.release_lock_file`), so two local
runs of one release never promote and deploy interleaved, whatever their DEPLOY_STATE_DIR; a second
run waits up to `lock_timeout` seconds, then refuses with a one-line error. Progress (task start,
end, phase, duration) is printed as it happens; the summary is written to `<run_dir>/run.json`.
See docs/local-runner.md.

Modules, by job: `planning` (Argo's rules through `workflows.argo_rules` and the offline validator,
then the supported subset, then the run order), `preflight` (every value that waits for no task,
checked before the first task runs), `substitution` (values of `{{...}}`, /work paths),
`backends` (process and docker, retries), `run_record` (progress lines and run.json), `cache`
(artifact repository and memoization caches kept between runs), `runner` (the lock and the run).
"""

from workflows.local_runner.backends import BACKENDS, docker_command
from workflows.local_runner.planning import LocalRunError
from workflows.local_runner.run_record import TaskResult
from workflows.local_runner.runner import (
    DEFAULT_CACHE_DIR,
    DEFAULT_LOCK_TIMEOUT_S,
    check_rendered,
    run_rendered,
)

__all__ = [
    "BACKENDS",
    "DEFAULT_CACHE_DIR",
    "DEFAULT_LOCK_TIMEOUT_S",
    "LocalRunError",
    "TaskResult",
    "check_rendered",
    "docker_command",
    "run_rendered",
]
