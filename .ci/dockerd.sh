# shellcheck shell=bash
# A private Docker engine for the image tests (sourced by .ci/run).
#
#   source .ci/dockerd.sh; start_dockerd; trap stop_dockerd EXIT
#
# start_dockerd installs Debian's docker.io and debootstrap when missing (CI runs
# on a clean machine; tests/fixtures/docker_engine.py uses debootstrap to make the
# local base image, since no registry is reachable), starts dockerd with its own
# data-root, exec-root and socket under a temp dir, waits until it answers, and
# exports DOCKER_HOST. stop_dockerd stops that daemon by its PID and removes what
# it left behind. Nothing here touches a system-wide daemon.

_ob_dockerd_dir=""
_ob_dockerd_pid=""

_ob_docker_ping() {
  # GET /_ping on the unix socket with the stdlib: no docker CLI version games.
  python3 - "$1" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(2)
try:
    s.connect(sys.argv[1])
    s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
    reply = s.recv(4096)
except OSError:
    sys.exit(1)
sys.exit(0 if reply.startswith(b"HTTP/1.") and reply.rstrip().endswith(b"OK") else 1)
PY
}

start_dockerd() {
  if ! command -v dockerd >/dev/null 2>&1 || ! command -v debootstrap >/dev/null 2>&1; then
    echo "== install docker.io and debootstrap (Debian packages)"
    if [ "$(id -u)" -ne 0 ]; then
      echo "start_dockerd: need root to install docker.io and run dockerd" >&2
      return 1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get update -q
    # With recommends, as tested (containerd, runc, iptables, pigz come along).
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io debootstrap
  fi
  if [ "$(id -u)" -ne 0 ]; then
    echo "start_dockerd: dockerd needs root here (no rootless set-up)" >&2
    return 1
  fi

  # A short path: the socket path must stay under 108 bytes.
  _ob_dockerd_dir="$(mktemp -d /tmp/ob-dockerd.XXXXXX)"
  local sock="$_ob_dockerd_dir/docker.sock"
  echo "== start dockerd (data-root $_ob_dockerd_dir/data)"
  dockerd \
    --iptables=false --ip6tables=false --bridge=none \
    --storage-driver=overlay2 \
    --data-root "$_ob_dockerd_dir/data" \
    --exec-root "$_ob_dockerd_dir/exec" \
    --pidfile "$_ob_dockerd_dir/dockerd.pid" \
    --host "unix://$sock" \
    >"$_ob_dockerd_dir/dockerd.log" 2>&1 &
  _ob_dockerd_pid=$!

  local i
  for i in $(seq 1 150); do
    if _ob_docker_ping "$sock"; then
      export DOCKER_HOST="unix://$sock"
      echo "dockerd ready after ~$((i / 5)) s: DOCKER_HOST=$DOCKER_HOST"
      return 0
    fi
    if ! kill -0 "$_ob_dockerd_pid" 2>/dev/null; then
      break
    fi
    sleep 0.2
  done
  echo "start_dockerd: dockerd did not answer on $sock; its log:" >&2
  tail -n 40 "$_ob_dockerd_dir/dockerd.log" >&2 || true
  stop_dockerd
  return 1
}

stop_dockerd() {
  if [ -n "$_ob_dockerd_pid" ] && kill -0 "$_ob_dockerd_pid" 2>/dev/null; then
    kill -TERM "$_ob_dockerd_pid" 2>/dev/null || true
    local i
    for i in $(seq 1 75); do
      kill -0 "$_ob_dockerd_pid" 2>/dev/null || break
      sleep 0.2
    done
    if kill -0 "$_ob_dockerd_pid" 2>/dev/null; then
      echo "stop_dockerd: dockerd $_ob_dockerd_pid ignored SIGTERM; sending SIGKILL" >&2
      kill -KILL "$_ob_dockerd_pid" 2>/dev/null || true
    fi
    wait "$_ob_dockerd_pid" 2>/dev/null || true
  fi
  _ob_dockerd_pid=""
  if [ -n "$_ob_dockerd_dir" ] && [ -d "$_ob_dockerd_dir" ]; then
    # dockerd leaves the default network namespace bind-mounted (and, when
    # killed, overlay mounts); unmount deepest first or rm -rf fails with EBUSY.
    local mnt
    awk -v root="$_ob_dockerd_dir/" 'index($2, root) == 1 { print $2 }' /proc/self/mounts \
      | sort -r | while read -r mnt; do umount -l "$mnt" 2>/dev/null || true; done
    rm -rf "$_ob_dockerd_dir" || echo "stop_dockerd: could not remove $_ob_dockerd_dir" >&2
  fi
  _ob_dockerd_dir=""
  unset DOCKER_HOST
}
