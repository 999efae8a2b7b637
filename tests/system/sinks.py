"""Recording SMTP sinks: the next hops petrel delivers to in the system tests.

Sink: an aiosmtpd server in a thread on one loopback IP and port, recording every
transaction (mail_from, rcpt_tos, data bytes, peer, connection number) and every RCPT
attempt, counting connections (a connection counts once it sent EHLO/HELO) and the
most connections active at once. Behaviours: reject recipients (by address or by a
function), reject at end of DATA, slow DATA, no PIPELINING.

RawSink: a plain socket server for next hops aiosmtpd cannot play: a 421 greeting,
junk replies, a greeting that never comes, a close right after connect, or any
script(sock, sink) given by the test.

A "down" next hop is simply an IP:port where nothing listens.
"""

import asyncio
import logging
import re
import socket
import threading
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

logging.getLogger("mail.log").setLevel(logging.WARNING)


class Txn:
    """One transaction the sink accepted (after the final dot)."""

    def __init__(self, mail_from, rcpt_tos, data, peer, conn, mail_options, helo=None):
        self.mail_from = mail_from          # "" for the null sender
        self.rcpt_tos = list(rcpt_tos)
        self.data = bytes(data)             # dot-unstuffed, CRLF line ends as received
        self.peer = peer                    # client IP
        self.conn = conn                    # connection number at this sink
        self.mail_options = list(mail_options)
        self.helo = helo                    # the client's EHLO/HELO name
        self.time = time.time()

    def header(self, name):
        """First value of header `name` (unfolded), or None."""
        head = self.data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
        head = re.sub(r"\r?\n[ \t]+", " ", head)
        for line in head.split("\r\n"):
            k, sep, v = line.partition(":")
            if sep and k.strip().lower() == name.lower():
                return v.strip()
        return None

    @property
    def message_id(self):
        return self.header("Message-ID")

    def __repr__(self):
        return (f"Txn(from={self.mail_from!r}, to={self.rcpt_tos!r}, peer={self.peer}, "
                f"conn={self.conn}, {len(self.data)} bytes, msgid={self.message_id})")


NULL_SENDER = "<>"


class _RecordingSMTP(SMTP):
    # Long lines reach the handler, so tests can see what petrel really sent.
    line_length_limit = 1 << 20

    def __init__(self, sink, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._sink = sink
        self._conn_no = None
        self._active = False

    def _getaddr(self, arg):
        # aiosmtpd refuses MAIL FROM:<>; a DSN uses exactly that.
        if arg and arg.lstrip().startswith("<>"):
            return NULL_SENDER, arg.lstrip()[2:]
        return super()._getaddr(arg)

    def connection_made(self, transport):
        super().connection_made(transport)
        self._sink._transports.add(transport)

    def connection_lost(self, error):
        self._sink._transports.discard(self.transport)
        self._sink._session_end(self)
        super().connection_lost(error)

    async def smtp_HELO(self, hostname):
        self._sink._session_begin(self)
        await super().smtp_HELO(hostname)

    async def smtp_EHLO(self, hostname):
        self._sink._session_begin(self)
        await super().smtp_EHLO(hostname)

    async def smtp_QUIT(self, arg):
        self._sink._session_end(self)
        await super().smtp_QUIT(arg)


class _Handler:
    def __init__(self, sink):
        self.sink = sink

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        if self.sink.pipelining:
            responses.insert(len(responses) - 1, "250-PIPELINING")
        if not self.sink.ehlo_ok:
            return ["550 5.7.1 no EHLO for you"]
        return responses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = self.sink._rcpt_reply(address)
        with self.sink._lock:
            self.sink.rcpt_attempts.append((address, reply or "250 OK"))
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        sink = self.sink
        if sink.delay:
            await asyncio.sleep(sink.delay)
        mail_from = "" if envelope.mail_from == NULL_SENDER else envelope.mail_from
        txn = Txn(mail_from, envelope.rcpt_tos, envelope.original_content,
                  session.peer[0], server._conn_no, envelope.mail_options,
                  helo=session.host_name)
        reply = sink.data_reply(txn) if sink.data_reply else None
        with sink._lock:
            if reply:
                sink.rejected.append((txn, reply))
                return reply
            sink.transactions.append(txn)
            n = len(sink.transactions)
        return f"250 2.0.0 OK queued as sink-{n}"


class _Controller(Controller):
    def __init__(self, sink, *args, **kwargs):
        self._sink = sink
        super().__init__(*args, **kwargs)

    def factory(self):
        return _RecordingSMTP(self._sink, self.handler, **self.SMTP_kwargs)


class Sink:
    """A recording SMTP server on ip:port.

    rcpt_reply: dict address -> reply ("550 5.1.1 no such user"), or a function
      address -> reply or None (None = accept). Addresses compare lowercased.
    data_reply: function Txn -> reply or None, applied at the end of DATA.
    delay: seconds to sleep before answering the final dot.
    pipelining: advertise PIPELINING (aiosmtpd itself handles pipelined input).
    """

    def __init__(self, ip, port, rcpt_reply=None, data_reply=None, delay=0.0,
                 pipelining=True, ehlo_ok=True, name=None):
        self.ip, self.port = ip, port
        self.name = name or f"sink-{ip}"
        self.rcpt_reply = rcpt_reply
        self.data_reply = data_reply
        self.delay = delay
        self.pipelining = pipelining
        self.ehlo_ok = ehlo_ok
        self.transactions = []
        self.rejected = []
        self.rcpt_attempts = []
        self.connections = 0          # sessions that sent EHLO/HELO
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()
        self._transports = set()
        self._ctl = None

    # ---- lifecycle -----------------------------------------------------
    def start(self):
        assert self._ctl is None, "sink already running"
        self._ctl = _Controller(self, _Handler(self), hostname=self.ip, port=self.port,
                                server_hostname=self.name, ready_timeout=5,
                                enable_SMTPUTF8=True)
        self._ctl.start()
        return self

    def stop(self):
        """Stops listening and drops every open connection (the hop goes "down")."""
        ctl, self._ctl = self._ctl, None
        if ctl is None:
            return

        def close_all():
            for t in list(self._transports):
                t.abort()
            self._transports.clear()
        try:
            ctl.loop.call_soon_threadsafe(close_all)
            time.sleep(0.05)
        except RuntimeError:
            pass
        ctl.stop()

    @property
    def running(self):
        return self._ctl is not None

    @property
    def addr(self):
        return f"{self.ip}:{self.port}"

    # ---- bookkeeping (called on the sink's loop) -------------------------
    def _session_begin(self, proto):
        with self._lock:
            if proto._conn_no is None:
                self.connections += 1
                proto._conn_no = self.connections
            if not proto._active:
                proto._active = True
                self.active += 1
                self.max_active = max(self.max_active, self.active)

    def _session_end(self, proto):
        with self._lock:
            if proto._active:
                proto._active = False
                self.active -= 1

    def _rcpt_reply(self, address):
        r = self.rcpt_reply
        if r is None:
            return None
        if callable(r):
            return r(address)
        return r.get(address.lower())

    # ---- queries -------------------------------------------------------
    def messages(self):
        with self._lock:
            return list(self.transactions)

    def find(self, message_id):
        """Transactions carrying the Message-ID (with or without angle brackets)."""
        mid = message_id.strip("<>")
        return [t for t in self.messages() if (t.message_id or "").strip("<>") == mid]

    def for_rcpt(self, rcpt):
        return [t for t in self.messages() if rcpt.lower() in [r.lower() for r in t.rcpt_tos]]

    def wait_message(self, message_id, timeout=15):
        """The (first) transaction with this Message-ID, waiting for it."""
        from harness import wait_for
        wait_for(lambda: self.find(message_id), timeout,
                 f"message {message_id} at {self.name} ({self.addr}); "
                 f"it has {self.messages()!r}")
        return self.find(message_id)[0]

    def wait_count(self, n, timeout=15):
        from harness import wait_for
        wait_for(lambda: len(self.messages()) >= n, timeout,
                 f"{n} transactions at {self.name}; it has {len(self.messages())}")
        return self.messages()

    def __repr__(self):
        return f"Sink({self.name} {self.addr}, {len(self.transactions)} txns)"


class RawSink:
    """A socket server on ip:port that runs one behaviour per connection.

    behaviour: "greet421" (421 greeting, then close), "junk" (binary junk instead of a
    greeting), "junk_ehlo" (good greeting, junk as the EHLO reply), "hang" (accept,
    never say anything), "close" (close right after accept), "hang_data" (a normal
    session that never answers the final dot), or a function script(sock, sink).
    """

    def __init__(self, ip, port, behaviour, name=None):
        self.ip, self.port = ip, port
        self.behaviour = behaviour
        self.name = name or f"raw-{behaviour if isinstance(behaviour, str) else 'script'}-{ip}"
        self.connections = 0
        self.received = []            # bytes received per connection
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._socks = []
        self._srv = None
        self._thread = None

    @property
    def addr(self):
        return f"{self.ip}:{self.port}"

    def start(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.ip, self.port))
        s.listen(64)
        s.settimeout(0.2)
        self._srv = s
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        if self._thread:
            self._thread.join(2)
        if self._srv:
            self._srv.close()
            self._srv = None
        with self._lock:
            for c in self._socks:
                try:
                    c.close()
                except OSError:
                    pass
            self._socks.clear()

    def _accept_loop(self):
        while not self._stop.is_set():
            try:
                conn, _ = self._srv.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self._lock:
                self.connections += 1
                self._socks.append(conn)
                idx = len(self.received)
                self.received.append(b"")
            threading.Thread(target=self._run, args=(conn, idx), daemon=True).start()

    def _recv_line(self, conn, idx):
        buf = b""
        while not self._stop.is_set() and not buf.endswith(b"\n"):
            try:
                c = conn.recv(1)
            except socket.timeout:
                continue
            if not c:
                return None
            buf += c
        with self._lock:
            self.received[idx] += buf
        return buf

    def _hold(self, conn, idx):
        """Keeps the connection open, reading and discarding, until stopped or closed."""
        while not self._stop.is_set():
            try:
                c = conn.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            if not c:
                return
            with self._lock:
                self.received[idx] += c

    def _run(self, conn, idx):
        conn.settimeout(0.2)
        b = self.behaviour
        try:
            if callable(b):
                b(conn, self)
            elif b == "greet421":
                conn.sendall(b"421 4.3.2 " + self.name.encode() + b" busy, try later\r\n")
                time.sleep(0.2)
            elif b == "junk":
                conn.sendall(b"\x00\xff\xfeHELLO?? \x1b[31m garbage \x07\r\n\x80\x81 zz\r\n")
                self._hold(conn, idx)
            elif b == "junk_ehlo":
                conn.sendall(b"220 " + self.name.encode() + b" ESMTP\r\n")
                if self._recv_line(conn, idx) is None:
                    return
                conn.sendall(b"2x0-what\r\n\x00\x01\x02 not smtp\r\n999 nope\r\n")
                self._hold(conn, idx)
            elif b == "hang":
                self._hold(conn, idx)
            elif b == "close":
                pass
            elif b == "hang_data":
                conn.sendall(b"220 " + self.name.encode() + b" ESMTP\r\n")
                while True:
                    line = self._recv_line(conn, idx)
                    if line is None:
                        return
                    verb = line[:4].upper()
                    if verb in (b"EHLO", b"HELO"):
                        conn.sendall(b"250-" + self.name.encode() + b"\r\n250 8BITMIME\r\n")
                    elif verb == b"DATA":
                        conn.sendall(b"354 go ahead\r\n")
                        self._hold(conn, idx)
                        return
                    elif verb == b"QUIT":
                        conn.sendall(b"221 bye\r\n")
                        return
                    else:
                        conn.sendall(b"250 OK\r\n")
            else:
                raise ValueError(f"unknown behaviour {b!r}")
        except OSError:
            pass
        finally:
            try:
                conn.close()
            except OSError:
                pass
