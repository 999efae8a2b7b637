"""SMTP smuggling (CVE-2023-51764/51765/51766 class) and STARTTLS command injection
(CVE-2011-0411 class), issue 10 "Hostile network".

Inbound: `<LF>.<LF>`, `<LF>.<CR><LF>`, `<CR>.<CR>` and friends inside DATA never end
the message, and the SMTP commands after them never become a second transaction.
Outbound: a next hop that records the raw bytes of the session sees one transaction
per message, CRLF line ends only (no bare CR or LF), and every content line starting
with "." stuffed, so no receiver, however lax, can find an end marker in it.
STARTTLS outbound: a plaintext reply pipelined behind the next hop's "220" is
discarded, never read as the reply to the EHLO sent inside TLS.
(Inbound STARTTLS injection: test_tls.py::test_commands_pipelined_after_starttls_are_discarded.)
"""

import re
import socket
import ssl
import threading
import time

import pytest

from certs import PKI
from harness import make_message, wait_for
from tcpserver import ThreadedTCPServer

SMUGGLE_ENDS = [
    b"\n.\n", b"\n.\r\n", b"\r.\r", b"\r.\r\n", b"\r\n.\n", b"\r\n.\r", b"\n.\r",
    b"\r\n.\r\r\n", b"\r\n.\n\r\n", b"\r\n\r.\r\n", b"\r\n.\x00\r\n",
]


class RecordingHop(ThreadedTCPServer):
    """A next hop on ip:port speaking just enough SMTP, recording the raw bytes of
    each session, the MAIL commands and the raw DATA payloads (up to the first
    exact CRLF.CRLF). Optional STARTTLS with a pipelined injected reply."""

    def __init__(self, ip, port, tls_ctx=None, inject=b""):
        super().__init__(ip, port, 16)
        self.tls_ctx, self.inject = tls_ctx, inject
        self.sessions = []            # raw bytes per connection
        self.mails = []               # MAIL FROM lines seen in command mode
        self.payloads = []            # raw bytes between "354" and CRLF.CRLF
        self.premature = []           # bytes sent by the client before our EHLO reply in TLS
        self.errors = []
        self._lock = threading.Lock()

    def _session(self, sock):
        idx = None
        with self._lock:
            idx = len(self.sessions)
            self.sessions.append(b"")
        buf = b""
        tls = False

        def rec(b):
            with self._lock:
                self.sessions[idx] += b

        def fill():
            nonlocal buf
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError
            rec(chunk)
            buf += chunk

        def line():
            nonlocal buf
            while b"\n" not in buf:
                fill()
            ln, _, buf = buf.partition(b"\n")
            return ln + b"\n"

        try:
            sock.settimeout(20)
            sock.sendall(b"220 hop.test ESMTP\r\n")
            while True:
                ln = line()
                verb = ln[:4].upper()
                if verb == b"EHLO":
                    if tls:
                        # Anything the client sends before our reply is a command it
                        # sent on the strength of an injected reply.
                        time.sleep(0.8)
                        sock.settimeout(0.05)
                        try:
                            fill()
                        except (socket.timeout, ssl.SSLWantReadError):
                            pass
                        sock.settimeout(20)
                        if buf:
                            with self._lock:
                                self.premature.append(buf)
                    ext = b"250-STARTTLS\r\n" if self.tls_ctx and not tls else b""
                    sock.sendall(b"250-hop.test\r\n" + ext + b"250 8BITMIME\r\n")
                elif verb == b"HELO":
                    sock.sendall(b"250 hop.test\r\n")
                elif verb == b"STAR" and self.tls_ctx and not tls:
                    sock.sendall(b"220 2.0.0 go ahead\r\n" + self.inject)
                    sock = self.tls_ctx.wrap_socket(sock, server_side=True)
                    buf = b""
                    tls = True
                elif verb == b"MAIL":
                    with self._lock:
                        self.mails.append(ln)
                    sock.sendall(b"250 2.1.0 ok\r\n")
                elif verb == b"RCPT":
                    sock.sendall(b"250 2.1.5 ok\r\n")
                elif verb == b"DATA":
                    sock.sendall(b"354 go\r\n")
                    while b"\r\n.\r\n" not in b"\r\n" + buf:
                        fill()
                    data = b"\r\n" + buf
                    end = data.index(b"\r\n.\r\n")
                    payload, buf = data[2:end + 2], data[end + 5:]
                    with self._lock:
                        self.payloads.append(payload)
                    sock.sendall(b"250 2.0.0 queued\r\n")
                elif verb == b"QUIT":
                    sock.sendall(b"221 bye\r\n")
                    return
                elif verb in (b"RSET", b"NOOP"):
                    sock.sendall(b"250 ok\r\n")
                else:
                    sock.sendall(b"500 5.5.1 what\r\n")
        except (ConnectionError, OSError, ssl.SSLError) as e:
            if not isinstance(e, ConnectionError):
                with self._lock:
                    self.errors.append(repr(e))
        finally:
            try:
                sock.close()
            except OSError:
                pass


@pytest.fixture
def hop(world):
    hops = []

    def make(domain="dest.test", **kw):
        ip = world.new_ip()
        world.dns.add_mx(domain, f"mx.{domain}", 10)
        world.dns.add_a(f"mx.{domain}", ip)
        h = RecordingHop(ip, world.mx_port, **kw).start()
        hops.append(h)
        return h
    yield make
    for h in hops:
        h.stop()


def assert_clean_wire(payload):
    """CRLF only, and no line that a lax receiver could take for the end of data."""
    assert b"\r\n.\r\n" not in b"\r\n" + payload, payload
    stripped = payload.replace(b"\r\n", b"")
    assert b"\r" not in stripped and b"\n" not in stripped, \
        f"bare CR or LF on the wire: {payload!r}"
    for ln in payload.split(b"\r\n"):
        assert not ln.startswith(b".") or ln.startswith(b".."), f"unstuffed dot line {ln!r}"


def smuggle_session(p, end, n):
    """One session: a message whose body holds `end` + a smuggled transaction, ended
    properly; returns (replies after DATA content, msgid)."""
    mid = f"<smuggle-{n}-{time.time_ns()}@sender.test>"
    c = p.raw()
    with c:
        assert c.cmd("EHLO client.test")[0] == 250
        assert c.cmd("MAIL FROM:<alice@sender.test>")[0] == 250
        assert c.cmd("RCPT TO:<bob@dest.test>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        c.send(b"From: <alice@sender.test>\r\nTo: <bob@dest.test>\r\nSubject: smuggling\r\n"
               b"Message-ID: " + mid.encode() + b"\r\n\r\nfirst part" + end +
               b"MAIL FROM:<evil@sender.test>\r\nRCPT TO:<victim@dest.test>\r\nDATA\r\n"
               b"From: <evil@sender.test>\r\nSubject: smuggled\r\n\r\nsmuggled body" + end +
               b"tail\r\n.\r\n")
        code, text = c.reply(timeout=15)
        assert code == 250, (end, code, text)
        # Nothing else answered: the smuggled commands were content.
        c.sock.settimeout(0.5)
        try:
            extra = c.sock.recv(4096)
        except socket.timeout:
            extra = b""
        assert extra == b"", f"{end!r}: extra replies {extra!r} (smuggled commands ran)"
        assert c.cmd("QUIT", timeout=10)[0] == 221
    return mid


def test_smuggling_variants_never_end_data(world, hop):
    h = hop()
    p = world.petrel()
    mids = [smuggle_session(p, end, i) for i, end in enumerate(SMUGGLE_ENDS)]
    wait_for(lambda: len(h.payloads) >= len(mids), 30, "deliveries at the recording hop")
    time.sleep(1)
    assert len(h.mails) == len(mids), \
        f"{len(h.mails)} MAIL commands for {len(mids)} messages: {h.mails}"
    assert not any(b"evil" in m for m in h.mails), h.mails
    assert len(h.payloads) == len(mids)
    for payload in h.payloads:
        assert_clean_wire(payload)
        assert b"MAIL FROM:<evil@sender.test>" in payload, "the smuggled text is content"
        assert b"tail" in payload, "the message was cut short"
    got = {re.search(rb"Message-ID: (<[^>]+>)", pl).group(1).decode() for pl in h.payloads}
    assert got == set(mids)
    assert not p.records("Reception", sender="evil@sender.test")
    assert h.errors == []


def test_outbound_dot_stuffing_and_crlf(world, hop):
    """Content with dots at line starts, bare LF and bare CR (taken over HTTP, where
    lines may end with LF) goes out CRLF-only and stuffed; the hop, unstuffing,
    gets the lines back."""
    h = hop()
    p = world.petrel()
    body = (".\r\n..\r\n.leading dot\r\nbare lf\n.\nbare cr\r.\rmixed\r\r\n. \r\nend\r\n")
    data = make_message("alice@sender.test", ["bob@dest.test"], subject="dots",
                        body=body.encode())
    p.send("alice@sender.test", ["bob@dest.test"], data)
    wait_for(lambda: h.payloads, 30, "delivery")
    payload = h.payloads[0]
    assert_clean_wire(payload)
    unstuffed = b"\r\n".join(ln[1:] if ln.startswith(b".") else ln
                             for ln in payload.split(b"\r\n"))
    for want in (b"\r\n.\r\n..\r\n.leading dot\r\n", b"bare lf\r\n.\r\nbare cr\r\n.\r\n",
                 b"mixed\r\n\r\n. \r\nend\r\n"):
        assert want in unstuffed, (want, unstuffed)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return PKI(tmp_path_factory.mktemp("pki"))


def test_outbound_starttls_injection_discarded(world, hop, pki):
    """The hop answers STARTTLS with "220" and, in the same packet, a fake EHLO reply
    (CVE-2011-0411 against the client). petrel must wait for the real reply inside
    TLS: it sends nothing after EHLO until the hop answers."""
    cert, key = pki.leaf("mx.dest.test")
    h = hop(tls_ctx=pki.server_context(cert, key),
            inject=b"250-injected.test\r\n250 8BITMIME\r\n250 2.1.0 fake MAIL ok\r\n")
    p = world.petrel()
    mid = p.send_message(to=["bob@dest.test"])
    wait_for(lambda: h.payloads, 30, "delivery over TLS")
    assert h.premature == [], f"petrel acted on an injected reply: {h.premature!r}"
    assert any(mid.encode() in pl for pl in h.payloads)
    rec = p.wait_record("Delivery", recipient="bob@dest.test")
    assert rec["tls"], rec
