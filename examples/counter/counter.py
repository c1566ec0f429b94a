#!/usr/bin/env python3
"""The distributed counter: a small HTTP service made fault tolerant by the ftso operator.

The operator tells each pod its role (primary, replica or fenced), its fencing term and its peers through
files of a downward API volume, ROLE_DIR/role, ROLE_DIR/term and ROLE_DIR/peers (the other pods'
addresses, one a line). Only the primary takes writes, and it acknowledges an increment only after every
peer stored it; a new primary first catches up from every peer. So promoting any replica loses nothing
that was acknowledged. Standard library only.

    counter.py serve --port 8080 [--host 127.0.0.1] [--role-dir /etc/ftso] [--data-dir DIR] [--peers URL,...]
    counter.py checkpoint [--target URL] [--dir DIR] [--id ID]
    counter.py restore [--dir DIR] [--id ID|latest] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeGuard

DEFAULT_ROLE_DIR = "/etc/ftso"
PEER_TIMEOUT_SECONDS = 2.0
STATE_FILE = "state.json"
HOSTNAME = socket.gethostname()  # in a pod: the pod's name

Json = dict[str, Any]


def is_int(x: object) -> TypeGuard[int]:
    return isinstance(x, int) and not isinstance(x, bool)


def atomic_write_json(path: Path, data: Json) -> None:
    """Write through a temp file and a rename, so a reader or a crash never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def http_json(method: str, url: str, body: Json | None = None, timeout: float = PEER_TIMEOUT_SECONDS) -> Json:
    """One JSON request; raises urllib.error.HTTPError on a non-2xx answer, URLError/OSError if unreachable."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        answer = json.loads(resp.read() or b"{}")
    if not isinstance(answer, dict):
        raise ValueError(f"{url}: expected a JSON object")
    return answer


class Counter:
    """The replicated state. One lock serialises writes: replication ships absolute values."""

    def __init__(self, role_dir: Path, data_dir: Path | None, peers: list[str], port: int = 8080) -> None:
        self.role_dir = role_dir
        self.data_dir = data_dir
        self.fixed_peers = peers  # given on the command line; else ROLE_DIR/peers, read on every write
        self.port = port
        self.value = 0
        self.term = 0  # the highest term seen, from the term file or from replicate calls
        self.lock = threading.Lock()
        # A new pod (no saved state, nothing replicated yet) knows nothing: as a replica it answers no reads,
        # so a reader never sees 0 after a replaced pod starts.
        self.empty = True
        state = self._state_path()
        if state is not None and state.exists():
            saved = json.loads(state.read_text())
            self.value, self.term = int(saved["value"]), int(saved["term"])
            self.empty = False

    def _state_path(self) -> Path | None:
        return None if self.data_dir is None else self.data_dir / STATE_FILE

    def _save(self) -> None:
        state = self._state_path()
        if state is not None:
            atomic_write_json(state, {"value": self.value, "term": self.term})
        self.empty = False

    # Re-read on every request (a few bytes) so a promotion or a demotion takes effect at once.
    def role(self) -> str:
        try:
            role = (self.role_dir / "role").read_text().strip()
        except OSError:
            role = ""
        return role or "replica"  # no role yet: the safe choice is to refuse writes

    @property
    def peers(self) -> list[str]:
        if self.fixed_peers:
            return self.fixed_peers
        try:
            lines = (self.role_dir / "peers").read_text().split()
        except OSError:
            return []
        return [f"http://[{a}]:{self.port}" if ":" in a else f"http://{a}:{self.port}" for a in lines]

    def file_term(self) -> int:
        try:
            return int((self.role_dir / "term").read_text().strip() or 0)
        except (OSError, ValueError):
            return 0

    def status(self) -> Json:
        with self.lock:
            return {"value": self.value, "term": max(self.term, self.file_term()), "role": self.role()}

    def snapshot(self) -> Json:
        with self.lock:
            # written_term: the term of the primary that wrote the value (what a new primary catches up by).
            return {"value": self.value, "term": max(self.term, self.file_term()), "written_term": self.term}

    def _catch_up(self, peers: list[str]) -> str:
        """A new primary's first write: take the newest state among its peers (the latest term's writer
        reached every peer before acknowledging). Returns the peer that could not answer, or ""."""
        best = (self.term, self.value)
        for peer in peers:
            try:
                snap = http_json("GET", f"{peer}/snapshot")
            except (OSError, ValueError):
                return peer
            written, value = snap.get("written_term"), snap.get("value")
            if is_int(written) and is_int(value):
                best = max(best, (written, value))
        self.value = best[1]
        return ""

    def _send(self, peer: str, value: int, term: int) -> bool:
        try:
            http_json("POST", f"{peer}/replicate", {"value": value, "term": term})
        except (OSError, ValueError):  # HTTPError and URLError are OSErrors
            return False
        return True

    def increment(self, by: int) -> tuple[int, Json]:
        with self.lock:
            role = self.role()
            if role != "primary":
                return 409, {"error": "not primary", "role": role}
            term = self.file_term()
            if term < self.term:
                # A newer primary has replicated to us: we are a deposed primary, whatever the file says.
                return 409, {"error": "stale term", "term": term, "seen": self.term}
            peers = self.peers
            if term > self.term:
                # Just promoted: a replica may hold writes this pod missed (it was replaced, or restored).
                missing = self._catch_up(peers)
                if missing:
                    return 503, {"error": "cannot catch up from a peer", "failed": [missing]}
            self.term = term
            new = self.value + by
            acked = [peer for peer in peers if self._send(peer, new, term)]
            # The value moves forward wherever it landed, here too: no reader ever sees it go back. A write
            # that missed a peer is not acknowledged (503): like a write whose answer is lost, it may or
            # may not survive a failover; an acknowledged one always does.
            self.value = new
            self._save()
            if len(acked) < len(peers):
                failed = [peer for peer in peers if peer not in acked]
                return 503, {"error": "replication failed", "failed": failed}
            return 200, {"value": new, "term": term}

    def replicate(self, value: int, term: int) -> tuple[int, Json]:
        with self.lock:
            local = max(self.term, self.file_term())
            if term < local:
                return 409, {"error": "stale term", "term": local}
            # Saved before it is served: a crash right after a read never shows an older value.
            previous = self.value, self.term
            self.value, self.term = value, term
            try:
                self._save()
            except OSError:
                self.value, self.term = previous
                raise
            return 200, {"value": value, "term": term}


class CounterServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], counter: Counter) -> None:
        super().__init__(address, Handler)
        self.counter = counter


class Handler(BaseHTTPRequestHandler):
    server: CounterServer

    def _reply(self, status: int, body: Json) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Counter-Pod", HOSTNAME)  # which pod answered, through a Service
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Json | None:
        length = int(self.headers.get("Content-Length") or 0)
        if length == 0:
            return {}
        try:
            data = json.loads(self.rfile.read(length))
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    def do_GET(self) -> None:
        counter = self.server.counter
        if self.path == "/healthz":
            status = counter.status()
            self._reply(200, {"ok": True, "role": status["role"], "term": status["term"]})
        elif self.path == "/value":
            status = counter.status()
            if counter.empty and status["role"] != "primary":
                self._reply(503, {"error": "no data yet: waiting for the primary", "role": status["role"]})
            else:
                self._reply(200, status)
        elif self.path == "/snapshot":
            self._reply(200, counter.snapshot())
        else:
            self._reply(404, {"error": "not found"})

    def do_POST(self) -> None:
        counter = self.server.counter
        body = self._body()
        if body is None:
            self._reply(400, {"error": "body must be a JSON object"})
        elif self.path == "/increment":
            by = body.get("by", 1)
            if not is_int(by):
                self._reply(400, {"error": "'by' must be an integer"})
            else:
                self._reply(*counter.increment(by))
        elif self.path == "/replicate":
            value, term = body.get("value"), body.get("term")
            if not (is_int(value) and is_int(term)):
                self._reply(400, {"error": "'value' and 'term' must be integers"})
            else:
                self._reply(*counter.replicate(value, term))
        else:
            self._reply(404, {"error": "not found"})


def fail(message: str, code: int = 1) -> int:
    print(message, file=sys.stderr)
    return code


def cmd_serve(args: argparse.Namespace) -> int:
    raw_peers = args.peers if args.peers is not None else os.environ.get("COUNTER_PEERS", "")
    peers = [p.strip().rstrip("/") for p in raw_peers.split(",") if p.strip()]
    data_dir = args.data_dir or os.environ.get("COUNTER_DATA_DIR")
    counter = Counter(Path(args.role_dir), Path(data_dir) if data_dir else None, peers, args.port)
    server = CounterServer((args.host, args.port), counter)
    # As PID 1 in a container, SIGTERM is ignored unless handled: stop cleanly instead.
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(
        f"counter: on {args.host}:{args.port}, peers: {peers or 'from ' + args.role_dir + '/peers'}",
        file=sys.stderr,
        flush=True,
    )
    with server:
        server.serve_forever()
    return 0


def valid_id(checkpoint_id: str) -> bool:
    # The id names a file in a shared directory (a plain name only); "latest" means the newest one.
    plain = Path(checkpoint_id).name == checkpoint_id and not checkpoint_id.startswith(".")
    return bool(checkpoint_id) and plain and checkpoint_id != "latest"


def cmd_checkpoint(args: argparse.Namespace) -> int:
    target = args.target
    if not target and os.environ.get("FTSO_TARGET_IP"):
        ip = os.environ["FTSO_TARGET_IP"]
        host = f"[{ip}]" if ":" in ip else ip  # an IPv6 pod address
        # The operator leaves FTSO_TARGET_PORT empty when the Service's targetPort is a name ("http").
        port = os.environ.get("FTSO_TARGET_PORT") or os.environ.get("COUNTER_PORT") or "8080"
        target = f"http://{host}:{port}"
    directory = args.dir or os.environ.get("FTSO_CHECKPOINT_DIR")
    checkpoint_id = args.id or os.environ.get("FTSO_CHECKPOINT_ID")
    if not target:
        return fail("checkpoint: no target: pass --target or set FTSO_TARGET_IP (and FTSO_TARGET_PORT)", 2)
    if not directory or not checkpoint_id:
        return fail("checkpoint: pass --dir and --id, or set FTSO_CHECKPOINT_DIR and FTSO_CHECKPOINT_ID", 2)
    if not valid_id(checkpoint_id):
        return fail(f"checkpoint: invalid id {checkpoint_id!r}", 2)
    url = f"{target.rstrip('/')}/snapshot"
    try:
        snap = http_json("GET", url, timeout=args.timeout)
    except (OSError, ValueError) as exc:
        return fail(f"checkpoint: cannot read {url}: {exc}")
    if not (is_int(snap.get("value")) and is_int(snap.get("term"))):
        return fail(f"checkpoint: {url} answered without an integer value and term: {snap}")
    record = {
        "id": checkpoint_id,
        "value": snap["value"],
        "term": snap["term"],
        "taken_at": datetime.now(UTC).isoformat(),
    }
    atomic_write_json(Path(directory) / f"{checkpoint_id}.json", record)
    print(json.dumps(record))
    return 0


def load_checkpoint(path: Path) -> tuple[datetime, Json] | None:
    """A checkpoint file and its time, or None if it is not one (a temp file, a foreign file)."""
    try:
        record = json.loads(path.read_text())
        taken_at = datetime.fromisoformat(record["taken_at"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not (isinstance(record, dict) and is_int(record.get("value")) and is_int(record.get("term"))):
        return None
    return taken_at, record


def cmd_restore(args: argparse.Namespace) -> int:
    directory = args.dir or os.environ.get("FTSO_CHECKPOINT_DIR")
    checkpoint_id = args.id or os.environ.get("FTSO_CHECKPOINT_ID")
    data_dir = args.data_dir or os.environ.get("COUNTER_DATA_DIR")
    if not directory or not checkpoint_id or not data_dir:
        return fail(
            "restore: pass --dir, --id and --data-dir, or set FTSO_CHECKPOINT_DIR, FTSO_CHECKPOINT_ID "
            "and COUNTER_DATA_DIR",
            2,
        )
    if checkpoint_id == "latest":
        found = [c for p in Path(directory).glob("*.json") if (c := load_checkpoint(p)) is not None]
        if not found:
            return fail(f"restore: no checkpoint in {directory}")
        record = max(found, key=lambda c: c[0])[1]
    else:
        if not valid_id(checkpoint_id):
            return fail(f"restore: invalid id {checkpoint_id!r}", 2)
        loaded = load_checkpoint(Path(directory) / f"{checkpoint_id}.json")
        if loaded is None:
            return fail(f"restore: no readable checkpoint {checkpoint_id!r} in {directory}")
        record = loaded[1]
    atomic_write_json(Path(data_dir) / STATE_FILE, {"value": record["value"], "term": record["term"]})
    print(f"restore: checkpoint {record.get('id')!r} (value {record['value']}, term {record['term']})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="counter.py", description="The distributed counter.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--port", type=int, required=True)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--role-dir", default=DEFAULT_ROLE_DIR, help="where the role and term files are")
    serve.add_argument("--data-dir", help="state.json's directory (default: env COUNTER_DATA_DIR)")
    serve.add_argument(
        "--peers", help="comma-separated base URLs (default: env COUNTER_PEERS, else ROLE_DIR/peers)"
    )
    serve.set_defaults(func=cmd_serve)

    checkpoint = sub.add_parser("checkpoint", help="save a pod's state to DIR/ID.json")
    checkpoint.add_argument(
        "--target",
        help="base URL (default: http://$FTSO_TARGET_IP:$FTSO_TARGET_PORT, else $COUNTER_PORT, else 8080)",
    )
    checkpoint.add_argument("--dir", help="default: env FTSO_CHECKPOINT_DIR")
    checkpoint.add_argument("--id", help="default: env FTSO_CHECKPOINT_ID")
    checkpoint.add_argument("--timeout", type=float, default=10.0)
    checkpoint.set_defaults(func=cmd_checkpoint)

    restore = sub.add_parser("restore", help="write DATA_DIR/state.json from a checkpoint")
    restore.add_argument("--dir", help="default: env FTSO_CHECKPOINT_DIR")
    restore.add_argument("--id", help="a checkpoint id or 'latest' (default: env FTSO_CHECKPOINT_ID)")
    restore.add_argument("--data-dir", help="default: env COUNTER_DATA_DIR")
    restore.set_defaults(func=cmd_restore)

    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
