#!/usr/bin/env bash
# CI container stage (`make test-containers`): Docker engine, base image, the three images, then the
# docker-marked tests. Fails when Docker cannot start: a skipped container test is not a passed one.
set -euo pipefail
cd "$(dirname "$0")/.."

stage_start=$SECONDS
phase_name=""
phase_start=$SECONDS
timings=""
# Start phase $1; the previous phase's duration goes into the summary printed at the end.
phase() {
    [ -z "$phase_name" ] || timings+="$phase_name $((SECONDS - phase_start))s, "
    phase_name="$1"
    phase_start=$SECONDS
    echo "== container stage: $1"
}
as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

DOCKER="${DOCKER:-docker}"

phase "host packages"
missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v debootstrap >/dev/null || missing+=(debootstrap)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
if ((${#missing[@]})); then
    # The tests start their own PostgreSQL on a free port; no default cluster on 5432.
    if [ ! -e /etc/postgresql-common/createcluster.conf ]; then
        as_root mkdir -p /etc/postgresql-common
        echo 'create_main_cluster = false' | as_root tee /etc/postgresql-common/createcluster.conf
    fi
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        -o Dpkg::Options::=--force-confold "${missing[@]}"
fi

# Debian's docker.io client has BuildKit built in; a newer standalone client without the buildx
# plugin (such as a /usr/local/bin/docker ahead of it on PATH) cannot build with secrets, so prefer
# Debian's when the caller did not choose one. Chosen after the host packages: on a fresh machine
# /usr/bin/docker only exists once docker.io is installed above.
if [ "$DOCKER" = docker ] && [ -x /usr/bin/docker ]; then
    DOCKER=/usr/bin/docker
fi
export DOCKER

phase "docker engine"
if ! "$DOCKER" info >/dev/null 2>&1; then
    if [ "$(id -u)" != 0 ]; then
        echo "error: Docker is not running and starting it needs root; start it and rerun" >&2
        exit 1
    fi
    # No default bridge and no iptables: containers use the host network and talk to 127.0.0.1.
    setsid nohup dockerd --bridge=none --iptables=false --pidfile /var/run/docker.pid \
        >/var/log/dockerd.log 2>&1 </dev/null &
    for _ in $(seq 60); do
        "$DOCKER" info >/dev/null 2>&1 && break
        sleep 1
    done
    if ! "$DOCKER" info >/dev/null 2>&1; then
        tail -20 /var/log/dockerd.log >&2 || true
        echo "error: the Docker engine did not start within 60s (log: /var/log/dockerd.log)" >&2
        exit 1
    fi
    # Stop only the engine this stage started, by its PID, when the stage ends. (setsid may fork,
    # so $! is not dockerd's PID; its pidfile is.)
    started_dockerd="$(cat /var/run/docker.pid)"
    trap 'kill "$started_dockerd" 2>/dev/null || true' EXIT
fi

phase "base image"
LOCAL_BASE_IMAGE="${LOCAL_BASE_IMAGE:-local/python-base:trixie}"
BASE_IMAGE="${BASE_IMAGE:-$LOCAL_BASE_IMAGE}"
if [ "$BASE_IMAGE" = "$LOCAL_BASE_IMAGE" ]; then
    make base-image DOCKER="$DOCKER" LOCAL_BASE_IMAGE="$LOCAL_BASE_IMAGE"
fi

phase "images"
# The host's CA bundle doubles as the proxy CA where a TLS-intercepting proxy is in the way.
PIP_CA_BUNDLE="${PIP_CA_BUNDLE-/etc/ssl/certs/ca-certificates.crt}"
[ -s "$PIP_CA_BUNDLE" ] || PIP_CA_BUNDLE=""
make images DOCKER="$DOCKER" BASE_IMAGE="$BASE_IMAGE" PIP_CA_BUNDLE="$PIP_CA_BUNDLE"

phase "tests"
echo "== container stage set-up took $((SECONDS - stage_start))s (${timings%, }); pytest times the rest"
# Last output of the stage is pytest's summary line; its exit 5 (no test collected) fails it too.
.venv/bin/python -m pytest -m docker
