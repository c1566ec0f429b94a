#!/usr/bin/env bash
# Keeps the local control plane's processes running, as a kubelet keeps a node's static pods: when a
# component exits (kube-controller-manager and kube-scheduler do when they lose their leader lease, e.g.
# after a stalled API server), `kwokctl start cluster` starts it again with its recorded command line; it
# starts only components whose process is gone. Crash loops back off up to 30 s.
#   supervise.sh start    start the supervisor in the background (no-op when running)
#   supervise.sh stop     stop it (waits for a restart in progress)
#   supervise.sh status   exit 0 when it runs
# e2e/control_plane.py takes the same lock around its own restarts.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=e2e/cluster/versions.sh
source "$here/versions.sh"

dir=$KWOK_WORKDIR/clusters/$FTSO_CLUSTER_NAME
pid_file=$dir/supervisor.pid
lock=$dir/supervise.lock
log=$dir/logs/supervisor.log
interval=1 # seconds between checks, and the first back-off
components=()

note() { echo "$(date -u +%FT%TZ) $*"; }

# Checked every second, so with bash builtins only: a check that passes forks nothing.
live() { # pid: a process that still runs (a stopped one does; a zombie does not)
  local stat="" state
  read -r stat 2>/dev/null <"/proc/$1/stat" || return 1
  state=${stat##*) }
  state=${state%% *}
  [[ -n $state && $state != Z && $state != X ]]
}

argv() { # pid: the process's command line, NULs as spaces
  local word words=()
  while IFS= read -r -d '' word; do words+=("$word"); done 2>/dev/null <"/proc/$1/cmdline" || true
  echo "${words[*]}"
}

runs() { # name: its pid file names a live process of its binary (after a reboot, pids are reused)
  local pid="" argv0=""
  read -r pid 2>/dev/null <"$dir/pids/$1.pid" || [[ -n $pid ]] || return 1 # no newline at its end
  live "$pid" || return 1
  IFS= read -r -d '' argv0 2>/dev/null <"/proc/$pid/cmdline" || true
  [[ $argv0 == "$dir/bin/$1" ]]
}

dead_components() {
  local name
  for name in "${components[@]}"; do
    runs "$name" || echo "$name"
  done
}

supervisor_pid() { # prints the running supervisor's pid (a reused pid is not it)
  local pid=""
  read -r pid 2>/dev/null <"$pid_file" || [[ -n $pid ]] || return 1
  live "$pid" && [[ $(argv "$pid") == *"supervise.sh run"* ]] && echo "$pid"
}

restart() { # under the lock, so a restart by control_plane.py is never seen half-done
  local dead name
  exec 9>>"$lock"
  flock 9
  dead=$(dead_components)
  if [[ -n $dead ]]; then
    note "restarting: $(echo $dead)"
    for name in $dead; do
      # kwokctl trusts a pid file whose pid answers signal 0, as a zombie does; it truncates the log.
      rm -f "$dir/pids/$name.pid"
      [[ ! -f $dir/logs/$name.log ]] || mv -f "$dir/logs/$name.log" "$dir/logs/$name.previous.log"
    done
    # Without fd 9: the components would inherit it, and the lock with it.
    "$FTSO_BIN/kwokctl" --name "$FTSO_CLUSTER_NAME" start cluster --timeout 60s 9>&- ||
      note "kwokctl start failed"
  fi
  exec 9>&-
}

run() {
  cd /
  echo $$ >"$pid_file"
  # kwokctl names pid and log files after each component's binary.
  mapfile -t components < <(sed -n 's#^  binary: .*/##p' "$dir/kwok.yaml")
  note "supervising cluster '$FTSO_CLUSTER_NAME' (pid $$): ${components[*]}"
  local backoff=$interval last=0 now
  while [[ -f $dir/kwok.yaml ]]; do
    sleep "$interval"
    [[ -n $(dead_components) ]] || continue
    now=$(date +%s)
    ((now - last < 30)) || backoff=$interval
    restart
    last=$now
    sleep "$backoff"
    backoff=$((backoff * 2 > 30 ? 30 : backoff * 2))
  done
  note "cluster '$FTSO_CLUSTER_NAME' is gone; stopping"
}

start() {
  supervisor_pid >/dev/null && return 0
  [[ -f $dir/kwok.yaml ]] || {
    echo "no cluster '$FTSO_CLUSTER_NAME' to supervise" >&2
    return 1
  }
  rm -f "$pid_file"
  FTSO_CLUSTER_NAME=$FTSO_CLUSTER_NAME setsid "$here/supervise.sh" run </dev/null >>"$log" 2>&1 &
  for _ in $(seq 50); do
    supervisor_pid >/dev/null && return 0
    sleep 0.1
  done
  echo "the supervisor of cluster '$FTSO_CLUSTER_NAME' did not start (log: $log)" >&2
  return 1
}

stop() {
  local pid
  pid=$(supervisor_pid) || {
    rm -f "$pid_file"
    return 0
  }
  exec 9>>"$lock"
  flock 9
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 50); do
    live "$pid" || break
    sleep 0.1
  done
  rm -f "$pid_file"
  exec 9>&-
}

main() {
  case ${1:-} in
    start) start ;;
    stop) stop ;;
    status) supervisor_pid >/dev/null ;;
    run) run ;;
    *)
      echo "usage: $0 start|stop|status" >&2
      return 2
      ;;
  esac
}

# One line, read whole before it runs: a long-running supervisor never reads on into an edited file.
main "$@"; exit
