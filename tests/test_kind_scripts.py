"""kind/*.sh against fakes (tests/kind_sandbox.py): what they run, in which order, and that a
missing tool, a dead network or a missing cluster ends them at once with one `error:` line."""

from __future__ import annotations

import hashlib
import http.server
import json
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.kind_sandbox import EXTERNAL, REPO, Sandbox
from tests.upstream import argo_install_path, pinned_versions

CURL_OFFLINE = 'echo "curl: (6) Could not resolve host: github.com" >&2; exit 6'


@pytest.fixture
def sandbox(tmp_path: Path) -> Sandbox:
    return Sandbox(tmp_path)


def one_error_line(proc) -> str:
    """The single `error: ...` line a failed script printed on stderr."""
    assert proc.returncode != 0, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


# ---- make argo-manifest --------------------------------------------------------------------------


def test_argo_manifest_refuses_a_file_that_is_not_the_pinned_release(sandbox, tmp_path):
    forged = tmp_path / "install.yaml"
    forged.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: not-argo}\n")
    proc = sandbox.run("argo-manifest.sh", env={"ARGO_INSTALL_YAML": str(forged)})
    line = one_error_line(proc)
    assert hashlib.sha256(forged.read_bytes()).hexdigest() in line
    assert pinned_versions()["ARGO_WORKFLOWS_INSTALL_SHA256"] in line
    assert not (sandbox.repo / "kind" / "argo" / "upstream" / "install.yaml").exists()


def test_argo_manifest_without_network_says_so_in_one_line(sandbox):
    sandbox.fake("curl", CURL_OFFLINE)
    line = one_error_line(sandbox.run("argo-manifest.sh"))
    version = pinned_versions()["ARGO_WORKFLOWS_VERSION"]
    assert f"cannot download Argo Workflows {version} install.yaml" in line
    assert f"releases/download/{version}/install.yaml" in line
    assert "Could not resolve host" in line
    # What to do instead, with a file fetched elsewhere (not "install it yourself": where to?).
    assert "ARGO_INSTALL_YAML=/path/to/install.yaml make argo-manifest" in line
    assert not list((sandbox.repo / "kind" / "argo" / "upstream").glob("*"))


def test_argo_manifest_installs_the_pinned_release_once(sandbox):
    manifest = argo_install_path()
    dest = sandbox.repo / "kind" / "argo" / "upstream" / "install.yaml"
    proc = sandbox.run("argo-manifest.sh", env={"ARGO_INSTALL_YAML": str(manifest)})
    assert proc.returncode == 0, proc.stderr
    assert dest.read_bytes() == manifest.read_bytes()
    sandbox.fake("curl", "exit 99")  # a second run downloads nothing
    again = sandbox.run("argo-manifest.sh")
    assert again.returncode == 0 and "already" in again.stdout
    assert sandbox.calls("curl") == []


# ---- make tools, make argo-token, make kind-up: prerequisites ----------------------------------

KUBECTL_PINNED = pinned_versions()["KUBECTL_VERSION"]


def kubectl_version_fake(version: str) -> str:
    """A fake kubectl body answering `kubectl version --client -o json` with `version`."""
    answer = '{"clientVersion": {"gitVersion": "' + version + '"}}'
    return f"if [ \"$1\" = version ]; then echo '{answer}'; fi"


def test_tools_without_network_is_one_line_naming_the_tool(sandbox):
    sandbox.fake("curl", CURL_OFFLINE)
    proc = sandbox.run("tools.sh")
    line = one_error_line(proc)
    assert f"cannot download kind {pinned_versions()['KIND_VERSION']}" in line
    assert "Could not resolve host" in line and "install kind" in line
    assert len(sandbox.calls("curl")) == 1  # stops at the first failure


def test_tools_warns_when_kubectl_on_path_is_older_than_pinned(sandbox):
    for tool in ("kind", "helm"):
        sandbox.fake(tool)
    sandbox.fake("kubectl", kubectl_version_fake("v1.32.4-dispatcher"))
    proc = sandbox.run("tools.sh")
    assert proc.returncode == 0, proc.stderr
    (warning,) = [line for line in proc.stderr.splitlines() if line.startswith("warning: ")]
    assert "v1.32.4-dispatcher" in warning and f"older than the pinned {KUBECTL_PINNED}" in warning
    sandbox.fake("kubectl", kubectl_version_fake(KUBECTL_PINNED))
    assert "warning" not in sandbox.run("tools.sh").stderr


def test_argo_token_without_a_cluster_fails_at_once(sandbox):
    sandbox.fake("kubectl", 'echo "error: no context exists with the name" >&2; exit 1')
    sandbox.fake("sleep")
    line = one_error_line(sandbox.run("argo-token.sh"))
    assert "no kubectl context kind-dewpoint" in line and "make kind-up" in line
    assert sandbox.calls("sleep") == [] and len(sandbox.calls("kubectl")) == 1


def test_argo_token_with_an_unreachable_cluster_fails_at_once(sandbox):
    sandbox.fake(
        "kubectl",
        'if [ "$1" = config ]; then exit 0; fi\n'
        'echo "The connection to the server 127.0.0.1:6443 was refused" >&2; exit 1',
    )
    sandbox.fake("sleep")
    line = one_error_line(sandbox.run("argo-token.sh"))
    assert "cannot read Secret mlops/pipeline-operator-token" in line
    assert "connection to the server 127.0.0.1:6443 was refused" in line
    assert sandbox.calls("sleep") == []


def test_readme_token_line_stops_when_there_is_no_token() -> None:
    """`export X="$(cmd)"` exports an empty X when cmd fails; the documented line must not."""
    for path in ("README.md", "docs/cluster.md", "kind/up.sh"):
        text = (REPO / path).read_text()
        assert 'ARGO_TOKEN="$(make -s argo-token)" && export ARGO_TOKEN' in text.replace(
            "\\$", "$"
        ), path
        assert 'export ARGO_TOKEN="$(make' not in text, path


# kubectl of a kind cluster: the API's Service address and its endpoints (two, as with HA).
KUBECTL_CLUSTER = """{version}
case "$*" in
  *"get service kubernetes"*) printf 10.96.0.1 ;;
  *"get endpointslices"*"ports[0].port"*) printf 6443 ;;
  *"get endpointslices"*) printf '172.18.0.2 172.18.0.3 ' ;;
esac
"""


def fake_cluster(sandbox: Sandbox) -> None:
    """Fakes for a reachable kind cluster where everything exists and every command succeeds."""
    sandbox.fake("docker")
    sandbox.fake("kind", 'if [ "$1 $2" = "get clusters" ]; then echo dewpoint; fi')
    sandbox.fake("helm")
    sandbox.fake("make")
    sandbox.fake("kubectl", KUBECTL_CLUSTER.format(version=kubectl_version_fake(KUBECTL_PINNED)))
    upstream = sandbox.repo / "kind" / "argo" / "upstream"
    upstream.mkdir(parents=True, exist_ok=True)
    (upstream / "install.yaml").write_text("# stand-in: kubectl is a fake here\n")


def test_kind_up_without_docker_running_is_one_line(sandbox):
    fake_cluster(sandbox)
    sandbox.fake("docker", 'echo "Cannot connect to the Docker daemon" >&2; exit 1')
    line = one_error_line(sandbox.run("up.sh"))
    assert "Docker is not running" in line
    assert sandbox.calls("kind") == [] and sandbox.calls("kubectl") == []


def test_kind_up_without_a_tool_names_it(sandbox):
    fake_cluster(sandbox)
    (sandbox.fakes / "helm").unlink()
    line = one_error_line(sandbox.run("up.sh"))
    assert line == "error: helm not found: run 'make tools' (or install it yourself)"


def test_kind_up_without_docker_says_to_install_it_not_make_tools(sandbox):
    """`make tools` installs kind, kubectl and helm only: it cannot be the answer for Docker."""
    fake_cluster(sandbox)
    (sandbox.fakes / "docker").unlink()
    line = one_error_line(sandbox.run("up.sh"))
    assert line.startswith("error: docker not found: install Docker"), line
    assert "make tools" not in line


def test_kind_up_without_the_argo_manifest_says_how_to_get_it(sandbox):
    fake_cluster(sandbox)
    (sandbox.repo / "kind" / "argo" / "upstream" / "install.yaml").unlink()
    assert "make argo-manifest" in one_error_line(sandbox.run("up.sh"))


# ---- make kind-up: the bucket Job --------------------------------------------------------------


def test_kind_up_starts_the_bucket_job_afresh_before_applying_it(sandbox):
    """A Job that failed once is never re-run and blocks `wait --for=condition=complete`: every
    kind-up deletes it before the apply that re-creates it."""
    fake_cluster(sandbox)
    proc = sandbox.run("up.sh", env={"SKIP_IMAGES": "1", "PYTHON": "/bin/true"})
    assert proc.returncode == 0, proc.stderr
    calls = [" ".join(c) for c in sandbox.calls("kubectl")]
    delete = next(i for i, c in enumerate(calls) if "delete job seaweedfs-create-bucket" in c)
    apply = next(i for i, c in enumerate(calls) if "apply" in c and "-k kind/overlays/kind" in c)
    wait = next(i for i, c in enumerate(calls) if "job/seaweedfs-create-bucket" in c)
    assert delete < apply < wait
    assert "--ignore-not-found" in calls[delete]


# ---- make kind-load ----------------------------------------------------------------------------


DOCKER_FAKE = """
case "$1 $2 $3" in
  "image save --help") {help} ;;
  "version --format "*) echo linux/amd64 ;;
esac
if [ "$1 $2" = "image save" ]; then
  while [ $# -gt 0 ]; do [ "$1" = -o ] && echo archive > "$2"; shift; done
fi
"""


@pytest.mark.parametrize(
    ("help_text", "platform"),
    [
        ('echo "      --platform string   Save only the given platform variant"', True),
        ("echo '  -o, --output string   Write to a file'", False),  # Docker < 28
    ],
)
def test_kind_load_saves_one_platform_then_loads_the_archive(sandbox, help_text, platform):
    """Works with Docker's containerd image store (kubernetes-sigs/kind#3795): one platform
    saved where `docker save` can choose, then `kind load image-archive`, never `docker-image`."""
    fake_cluster(sandbox)
    sandbox.fake("docker", DOCKER_FAKE.format(help=help_text))
    proc = sandbox.run(
        "load-images.sh", "dewpoint-pipeline/step:0.1.0", "dewpoint-pipeline/serve:0.1.0"
    )
    assert proc.returncode == 0, proc.stderr
    saves = [
        c for c in sandbox.calls("docker") if c[1:3] == ["image", "save"] and "--help" not in c
    ]
    assert [c[-1] for c in saves] == [
        "dewpoint-pipeline/step:0.1.0",
        "dewpoint-pipeline/serve:0.1.0",
    ]
    for call in saves:
        assert ("--platform" in call) is platform
        if platform:
            assert call[call.index("--platform") + 1] == "linux/amd64"
    loads = [c for c in sandbox.calls("kind") if c[1] == "load"]
    assert [c[1:3] for c in loads] == [["load", "image-archive"]] * 2
    assert all(c[c.index("--name") + 1] == "dewpoint" for c in loads)


# ---- make publish ------------------------------------------------------------------------------


def test_publish_installs_with_a_short_lived_publisher_token(sandbox, tmp_path):
    python = tmp_path / "python"
    python.write_text(
        '#!/usr/bin/env bash\necho "$ARGO_TOKEN $ARGO_SERVER_URL $*" > '
        + str(tmp_path / "ran")
        + "\n"
    )
    python.chmod(0o755)
    sandbox.fake("kubectl", 'case "$*" in *"create token"*) echo tok3n ;; esac')
    proc = sandbox.run("publish.sh", env={"PYTHON": str(python)})
    assert proc.returncode == 0, proc.stderr
    (create,) = [c for c in sandbox.calls("kubectl") if "create" in c]
    assert create[-4:] == ["create", "token", "pipeline-publisher", "--duration=10m"]
    token, url, script = (tmp_path / "ran").read_text().split()
    assert (token, url) == ("tok3n", "http://localhost/argo/")
    assert script.endswith("workflows/submit.py")


def test_publish_without_a_cluster_fails_at_once(sandbox, tmp_path):
    sandbox.fake("kubectl", "exit 1")
    line = one_error_line(sandbox.run("publish.sh", env={"PYTHON": "/bin/true"}))
    assert "no kubectl context kind-dewpoint" in line


def test_kind_up_limits_workflow_pods_to_this_clusters_kubernetes_api(sandbox):
    """The overlay's placeholder matches nothing; kind-up puts in the `kubernetes` Service's
    ClusterIP (443, before DNAT) and the API server's endpoints (6443, after DNAT), nothing else."""
    fake_cluster(sandbox)
    proc = sandbox.run("up.sh", env={"SKIP_IMAGES": "1", "PYTHON": "/bin/true"})
    assert proc.returncode == 0, proc.stderr
    (patch,) = [c for c in sandbox.calls("kubectl") if "patch" in c]
    assert "networkpolicy" in patch and "workflow-pods-kubernetes-api" in patch
    ops = json.loads(patch[patch.index("-p") + 1])
    assert ops == [
        {
            "op": "replace",
            "path": "/spec/egress",
            "value": [
                {
                    "to": [{"ipBlock": {"cidr": "10.96.0.1/32"}}],
                    "ports": [{"protocol": "TCP", "port": 443}],
                },
                {
                    "to": [
                        {"ipBlock": {"cidr": "172.18.0.2/32"}},
                        {"ipBlock": {"cidr": "172.18.0.3/32"}},
                    ],
                    "ports": [{"protocol": "TCP", "port": 6443}],
                },
            ],
        }
    ]
    apply = next(i for i, c in enumerate(sandbox.calls("kubectl")) if "-k" in c and "apply" in c)
    assert sandbox.calls("kubectl").index(patch) > apply


# ---- make smoke ----------------------------------------------------------------------------------


class _Answer(http.server.BaseHTTPRequestHandler):
    """Answers every POST with the status and body of the server it belongs to."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        status, body = self.server.answer  # type: ignore[attr-defined]
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def model_url() -> Iterator[Callable[[int, bytes], str]]:
    """Start a plain HTTP server on 127.0.0.1 answering (status, body); yields its base URL."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(status: int, body: bytes) -> str:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
        server.answer = (status, body)  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def curl_sandbox(tmp_path: Path) -> Sandbox:
    """A sandbox with the machine's real curl: smoke.sh talks to real HTTP servers here."""
    return Sandbox(tmp_path, hidden=EXTERNAL - {"curl"})


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (503, b'{"error_code": "UNAVAILABLE"}', "503"),
        (200, b"<html>not the model</html>", "not the model server's answer"),
        (200, b'{"predictions": ["a", "b"]}', "not two dew points"),
        (200, b'{"predictions": [1.0]}', "not two dew points"),
        (200, b"[]", "not two dew points"),
    ],
)
def test_smoke_refuses_a_wrong_answer_in_one_line(curl_sandbox, model_url, status, body, message):
    line = one_error_line(curl_sandbox.run("smoke.sh", env={"SMOKE_URL": model_url(status, body)}))
    assert message in line, line


def test_smoke_with_nothing_listening_names_the_url_and_curls_reason_in_one_line(curl_sandbox):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    line = one_error_line(curl_sandbox.run("smoke.sh", env={"SMOKE_URL": url}))
    assert f"{url}/model/invocations" in line and "make kind-up" in line, line
    assert "Failed to connect" in line or "Connection refused" in line, line


# ---- through make ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "env", "message"),
    [
        ("argo-manifest", {"ARGO_INSTALL_YAML": "/nonexistent/install.yaml"}, "is not a file"),
        ("tools", {}, "cannot download kind"),
        ("kind-down", {}, "kind not found"),
        ("smoke", {"SMOKE_URL": "http://127.0.0.1:9"}, "cannot reach"),
    ],
)
def test_make_targets_fail_with_the_scripts_one_line_and_makes_own(sandbox, target, env, message):
    """`make <target>` as a user runs it: nothing but the script's `error:` line and make's own
    `make: *** ... Error 1`, which make prints for any failed recipe (no echoed recipe lines)."""
    import shutil
    import subprocess

    shutil.copy(REPO / "pyproject.toml", sandbox.repo / "pyproject.toml")
    sandbox.fake("curl", CURL_OFFLINE)
    make = shutil.which("make")
    assert make, "GNU make is needed to run the Makefile"
    proc = subprocess.run(
        [make, "--no-print-directory", target],
        cwd=sandbox.repo,
        env={"PATH": f"{sandbox.fakes}:{sandbox.system}", "HOME": str(sandbox.root), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert proc.stdout.strip() == "" or target == "smoke", proc.stdout  # smoke says what it POSTs
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 2, proc.stderr
    assert lines[0].startswith("error: ") and message in lines[0], proc.stderr
    assert lines[1].startswith("make: *** ") and lines[1].endswith("Error 1"), proc.stderr
