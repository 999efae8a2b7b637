"""PROXY protocol on SMTP listeners (DESIGN §4, §11): the header's source address is
the client address for relay_hosts, per-IP limits, logs, hooks and Received:; a
peer outside proxy_trusted_hosts or a missing/malformed header is dropped with a
log line. Direct tests speak the header from Python; the HAProxy tests put Debian's
real haproxy (private config, loopback, stopped by pid) in front of two nodes."""

import os
import shutil
import signal
import smtplib
import socket
import struct
import subprocess
import time

import pytest

from harness import RawSMTP, Lua, free_port, make_message, msgid_of, wait_for

HOOK = Lua('petrel.on("smtp_message_received", function(domain, meta)\n'
           '  petrel.add_header("X-Client-IP", meta.client_ip)\nend)')


def proxy_listener(port, **kw):
    lst = {"listen": f"127.0.0.1:{port}", "proxy_protocol": True,
           "proxy_trusted_hosts": ["127.0.0.1/32"], "relay_hosts": ["127.0.0.3/32"],
           "greeting_timeout": "3s"}
    lst.update(kw)
    return lst


def v1(src, dst="127.0.0.1", sport=40000, dport=25):
    return f"PROXY TCP4 {src} {dst} {sport} {dport}\r\n".encode()


def v2(src, dst="127.0.0.1", sport=40000, dport=25, local=False, tlv=b""):
    sig = b"\r\n\r\n\x00\r\nQUIT\n"
    if local:
        return sig + bytes([0x20, 0x00]) + struct.pack("!H", 0)
    addr = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)
    body = addr + tlv
    return sig + bytes([0x21, 0x11]) + struct.pack("!H", len(body)) + body


def connect(p, header, source="127.0.0.1"):
    c = RawSMTP.__new__(RawSMTP)
    c.sock = socket.create_connection((p.host, p.port), timeout=10, source_address=(source, 0))
    c.buf = b""
    c.closed = False
    if header:
        c.send(header)
    return c


def relay_one(c, rcpt="bob@dest.test", data=None):
    assert c.reply()[0] == 220
    assert c.cmd("EHLO client.test")[0] == 250
    assert c.cmd("MAIL FROM:<alice@sender.test>")[0] == 250
    return c.cmd(f"RCPT TO:<{rcpt}>")


def new_stderr(p, since):
    return p.stderr_text()[since:]


def test_v1_and_v2_source_is_the_client(world):
    dest = world.mx_domain("dest.test", "127.0.0.2")
    port = free_port()
    p = world.petrel(listener=proxy_listener(port), extra=HOOK)
    for hdr in (v1("127.0.0.3", sport=1111), v2("127.0.0.3", sport=2222, tlv=b"\x04\x00\x03abc")):
        with connect(p, hdr) as c:
            code, text = relay_one(c)
            assert code == 250, text
            data = make_message("alice@sender.test", ["bob@dest.test"])
            assert c.cmd("DATA")[0] == 354
            c.send(data + b"\r\n.\r\n")
            assert c.reply()[0] == 250
            c.cmd("QUIT")
        t = dest.wait_message(msgid_of(data))
        assert "[127.0.0.3]" in t.header("Received"), t.header("Received")
        assert t.header("X-Client-IP") == "127.0.0.3"
    recs = p.wait_records("Reception", 2)
    assert {r["peer_address"] for r in recs} == {"127.0.0.3"}
    # the load balancer's own address is not enough to relay: relay_hosts judge the client
    for hdr in (v1("127.0.0.2"), v2("127.0.0.2")):
        with connect(p, hdr) as c:
            code, text = relay_one(c)
            assert code == 554, text
    rej = p.wait_records("Rejection", 2)
    assert {r["peer_address"] for r in rej} == {"127.0.0.2"}


def test_untrusted_missing_malformed_and_slow_are_dropped(world):
    port = free_port(("127.0.0.1", "127.0.0.2"))
    p = world.petrel(listener=proxy_listener(port, listen=f"0.0.0.0:{port}"))
    since = len(p.stderr_text())
    # a peer outside proxy_trusted_hosts, even with a valid header
    with connect(p, v1("127.0.0.3"), source="127.0.0.2") as c:
        assert c.wait_closed(5)
        assert b"220" not in c.buf
    # no header: a client speaking SMTP straight away
    with connect(p, b"EHLO client.test\r\n") as c:
        assert c.wait_closed(5)
        assert b"220" not in c.buf
    for bad in (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", b"PROXY TCP4 999.1.1.1 1.1.1.1 1 2\r\n",
                b"\r\n\r\n\x00\r\nQUIT\n\x22\x11\x00\x0c" + b"\x00" * 12,
                b"PROXY UNKNOWN " + b"x" * 200):
        with connect(p, bad) as c:
            assert c.wait_closed(5), bad
            assert b"220" not in c.buf
    # a header that never comes: closed at greeting_timeout
    t0 = time.monotonic()
    with connect(p, b"PROXY TCP4 ") as c:
        assert c.wait_closed(10)
        assert time.monotonic() - t0 >= 2.5
    # the log thread writes the timeout's line just after the close: wait for it
    wait_for(lambda: "no PROXY header within" in new_stderr(p, since), 10, "the timeout line")
    err = new_stderr(p, since)
    assert "refused: peer not in proxy_trusted_hosts" in err and "127.0.0.2" in err, err
    assert err.count("malformed or missing PROXY header") >= 4, err
    assert "PROXY header too long" in err, err
    assert "no PROXY header within 3 s" in err, err
    # still serving a proper client
    with connect(p, v2("127.0.0.3")) as c:
        assert relay_one(c, rcpt="x@example.com")[0] == 250


def test_per_ip_limit_and_health_check_local(world):
    port = free_port()
    p = world.petrel(listener=proxy_listener(port, max_connections_per_ip=1),
                     logging={"level": "info"})
    since = len(p.stderr_text())
    a = connect(p, v1("192.0.2.1"))
    assert a.reply()[0] == 220
    b = connect(p, v2("192.0.2.1"))           # same client behind the balancer: over limit
    code, text = b.reply()
    assert code == 421 and "per" in text.lower(), text
    c = connect(p, v2("192.0.2.2"))           # another client through the same balancer
    assert c.reply()[0] == 220
    for x in (a, b, c):
        x.close()
    # HAProxy-style checks: connect and leave, or LOCAL then leave: no log lines
    for _ in range(5):
        s = socket.create_connection((p.host, p.port), timeout=5)
        s.close()
        with connect(p, v2("0.0.0.0", local=True)) as d:
            assert d.reply()[0] == 220
    time.sleep(0.5)
    err = new_stderr(p, since)
    assert "127.0.0.1" not in err, err


def test_check_requires_trusted_hosts(world, tmp_path):
    from harness import run_petrel
    cfg = tmp_path / "p.lua"
    cfg.write_text('petrel.start_smtp_listener {\n  listen = "127.0.0.1:2525",\n'
                   '  proxy_protocol = true,\n}\n')
    r = run_petrel("--check", "-c", str(cfg))
    r.stderr, r.stdout = r.stderr.decode(), r.stdout.decode()
    assert r.returncode == 1
    assert f"{cfg}:1: start_smtp_listener: proxy_protocol = true needs proxy_trusted_hosts" \
        in r.stderr, r.stderr
    cfg.write_text('petrel.start_smtp_listener { listen = "127.0.0.1:2525", '
                   'proxy_protocol = true, proxy_trusted_hosts = { "10.0.0.0/8" } }\n')
    r = run_petrel("--check", "-c", str(cfg))
    r.stderr, r.stdout = r.stderr.decode(), r.stdout.decode()
    assert r.returncode == 0 and "config ok" in r.stdout, r.stderr


# ---------------------------------------------------------------- real HAProxy

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


class HAProxy:
    """Debian's haproxy with the seed's `listen smtp-relay` block plus send-proxy."""

    def __init__(self, workdir, port, servers, send_proxy):
        self.port = port
        self.cfg = os.path.join(workdir, "haproxy.cfg")
        lines = [
            "global", "    maxconn 200",
            "defaults", "    timeout connect 5s", "    timeout client 30s",
            "    timeout server 30s",
            # the seed's block, on loopback
            "listen smtp-relay", f"    bind 127.0.0.1:{port}", "    mode tcp",
            "    balance roundrobin",
        ]
        for i, sport in enumerate(servers, 1):
            lines.append(f"    server petrel{i} 127.0.0.1:{sport} check inter 200ms fall 2 rise 1 "
                         f"{send_proxy}")
        with open(self.cfg, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.log = open(os.path.join(workdir, "haproxy.log"), "wb")
        self.proc = subprocess.Popen([HAPROXY, "-db", "-f", self.cfg], stdout=self.log,
                                     stderr=subprocess.STDOUT)

    def wait_up(self):
        def up():
            assert self.proc.poll() is None, open(self.log.name).read()
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return True
            except OSError:
                return False
        wait_for(up, 10, "haproxy listening")

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.log.close()


@pytest.mark.skipif(not os.path.exists(HAPROXY), reason="haproxy not installed (scripts/deps.sh test)")
@pytest.mark.parametrize("send_proxy", ["send-proxy-v2", "send-proxy"])
def test_haproxy_in_front_of_two_nodes(world, tmp_path, send_proxy):
    dest = world.mx_domain("dest.test", "127.0.0.2")
    nodes = []
    for _ in range(2):
        port = free_port()
        nodes.append(world.petrel(listener=proxy_listener(port), extra=HOOK,
                                  logging={"level": "info"}))
    marks = [len(n.stderr_text()) for n in nodes]
    hport = free_port()
    hp = HAProxy(str(tmp_path), hport, [n.port for n in nodes], send_proxy)
    try:
        hp.wait_up()
        # 127.0.0.2 is outside relay_hosts: refused through HAProxy too
        s = smtplib.SMTP("127.0.0.1", hport, local_hostname="client.test", timeout=10,
                         source_address=("127.0.0.2", 0))
        s.ehlo()
        s.mail("alice@sender.test")
        code, resp = s.rcpt("bob@dest.test")
        assert code == 554, resp
        s.quit()
        # 127.0.0.3 relays; round robin spreads it over both nodes
        ids = []
        for i in range(4):
            s = smtplib.SMTP("127.0.0.1", hport, local_hostname="client.test", timeout=10,
                             source_address=("127.0.0.3", 0))
            data = make_message("alice@sender.test", ["bob@dest.test"], subject=f"via lb {i}")
            s.sendmail("alice@sender.test", ["bob@dest.test"], data)
            s.quit()
            ids.append(msgid_of(data))
        for mid in ids:
            t = dest.wait_message(mid)
            assert "[127.0.0.3]" in t.header("Received")
            assert t.header("X-Client-IP") == "127.0.0.3"
        for n in nodes:
            recs = n.records("Reception")
            assert recs, f"{n.workdir}: round robin sent it nothing"
            assert {r["peer_address"] for r in recs} == {"127.0.0.3"}
        rej = [r for n in nodes for r in n.records("Rejection")]
        assert [r["peer_address"] for r in rej] == ["127.0.0.2"]
        # health checks every 200 ms for a while: no log noise on either node
        time.sleep(2.0)
        for n, m in zip(nodes, marks):
            err = n.stderr_text()[m:]
            assert "PROXY" not in err and "refused" not in err and "timeout" not in err, err
            assert {r["type"] for r in n.records()} <= {"Reception", "Delivery", "Rejection"}
    finally:
        hp.stop()


def test_implicit_tls_behind_proxy_header(world, tmp_path):
    """SMTPS behind a load balancer: the PROXY header comes in clear, then the TLS
    handshake; the ClientHello sent in the same packet as the header must not be lost."""
    import ssl
    from certs import PKI, listener_tls
    pki = PKI(tmp_path / "pki")
    port = free_port()
    p = world.petrel(listener=proxy_listener(port, tls=listener_tls(pki, implicit=True)))
    ctx = pki.client_context(verify=True)
    for together in (True, False):
        raw = socket.create_connection((p.host, p.port), timeout=10)
        inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = ctx.wrap_bio(inc, out, server_hostname="petrel.test")
        try:
            tls.do_handshake()
        except ssl.SSLWantReadError:
            pass
        hello = out.read()
        if together:
            raw.sendall(v2("127.0.0.3") + hello)          # one segment: header + ClientHello
        else:
            raw.sendall(v2("127.0.0.3"))
            time.sleep(0.2)
            raw.sendall(hello)

        def pump_until(fn):
            while True:
                try:
                    return fn()
                except ssl.SSLWantReadError:
                    data = out.read()
                    if data:
                        raw.sendall(data)
                    chunk = raw.recv(65536)
                    assert chunk, "petrel closed the connection"
                    inc.write(chunk)

        pump_until(tls.do_handshake)
        raw.sendall(out.read())
        buf = b""
        while b"\r\n" not in buf:
            buf += pump_until(lambda: tls.read(4096))
        assert buf.startswith(b"220 "), buf
        tls.write(b"EHLO client.test\r\nMAIL FROM:<a@sender.test>\r\nRCPT TO:<b@example.com>\r\n")
        raw.sendall(out.read())
        while buf.count(b"\r\n") < 4 or b"\r\n250 2.1.5" not in buf:
            buf += pump_until(lambda: tls.read(4096))
        assert b"250 2.1.5" in buf, buf                  # 127.0.0.3 relays: header applied
        raw.close()


def test_auth_ban_follows_the_header_address(world, tmp_path):
    import base64
    from harness import PETRELCTL_BIN
    import subprocess as sp
    pw = sp.run([PETRELCTL_BIN, "hash-password"], input=b"right-pw\n", capture_output=True,
                check=True).stdout.decode().strip()
    users = tmp_path / "users.txt"
    users.write_text(f"alice:{pw}\n")
    port = free_port()
    p = world.petrel(listener=proxy_listener(port, auth_mechanisms=["PLAIN"],
                                             auth_require_tls=False),
                     extra=f'petrel.configure_auth {{ users_file = "{users}", max_failures = 2, '
                           f'failure_window = "10m", ban_time = "10m" }}')
    tok = base64.b64encode(b"\0alice\0wrong").decode()
    with connect(p, v2("192.0.2.9")) as c:
        assert c.reply()[0] == 220
        assert c.cmd("EHLO client.test")[0] == 250
        assert c.cmd(f"AUTH PLAIN {tok}")[0] == 535
        code, _ = c.cmd(f"AUTH PLAIN {tok}")
        if code == 535:
            code, _ = c.reply()
        assert code == 421
    with connect(p, v1("192.0.2.9")) as c:          # the same client: banned
        code, text = c.reply()
        assert code == 421 and "authentication failures" in text, text
    with connect(p, v1("192.0.2.10")) as c:         # its neighbour behind the same proxy: not
        assert c.reply()[0] == 220
    p.wait_record("Rejection", peer_address="192.0.2.9")
