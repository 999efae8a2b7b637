"""Harness for petrel's system tests: the daemon process, its Lua config, the JSON
log, SMTP clients (smtplib and a raw socket one), message builders and polling.

Nothing here talks to the machine's resolver or to any address off loopback.
"""

import atexit
import email
import email.policy
import email.utils
import json
import os
import random
import re
import signal
import smtplib
import socket
import subprocess
import threading
import time
import uuid

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PETREL_BIN = os.path.abspath(os.path.join(REPO, os.environ.get("PETREL_BIN", "build/petrel")))
PETRELCTL_BIN = os.path.abspath(os.path.join(REPO, os.environ.get("PETRELCTL_BIN", "build/petrelctl")))

READY_LINE = "petrel ready"
READY_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0

# Every key a log record must carry (DESIGN §6).
LOG_KEYS = ("type", "id", "timestamp", "sender", "recipient", "queue", "site",
            "peer_address", "code", "response", "size", "delay", "attempts", "tls",
            "protocol")
TIMESTAMP_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}(Z|[+-]\d{2}:\d{2})$")


class HarnessError(AssertionError):
    pass


def require_binary(path=None):
    path = path or PETREL_BIN
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise HarnessError(
            f"petrel binary not found or not executable at {path}: run `make` first "
            f"or set PETREL_BIN to the daemon's path")
    return path


# ---------------------------------------------------------------- polling

def wait_for(pred, timeout=10.0, what="condition", interval=0.05):
    """Polls pred() until it returns a truthy value, which is returned; on timeout
    raises AssertionError naming `what` (a string or a function returning one)."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            msg = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout:g}s waiting for {msg}")
        time.sleep(interval)


# ---------------------------------------------------------------- ports

_used_ports = set()


def free_port(ips=("127.0.0.1",), lo=20000, hi=32000):
    """A TCP port (outside the ephemeral range) that binds on every ip given."""
    for _ in range(500):
        port = random.randint(lo, hi)
        if port in _used_ports:
            continue
        ok = True
        for ip in ips:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind((ip, port))
            except OSError:
                ok = False
            finally:
                s.close()
            if not ok:
                break
        if ok:
            _used_ports.add(port)
            return port
    raise HarnessError(f"no free port for {ips}")


# ---------------------------------------------------------------- Lua config

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LUA_KEYWORDS = {"and", "break", "do", "else", "elseif", "end", "false", "for", "function",
                 "goto", "if", "in", "local", "nil", "not", "or", "repeat", "return",
                 "then", "true", "until", "while"}


class Lua(str):
    """A raw Lua expression, inserted as written."""


def lua_str(s):
    out = ['"']
    for ch in s:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 32:
            out.append("\\%03d" % ord(ch))
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def lua_value(v, indent=0):
    pad = "  " * (indent + 1)
    if isinstance(v, Lua):
        return str(v)
    if v is None:
        return "nil"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return lua_str(v)
    if isinstance(v, (list, tuple)):
        return "{ " + ", ".join(lua_value(x, indent + 1) for x in v) + " }"
    if isinstance(v, dict):
        if not v:
            return "{}"
        items = []
        for k, x in v.items():
            if x is None:
                continue
            if isinstance(k, str) and _IDENT.match(k) and k not in _LUA_KEYWORDS:
                key = k
            else:
                key = "[" + lua_value(k) + "]"
            items.append(f"{pad}{key} = {lua_value(x, indent + 1)},")
        return "{\n" + "\n".join(items) + "\n" + "  " * indent + "}"
    raise TypeError(f"cannot write {v!r} as Lua")


def lua_config(listeners=(), queue=None, delivery=None, transport=None, dns=None,
               logging=None, extra=""):
    """Builds a petrel Lua config. listeners: list of start_smtp_listener tables;
    queue/delivery/transport/logging: tables for configure_*; dns: resolver list."""
    parts = ["-- generated by tests/system/harness.py"]
    for lst in listeners:
        parts.append("petrel.start_smtp_listener " + lua_value(lst))
    if queue is not None:
        parts.append("petrel.configure_queue " + lua_value(queue))
    if delivery is not None:
        parts.append("petrel.configure_delivery " + lua_value(delivery))
    if transport is not None:
        parts.append("petrel.configure_transport " + lua_value(transport))
    if dns is not None:
        parts.append("petrel.configure_dns " + lua_value({"resolvers": list(dns)}))
    if logging is not None:
        parts.append("petrel.configure_logging " + lua_value(logging))
    if extra:
        parts.append(extra)
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------- messages

def new_msgid():
    return f"<{uuid.uuid4().hex}@petrel-test.example>"


def make_message(sender="alice@sender.test", to=("bob@dest.test",), subject="test message",
                 body="Hello.\r\nThis is a test.\r\n", msgid=None, headers=None):
    """An RFC 5322 message as bytes with CRLF line ends. body may be str or bytes
    (bytes are used as is)."""
    if isinstance(to, str):
        to = [to]
    msgid = msgid or new_msgid()
    hdrs = [
        ("From", f"<{sender}>" if sender else "<>"),
        ("To", ", ".join(f"<{t}>" for t in to)),
        ("Subject", subject),
        ("Date", email.utils.formatdate(localtime=False)),
        ("Message-ID", msgid),
    ]
    for k, v in (headers or {}).items():
        hdrs.append((k, v))
    head = "".join(f"{k}: {v}\r\n" for k, v in hdrs).encode("utf-8")
    if isinstance(body, str):
        body = body.encode("utf-8")
    return head + b"\r\n" + body


def msgid_of(data):
    m = re.search(rb"^Message-ID:\s*(<[^>\r\n]*>)", data, re.I | re.M)
    return m.group(1).decode() if m else None


def split_first_header(data):
    """(first header field with its continuation lines, the rest) of a message."""
    m = re.match(rb"[^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*", data)
    assert m, f"no header line at the start of {data[:200]!r}"
    return data[:m.end()], data[m.end():]


def parse_dsn(data):
    """Splits a DSN into its parts. Returns a dict with: msg (email.message.Message),
    content_type, report_type, recipients (list of dicts of per-recipient fields,
    keys lowercased), per_message (dict), human (text), headers (bytes of the
    returned original headers or message, or b"")."""
    msg = email.message_from_bytes(data, policy=email.policy.compat32)
    out = {"msg": msg, "content_type": msg.get_content_type(),
           "report_type": (msg.get_param("report-type") or "").lower(),
           "recipients": [], "per_message": {}, "human": "", "headers": b""}
    for part in msg.walk():
        ct = part.get_content_type()
        if ct == "message/delivery-status":
            payload = part.get_payload()
            if isinstance(payload, list):
                blocks = [dict((k.lower(), v.strip()) for k, v in b.items()) for b in payload]
            else:
                raw = part.get_payload(decode=True) or b""
                text = raw.decode("utf-8", "replace").replace("\r\n", "\n")
                blocks = []
                for chunk in re.split(r"\n\s*\n", text.strip()):
                    chunk = re.sub(r"\n[ \t]+", " ", chunk)
                    d = {}
                    for line in chunk.split("\n"):
                        k, sep, v = line.partition(":")
                        if sep:
                            d[k.strip().lower()] = v.strip()
                    if d:
                        blocks.append(d)
            if blocks:
                out["per_message"] = blocks[0]
                out["recipients"] = [b for b in blocks[1:] if "final-recipient" in b
                                     or "original-recipient" in b]
                if "final-recipient" in blocks[0]:   # no per-message block written
                    out["recipients"].insert(0, blocks[0])
        elif ct == "text/rfc822-headers":
            out["headers"] += part.get_payload(decode=True) or b""
        elif ct == "message/rfc822":
            inner = part.get_payload()
            if isinstance(inner, list) and inner:
                out["headers"] += inner[0].as_bytes()
        elif ct == "text/plain" and not out["human"]:
            out["human"] = (part.get_payload(decode=True) or b"").decode("utf-8", "replace")
    return out


# ---------------------------------------------------------------- raw SMTP client

class RawSMTP:
    """A byte-level SMTP client for tests that must send what smtplib won't."""

    def __init__(self, host, port, timeout=10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.buf = b""
        self.closed = False

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _fill(self, timeout=None):
        if timeout is not None:
            self.sock.settimeout(timeout)
        chunk = self.sock.recv(65536)
        if not chunk:
            self.closed = True
            raise ConnectionError("connection closed by petrel")
        self.buf += chunk

    def read_line(self, timeout=None):
        while b"\n" not in self.buf:
            self._fill(timeout)
        line, _, self.buf = self.buf.partition(b"\n")
        return line.rstrip(b"\r")

    def reply(self, timeout=None):
        """Reads one (possibly multi-line) reply: (code, text with lines joined by \\n).
        Raises ConnectionError on EOF and AssertionError on a malformed line."""
        lines = []
        while True:
            line = self.read_line(timeout)
            m = re.match(rb"^(\d{3})([ -])(.*)$", line)
            if not m and re.match(rb"^\d{3}$", line):
                m = re.match(rb"^(\d{3})()(.*)$", line)
            assert m, f"malformed SMTP reply line {line!r}"
            lines.append(m.group(3).decode("utf-8", "replace"))
            if m.group(2) != b"-":
                return int(m.group(1)), "\n".join(lines)

    def cmd(self, line, timeout=None):
        if isinstance(line, str):
            line = line.encode()
        self.send(line + b"\r\n")
        return self.reply(timeout)

    def replies(self, n, timeout=None):
        return [self.reply(timeout) for _ in range(n)]

    def wait_closed(self, timeout=10.0):
        """True if petrel closes the connection within timeout (data read is kept
        in self.buf), False if it is still open."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                self._fill(left)
            except ConnectionError:
                return True
            except ConnectionResetError:
                return True
            except socket.timeout:
                return False
            except OSError:
                return True

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


# ---------------------------------------------------------------- the daemon

_live_procs = set()


@atexit.register
def _kill_leftovers():
    """Safety net if pytest is interrupted before the fixtures' teardown: kill -9,
    by pid, every petrel this harness started and that still runs."""
    for proc in list(_live_procs):
        if proc.poll() is None:
            try:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                pass


class Petrel:
    """One petrel process: config file, spool, log, stderr capture."""

    def __init__(self, workdir, config_text, port, hostname="petrel.test", name="petrel"):
        self.workdir = workdir
        self.name = name
        self.port = port
        self.host = "127.0.0.1"
        self.hostname = hostname
        os.makedirs(workdir, exist_ok=True)
        self.cfg_path = os.path.join(workdir, "petrel.lua")
        self.log_path = os.path.join(workdir, "log", "petrel.jsonl")
        self.spool_dir = os.path.join(workdir, "spool")
        self.stderr_path = os.path.join(workdir, "stderr.log")
        self.stdout_path = os.path.join(workdir, "stdout.log")
        with open(self.cfg_path, "w") as f:
            f.write(config_text)
        self.proc = None
        self.runs = 0
        self._ready = threading.Event()
        self._reader = None
        self.exit_codes = []
        self.expected_exit = True     # False while running: an exit is then a crash

    # ---- process -------------------------------------------------------
    def start(self, wait=True):
        require_binary()
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.runs += 1
        self.expected_exit = False
        self._ready.clear()
        errf = open(self.stderr_path, "ab")
        errf.write(f"===== start #{self.runs} at {time.strftime('%H:%M:%S')} =====\n".encode())
        errf.flush()
        outf = open(self.stdout_path, "ab")
        self.proc = subprocess.Popen([PETREL_BIN, "-c", self.cfg_path], cwd=self.workdir,
                                     stdin=subprocess.DEVNULL, stdout=outf,
                                     stderr=subprocess.PIPE, start_new_session=True)
        outf.close()
        _live_procs.add(self.proc)
        self._reader = threading.Thread(target=self._read_stderr, args=(self.proc, errf),
                                        daemon=True)
        self._reader.start()
        if wait:
            self.wait_ready()
        return self

    def _read_stderr(self, proc, errf):
        try:
            for line in iter(proc.stderr.readline, b""):
                errf.write(line)
                errf.flush()
                if READY_LINE.encode() in line:
                    self._ready.set()
        finally:
            errf.close()

    def wait_ready(self, timeout=READY_TIMEOUT):
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.05):
            if self.proc.poll() is not None:
                self._reader.join(2)
                raise HarnessError(f"petrel exited with code {self.proc.returncode} before "
                                   f"'{READY_LINE}'; stderr:\n{self.stderr_tail()}")
            if time.monotonic() > deadline:
                raise HarnessError(f"petrel did not print '{READY_LINE}' within {timeout:g}s; "
                                   f"stderr:\n{self.stderr_tail()}")

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def assert_alive(self):
        if not self.alive():
            raise AssertionError(f"petrel is not running (exit code "
                                 f"{self.proc.returncode if self.proc else None}); "
                                 f"stderr:\n{self.stderr_tail()}")

    def crashed(self):
        """The exit code if petrel exited without being stopped or killed, else None."""
        if self.proc is not None and not self.expected_exit and self.proc.poll() is not None:
            return self.proc.returncode
        return None

    def signal(self, sig):
        if sig in (signal.SIGTERM, signal.SIGINT, signal.SIGKILL):
            self.expected_exit = True
        if self.alive():
            os.kill(self.proc.pid, sig)

    def stop(self, timeout=STOP_TIMEOUT, check=True):
        """SIGTERM; asserts exit code 0 within timeout (kill -9 and fail otherwise)."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        t0 = time.monotonic()
        self.expected_exit = True
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"petrel did not exit within {timeout:g}s of SIGTERM; "
                                 f"stderr:\n{self.stderr_tail()}")
        self._reader.join(2)
        self.exit_codes.append(rc)
        if check and rc != 0:
            raise AssertionError(f"petrel exited with code {rc} after SIGTERM "
                                 f"(in {time.monotonic() - t0:.1f}s); stderr:\n{self.stderr_tail()}")
        return rc

    def kill(self):
        """kill -9 (by pid) and reap."""
        self.expected_exit = True
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
            self.exit_codes.append(self.proc.returncode)
        if self._reader:
            self._reader.join(2)

    def restart(self, wait=True):
        """Starts again on the same config, spool and port (after stop or kill)."""
        assert not self.alive(), "stop or kill petrel before restart"
        return self.start(wait)

    def stderr_text(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def stderr_tail(self, n=120):
        lines = self.stderr_text().splitlines()
        return "\n".join(lines[-n:])

    # ---- SMTP ----------------------------------------------------------
    def smtp(self, timeout=10.0, ehlo=True):
        """An smtplib.SMTP connected to the listener (EHLO already sent)."""
        s = smtplib.SMTP(self.host, self.port, local_hostname="client.test", timeout=timeout)
        if ehlo:
            code, resp = s.ehlo()
            assert code == 250, f"EHLO: {code} {resp!r}"
        return s

    def raw(self, timeout=10.0, greeting=True):
        """A RawSMTP connected to the listener, the 220 greeting already read."""
        c = RawSMTP(self.host, self.port, timeout)
        if greeting:
            code, text = c.reply()
            assert code == 220, f"greeting: {code} {text}"
        return c

    def send(self, sender, rcpts, data, mail_options=(), rcpt_options=(), smtp=None):
        """Sends one message; returns (code, text) of the final reply. Raises
        AssertionError if any recipient or the message is refused."""
        if isinstance(rcpts, str):
            rcpts = [rcpts]
        own = smtp is None
        s = smtp or self.smtp()
        try:
            code, resp = s.mail(sender, list(mail_options))
            assert code == 250, f"MAIL FROM:<{sender}>: {code} {resp!r}"
            for r in rcpts:
                code, resp = s.rcpt(r, list(rcpt_options))
                assert code == 250, f"RCPT TO:<{r}>: {code} {resp!r}"
            code, resp = s.data(data)
            assert code == 250, f"DATA: {code} {resp!r}"
            return code, resp.decode("utf-8", "replace")
        finally:
            if own:
                try:
                    s.quit()
                except (smtplib.SMTPException, OSError):
                    s.close()

    def send_message(self, sender="alice@sender.test", to=("bob@dest.test",), **kw):
        """Builds a message (make_message) and sends it; returns its Message-ID."""
        if isinstance(to, str):
            to = [to]
        mail_options = kw.pop("mail_options", ())
        data = make_message(sender, to, **kw)
        self.send(sender, to, data, mail_options=mail_options)
        return msgid_of(data)

    # ---- JSON log ------------------------------------------------------
    def records(self, type=None, **match):
        """Parsed log records (complete lines only), filtered by type and equal fields."""
        try:
            with open(self.log_path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return []
        out = []
        for line in raw.split(b"\n")[:-1]:
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError as e:
                raise AssertionError(f"log line is not JSON ({e}): {line[:300]!r}")
            if type is not None and rec.get("type") != type:
                continue
            if any(rec.get(k) != v for k, v in match.items()):
                continue
            out.append(rec)
        return out

    def raw_log_lines(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().split(b"\n")
        except FileNotFoundError:
            return []

    def wait_record(self, type, timeout=15.0, pred=None, **match):
        """Waits for a log record of this type with these field values (and pred)."""
        def find():
            for r in self.records(type, **match):
                if pred is None or pred(r):
                    return r
            return None
        return wait_for(find, timeout, lambda: (
            f"a {type} record with {match} in {self.log_path}; records so far:\n"
            + "\n".join(json.dumps(r) for r in self.records()[-30:])
            + (f"\n(petrel is not running: {self.proc.returncode})" if not self.alive() else "")))

    def wait_records(self, type, n, timeout=15.0, **match):
        return wait_for(lambda: len(self.records(type, **match)) >= n and self.records(type, **match),
                        timeout, lambda: f"{n} {type} records with {match}; have "
                        f"{len(self.records(type, **match))}:\n"
                        + "\n".join(json.dumps(r) for r in self.records()[-30:]))


def check_record_keys(rec):
    """Asserts a log record carries every DESIGN §6 key with sane types."""
    missing = [k for k in LOG_KEYS if k not in rec]
    assert not missing, f"record lacks keys {missing}: {rec}"
    assert isinstance(rec["type"], str)
    if rec["type"] == "Rejection":      # refused before a message (and its id) exists
        assert rec["id"] is None or isinstance(rec["id"], str), rec
    else:
        assert isinstance(rec["id"], str) and rec["id"], rec
    assert isinstance(rec["timestamp"], str) and TIMESTAMP_RE.match(rec["timestamp"]), \
        f"timestamp not RFC 3339 with milliseconds: {rec['timestamp']!r}"
    assert rec["code"] is None or isinstance(rec["code"], int), rec
    assert rec["size"] is None or isinstance(rec["size"], int), rec
    assert rec["delay"] is None or isinstance(rec["delay"], (int, float)), rec
    assert rec["attempts"] is None or isinstance(rec["attempts"], int), rec
    assert rec["protocol"] in ("smtp", "http", None), rec


def site_host(site):
    """'mx.dest.test:2525' -> ('mx.dest.test', 2525); tolerates a trailing dot and
    brackets around the host."""
    host, _, port = site.rpartition(":")
    return host.strip("[]").rstrip(".").lower(), int(port)


def swaks(*args, timeout=30):
    return subprocess.run(["swaks", *args], capture_output=True, timeout=timeout)


def run_petrel(*args, timeout=15, cwd=None):
    """Runs the petrel binary with args (not as a daemon); returns CompletedProcess."""
    require_binary()
    return subprocess.run([PETREL_BIN, *args], capture_output=True, timeout=timeout,
                          cwd=cwd, stdin=subprocess.DEVNULL)


def raw_send(p, sender, rcpts, data, mail_params="", rcpt_params=None):
    """One message through a raw session (no client library in between): MAIL with
    mail_params (e.g. " RET=HDRS"), each RCPT with rcpt_params[addr]; asserts 250s."""
    rcpt_params = rcpt_params or {}
    with p.raw() as c:
        assert c.cmd("EHLO client.test")[0] == 250
        code, text = c.cmd(f"MAIL FROM:<{sender}>{mail_params}".encode())
        assert code == 250, (code, text)
        for r in rcpts:
            code, text = c.cmd(f"RCPT TO:<{r}>{rcpt_params.get(r, '')}".encode())
            assert code == 250, (r, code, text)
        assert c.cmd("DATA")[0] == 354
        c.send(data.replace(b"\r\n.", b"\r\n..") + b".\r\n")
        code, text = c.reply()
        assert code == 250, (code, text)
