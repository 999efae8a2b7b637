"""MTA-STS (RFC 8461) outbound: the `_mta-sts` TXT record from the fake DNS, the
policy served by a real HTTPS server (Python http.server + ssl, certificate from the
test CA that petrel's ca_file trusts) on 127.0.2.N:443, where the fake DNS points
mta-sts.DOMAIN. Issue 11 "Outbound policy", "Bad input"; DESIGN §12.

enforce + matching MX delivers over verified TLS; enforce + MX not in the policy
defers (never plaintext); enforce + bad certificate defers; testing mode delivers;
a policy that is not valid, too large, served over plain HTTP or by a redirect is no
policy; the policy is cached in the spool across restarts.
"""

import http.server
import os
import ssl
import threading

import pytest

from certs import PKI
from harness import make_message, msgid_of
from tls_sinks import tls_mx_domain

POLICY_PATH = "/.well-known/mta-sts.txt"
_next = [20]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return PKI(tmp_path_factory.mktemp("pki-sts"))


class PolicyServer:
    """An HTTP(S) server on ip:443 answering every GET with (status, ctype, body,
    headers) of self.reply; counts requests."""

    def __init__(self, ip, ctx=None):
        self.ip = ip
        self.reply = (404, "text/plain", b"", {})
        self.requests = []
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests.append((self.path, self.headers.get("Host")))
                status, ctype, body, extra = outer.reply
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in extra.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer((ip, 443), H)
        if ctx is not None:
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def serve(self, body, status=200, ctype="text/plain", headers=None):
        self.reply = (status, ctype, body.encode() if isinstance(body, str) else body,
                      headers or {})

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def sts(world, pki):
    """Makes a policy host for a domain: fake DNS TXT + A of mta-sts.DOMAIN and an
    HTTPS server with a CA certificate for it (tls=False: plain HTTP on 443)."""
    servers = []

    def make(domain, txt_id="1", tls=True):
        _next[0] += 1
        ip = f"127.0.2.{_next[0]}"
        ctx = None
        if tls:
            cert, key = pki.leaf(f"mta-sts.{domain}")
            ctx = pki.server_context(cert, key)
        srv = PolicyServer(ip, ctx)
        servers.append(srv)
        world.dns.set_txt(f"_mta-sts.{domain}", f"v=STSv1; id={txt_id};")
        world.dns.add_a(f"mta-sts.{domain}", ip)
        return srv
    yield make
    for s in servers:
        s.stop()


def policy(mode, *mx, max_age=86400):
    lines = ["version: STSv1", f"mode: {mode}"] + [f"mx: {m}" for m in mx] + \
            [f"max_age: {max_age}"]
    return "\r\n".join(lines) + "\r\n"


def send(p, rcpt):
    data = make_message("alice@sender.test", [rcpt], subject=f"sts to {rcpt}")
    p.send("alice@sender.test", [rcpt], data)
    return msgid_of(data)


def petrel(world, pki):
    world.mx_domain("sender.test", "127.0.0.3")
    return world.petrel(delivery={"ca_file": pki.ca_file})


def assert_deferred(p, sink, rcpt, word, n=2):
    recs = p.wait_records("TransientFailure", n, timeout=30, recipient=rcpt)
    assert any(word.lower() in (r["response"] or "").lower() for r in recs), \
        [r["response"] for r in recs]
    assert not p.records("Delivery", recipient=rcpt)
    assert not sink.for_rcpt(rcpt), "delivered despite the MTA-STS policy"
    return recs


def test_enforce_matching_mx_delivers_over_verified_tls(world, pki, sts):
    srv = sts("dest.test", "abc1")
    srv.serve(policy("enforce", "*.dest.test"))
    cert, key = pki.leaf("mx.dest.test")
    dest = tls_mx_domain(world, "dest.test", tls_context=pki.server_context(cert, key))
    p = petrel(world, pki)
    mid = send(p, "ok@dest.test")
    t = dest.wait_message(mid, timeout=20)
    assert t.tls is not None, "delivered in clear under an enforce policy"
    assert srv.requests and srv.requests[0][0] == POLICY_PATH
    assert srv.requests[0][1].split(":")[0] == "mta-sts.dest.test"
    cache = os.path.join(p.workdir, "spool", "mta-sts", "dest.test")
    assert os.path.exists(cache), "policy not cached in the spool"
    with open(cache) as f:
        head = f.readline()
    assert "id=abc1" in head


def test_enforce_mx_not_in_policy_defers(world, pki, sts):
    srv = sts("dest.test")
    srv.serve(policy("enforce", "mx.other.test"))
    cert, key = pki.leaf("mx.dest.test")
    dest = tls_mx_domain(world, "dest.test", tls_context=pki.server_context(cert, key))
    p = petrel(world, pki)
    send(p, "nomatch@dest.test")
    recs = assert_deferred(p, dest, "nomatch@dest.test", "MTA-STS")
    assert recs[0]["code"] == 451


def test_enforce_bad_certificate_defers_never_plaintext(world, pki, sts):
    srv = sts("dest.test")
    srv.serve(policy("enforce", "mx.dest.test"))
    cert, key = pki.self_signed("mx.dest.test")          # not from the trusted CA
    dest = tls_mx_domain(world, "dest.test", tls_context=pki.server_context(cert, key))
    p = petrel(world, pki)
    send(p, "badcert@dest.test")
    assert_deferred(p, dest, "badcert@dest.test", "verif")


def test_enforce_without_starttls_defers(world, pki, sts):
    srv = sts("dest.test")
    srv.serve(policy("enforce", "mx.dest.test"))
    dest = world.mx_domain("dest.test", "127.0.0.2")     # plain sink, no STARTTLS
    p = petrel(world, pki)
    send(p, "plain@dest.test")
    assert_deferred(p, dest, "plain@dest.test", "STARTTLS")


def test_testing_mode_delivers_and_reports(world, pki, sts):
    srv = sts("dest.test")
    srv.serve(policy("testing", "mx.other.test"))
    dest = world.mx_domain("dest.test", "127.0.0.2")     # not in the policy, no TLS
    p = petrel(world, pki)
    mid = send(p, "testing@dest.test")
    dest.wait_message(mid, timeout=20)
    assert srv.requests, "the policy was never fetched"
    assert "does not match the policy" in p.stderr_text()


def _no_policy_case(world, pki, sts, setup):
    """The policy host misbehaves per setup(srv); the MX is a plain sink that an
    enforce policy would refuse: delivered = no policy was applied."""
    srv = setup()
    dest = world.mx_domain("dest.test", "127.0.0.2")
    p = petrel(world, pki)
    mid = send(p, "nopolicy@dest.test")
    dest.wait_message(mid, timeout=20)
    assert not os.path.exists(os.path.join(p.workdir, "spool", "mta-sts", "dest.test"))
    return p, srv


def test_invalid_policy_is_no_policy(world, pki, sts):
    def setup():
        srv = sts("dest.test")
        srv.serve("version: STSv1\r\nmode: enforce\r\nmx: mx.dest.test\r\n")  # no max_age
        return srv
    p, srv = _no_policy_case(world, pki, sts, setup)
    assert srv.requests
    assert "not valid" in p.stderr_text()


def test_too_large_policy_is_no_policy(world, pki, sts):
    def setup():
        srv = sts("dest.test")
        big = policy("enforce", "mx.dest.test") + "".join(
            f"ext{i}: {'x' * 200}\r\n" for i in range(400))
        assert len(big) > 64 * 1024
        srv.serve(big)
        return srv
    p, srv = _no_policy_case(world, pki, sts, setup)
    assert "larger than" in p.stderr_text()


def test_plain_http_policy_is_no_policy(world, pki, sts):
    def setup():
        srv = sts("dest.test", tls=False)
        srv.serve(policy("enforce", "mx.dest.test"))
        return srv
    _no_policy_case(world, pki, sts, setup)


def test_redirect_not_followed(world, pki, sts):
    def setup():
        srv = sts("dest.test")
        srv.serve("", status=301, headers={"Location": "https://mta-sts.dest.test/x"})
        return srv
    p, srv = _no_policy_case(world, pki, sts, setup)
    assert len(srv.requests) >= 1 and all(r[0] == POLICY_PATH for r in srv.requests)


def test_wrong_media_type_is_no_policy(world, pki, sts):
    def setup():
        srv = sts("dest.test")
        srv.serve(policy("enforce", "mx.dest.test"), ctype="text/html")
        return srv
    _no_policy_case(world, pki, sts, setup)


def test_no_txt_record_no_fetch(world, pki):
    dest = world.mx_domain("dest.test", "127.0.0.2")
    p = petrel(world, pki)
    mid = send(p, "notxt@dest.test")
    dest.wait_message(mid, timeout=20)
    assert world.dns.queried("_mta-sts.dest.test", "TXT")
    assert not world.dns.queried("mta-sts.dest.test")


def test_mta_sts_false_skips_lookup(world, pki):
    dest = world.mx_domain("dest.test", "127.0.0.2")
    world.mx_domain("sender.test", "127.0.0.3")
    p = world.petrel(delivery={"mta_sts": False})
    mid = send(p, "off@dest.test")
    dest.wait_message(mid, timeout=20)
    assert not world.dns.queried("_mta-sts.dest.test")


def test_cached_policy_survives_restart(world, pki, sts):
    srv = sts("dest.test", "keep1")
    srv.serve(policy("enforce", "mx.dest.test"))
    dest = world.mx_domain("dest.test", "127.0.0.2")     # plain: enforce defers
    p = petrel(world, pki)
    send(p, "cached@dest.test")
    assert_deferred(p, dest, "cached@dest.test", "STARTTLS", n=1)
    p.stop()
    srv.stop()                                           # the policy host is gone
    n_before = len(srv.requests)
    p.start()
    send(p, "cached2@dest.test")
    assert_deferred(p, dest, "cached2@dest.test", "STARTTLS", n=1)
    assert len(srv.requests) == n_before


def test_hanging_policy_host_neither_blocks_delivery_loop_nor_shutdown(world, pki):
    """A policy host that accepts and never answers: the fetch runs on a worker (the
    relay keeps accepting and delivering other mail meanwhile) and SIGTERM still
    stops petrel promptly."""
    import socket
    import time
    _next[0] += 1
    ip = f"127.0.2.{_next[0]}"
    hang = socket.socket()
    hang.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    hang.bind((ip, 443))
    hang.listen(8)
    try:
        world.dns.set_txt("_mta-sts.slow.test", "v=STSv1; id=1;")
        world.dns.add_a("mta-sts.slow.test", ip)
        world.mx_domain("slow.test", "127.0.0.4")
        other = world.mx_domain("dest.test", "127.0.0.2")
        p = petrel(world, pki)
        send(p, "a@slow.test")
        hang.settimeout(10)
        conn, _ = hang.accept()                      # the fetch is in flight
        mid = send(p, "b@dest.test")
        other.wait_message(mid, timeout=10)
        t0 = time.monotonic()
        p.stop()
        assert time.monotonic() - t0 < 8
        conn.close()
    finally:
        hang.close()
