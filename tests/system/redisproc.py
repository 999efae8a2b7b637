"""A private redis-server for the cluster tests: temp dir, loopback, free port,
AOF with appendfsync always by default, stopped by PID (never by name)."""

import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

from harness import free_port, wait_for

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def require_redis():
    if not os.access(REDIS_SERVER, os.X_OK):
        pytest.skip("redis-server is not installed (Debian package redis-server; "
                    "scripts/deps.sh test installs it)")


class RedisServer:
    def __init__(self, workdir, appendonly=True, appendfsync="always", extra=None):
        require_redis()
        self.dir = workdir
        os.makedirs(workdir, exist_ok=True)
        self.port = free_port()
        self.host = "127.0.0.1"
        self.proc = None
        self.conf = {
            "bind": "127.0.0.1", "port": str(self.port), "dir": workdir,
            "appendonly": "yes" if appendonly else "no", "appendfsync": appendfsync,
            "save": '""', "daemonize": "no", "protected-mode": "no",
            "logfile": os.path.join(workdir, "redis.log"),
        }
        self.conf.update(extra or {})

    @property
    def url(self):
        return f"redis://{self.host}:{self.port}/0"

    def start(self):
        path = os.path.join(self.dir, "redis.conf")
        with open(path, "w") as f:
            for k, v in self.conf.items():
                f.write(f"{k} {v}\n")
        self.proc = subprocess.Popen([REDIS_SERVER, path], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        wait_for(lambda: self.ping() or self.proc.poll() is not None, 15, "redis-server to start")
        assert self.proc.poll() is None, f"redis-server exited: {self.log_tail()}"
        return self

    def log_tail(self):
        try:
            with open(self.conf["logfile"]) as f:
                return f.read()[-2000:]
        except OSError:
            return ""

    def cmd(self, *args, timeout=5.0):
        """One command over a plain socket (RESP); returns the decoded reply."""
        with socket.create_connection((self.host, self.port), timeout=timeout) as s:
            out = f"*{len(args)}\r\n"
            for a in args:
                b = a if isinstance(a, bytes) else str(a).encode()
                out += f"${len(b)}\r\n" + b.decode("latin-1") + "\r\n"
            s.sendall(out.encode("latin-1"))
            f = s.makefile("rb")
            return _read_reply(f)

    def ping(self):
        try:
            return self.cmd("PING", timeout=1) == "PONG"
        except (OSError, RuntimeError):   # not up yet, or LOADING
            return False

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def kill(self):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def restart(self):
        self.stop()
        time.sleep(0.2)
        return self.start()


def _read_reply(f):
    line = f.readline()
    if not line:
        raise OSError("connection closed")
    t, rest = line[:1], line[1:-2]
    if t == b"+":
        return rest.decode()
    if t == b"-":
        raise RuntimeError(rest.decode())
    if t == b":":
        return int(rest)
    if t == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)[:-2]
        return data.decode("utf-8", "replace")
    if t == b"*":
        n = int(rest)
        if n < 0:
            return None
        return [_read_reply(f) for _ in range(n)]
    raise OSError(f"bad reply {line!r}")
