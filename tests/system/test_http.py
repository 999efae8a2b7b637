"""HTTP listeners (petrel.start_http_listener): GET /metrics, /healthz, /readyz, the
auth rule (trusted_hosts, else a Bearer key from api_keys), JSON errors (401, 404,
405, 413), HTTPS, bind failures, several listeners. DESIGN §4 start_http_listener,
§5 HTTP API, §7 Metrics.

The metrics are read over HTTP after real traffic: messages relayed through SMTP to
sinks, failed AUTH, an outbound TLS policy failure. Only stdlib HTTP clients.
"""

import http.client
import json
import os
import re
import socket
import ssl
import subprocess
import urllib.parse

import pytest

from certs import PKI, listener_tls
from harness import free_port, lua_value, wait_for

# DESIGN §7: every metric and its type.
METRICS = {
    "petrel_queue_depth": "gauge",
    "petrel_messages_received_total": "counter",
    "petrel_messages_delivered_total": "counter",
    "petrel_messages_deferred_total": "counter",
    "petrel_messages_bounced_total": "counter",
    "petrel_delivery_latency_seconds": "histogram",
    "petrel_smtp_errors_total": "counter",
    "petrel_tls_failures_total": "counter",
    "petrel_auth_failures_total": "counter",
    "petrel_connections": "gauge",
    "petrel_spool_bytes": "gauge",
}
PROM_CTYPE = "text/plain; version=0.0.4"
KEY1 = "k1-Secret-0123456789"
KEY2 = "second.key"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return PKI(tmp_path_factory.mktemp("pki"))


# ---------------------------------------------------------------- helpers

def http_petrel(world, listeners=({},), **cfg):
    """petrel with one start_http_listener per dict in listeners (a missing `listen`
    gets a free port on 127.0.0.1). Returns (petrel, [base URL per listener])."""
    tables, urls = [], []
    for lst in listeners:
        lst = dict(lst)
        lst.setdefault("listen", f"127.0.0.1:{free_port()}")
        urls.append(("https" if lst.get("tls") else "http") + "://" + lst["listen"])
        tables.append("petrel.start_http_listener " + lua_value(lst))
    extra = "\n".join(tables)
    if cfg.get("extra"):
        extra += "\n" + cfg.pop("extra")
    cfg.pop("extra", None)
    return world.petrel(extra=extra, **cfg), urls


class Resp:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name):
        return self.headers.get(name)

    def json(self):
        ctype = self.header("Content-Type") or ""
        assert ctype.startswith("application/json"), \
            f"HTTP {self.status}: Content-Type {ctype!r}, want application/json; body {self.body[:300]!r}"
        return json.loads(self.body)

    def __repr__(self):
        return f"<HTTP {self.status} {dict(self.headers)} {self.body[:300]!r}>"


def request(base, path, method="GET", key=None, headers=None, body=None, ctx=None, timeout=10):
    u = urllib.parse.urlsplit(base)
    if u.scheme == "https":
        conn = http.client.HTTPSConnection(u.hostname, u.port, timeout=timeout, context=ctx)
    else:
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    h = dict(headers or {})
    if key is not None:
        h["Authorization"] = f"Bearer {key}"
    try:
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        return Resp(r.status, r.headers, r.read())
    finally:
        conn.close()


def assert_json_error(r, status):
    assert r.status == status, f"want {status}, got {r}"
    doc = r.json()
    assert isinstance(doc, dict) and isinstance(doc.get("error"), str) and doc["error"], \
        f"error body should be {{\"error\": \"...\"}}: {r}"
    return doc["error"]


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?')


class Metrics:
    """A parsed Prometheus text exposition."""

    def __init__(self, text):
        self.text = text
        self.help, self.type, self.samples = {}, {}, []
        for line in text.split("\n"):
            if not line:
                continue
            if line.startswith("# HELP "):
                name, _, doc = line[7:].partition(" ")
                self.help[name] = doc
            elif line.startswith("# TYPE "):
                name, _, typ = line[7:].partition(" ")
                self.type[name] = typ
            elif line.startswith("#"):
                continue
            else:
                m = _SAMPLE.match(line)
                assert m, f"not a Prometheus sample line: {line!r}"
                labels = {}
                rest = m.group(2) or ""
                pos = 0
                while pos < len(rest):
                    lm = _LABEL.match(rest, pos)
                    assert lm and lm.end() > pos, f"bad labels in {line!r}"
                    labels[lm.group(1)] = lm.group(2)
                    pos = lm.end()
                self.samples.append((m.group(1), labels, float(m.group(3))))

    def value(self, name, **labels):
        """The sample with exactly these labels, or None."""
        for n, lab, v in self.samples:
            if n == name and lab == labels:
                return v
        return None

    def dump(self, name):
        return "\n".join(ln for ln in self.text.split("\n") if name in ln)


def metrics(base, **kw):
    r = request(base, "/metrics", **kw)
    assert r.status == 200, f"/metrics: {r}"
    assert r.header("Content-Type") == PROM_CTYPE, r.header("Content-Type")
    return Metrics(r.body.decode("utf-8"))


def wait_metric(base, name, want, timeout=10, **labels):
    """Waits until the sample reaches `want`, then asserts it is exactly `want`
    (counters updated just after the SMTP reply may lag by a few ms)."""
    last = {}

    def reached():
        m = metrics(base)
        last["m"] = m
        v = m.value(name, **labels)
        return v is not None and v >= want
    wait_for(reached, timeout, lambda: f"{name}{labels} >= {want}; have:\n"
             + last["m"].dump(name))
    v = last["m"].value(name, **labels)
    assert v == want, f"{name}{labels} = {v}, want exactly {want}:\n" + last["m"].dump(name)
    return last["m"]


# ---------------------------------------------------------------- /metrics

def test_metrics_lists_every_metric_at_start(world):
    p, (url,) = http_petrel(world)
    m = metrics(url)
    for name, typ in METRICS.items():
        assert m.help.get(name), f"no # HELP for {name}:\n{m.text}"
        assert m.type.get(name) == typ, f"# TYPE {name} is {m.type.get(name)!r}, want {typ}"
    # Unlabeled metrics show a value from the start; nothing has happened yet.
    assert m.value("petrel_auth_failures_total") == 0
    assert m.value("petrel_delivery_latency_seconds_count") == 0
    assert m.value("petrel_spool_bytes") is not None
    assert m.value("petrel_messages_received_total", listener="test-in") in (None, 0)
    # HEAD answers the same status without a body.
    r = request(url, "/metrics", method="HEAD")
    assert r.status == 200 and r.body == b"", r
    assert f"listening on http://127.0.0.1:{url.rsplit(':', 1)[1]}" in p.stderr_text()
    assert "not built yet" not in p.stderr_text()


def test_metrics_count_a_relayed_message(world):
    dest = world.mx_domain("dest.test", "127.0.0.2")
    other = world.mx_domain("other.test", "127.0.0.3")
    p, (url,) = http_petrel(world)
    mid = p.send_message("alice@sender.test", ["a@dest.test", "b@dest.test", "c@other.test"])
    dest.wait_message(mid)
    other.wait_message(mid)
    p.wait_records("Delivery", 3)
    wait_metric(url, "petrel_messages_received_total", 1, listener="test-in")
    wait_metric(url, "petrel_messages_delivered_total", 2, domain="dest.test")
    m = wait_metric(url, "petrel_messages_delivered_total", 1, domain="other.test")
    assert m.value("petrel_delivery_latency_seconds_count") == 3, m.dump("latency")
    assert m.value("petrel_queue_depth", domain="dest.test") == 0, m.dump("queue_depth")
    assert not m.value("petrel_messages_bounced_total", domain="dest.test")
    assert not m.value("petrel_messages_deferred_total", domain="dest.test")
    assert m.value("petrel_spool_bytes") > 0, m.dump("spool_bytes")
    # A second message moves the counters by exactly one more.
    mid2 = p.send_message("alice@sender.test", ["d@dest.test"])
    dest.wait_message(mid2)
    wait_metric(url, "petrel_messages_received_total", 2, listener="test-in")
    wait_metric(url, "petrel_messages_delivered_total", 3, domain="dest.test")


def test_metrics_connections_gauge(world):
    """petrel_connections counts open SMTP connections: inbound ones while a client is
    connected, outbound ones per destination while a delivery connection is open (it
    stays in the idle pool for about 2 s after the delivery)."""
    dest = world.mx_domain("dest.test", "127.0.0.2")
    p, (url,) = http_petrel(world)

    def equal(want, timeout=10, **labels):
        last = {}

        def reached():
            last["m"] = metrics(url)
            return last["m"].value("petrel_connections", **labels) == want
        wait_for(reached, timeout, lambda: f"petrel_connections{labels} == {want}; have:\n"
                 + last["m"].dump("petrel_connections"))
    clients = [p.smtp() for _ in range(3)]
    equal(3, direction="inbound", domain="")
    for c in clients:
        c.quit()
    equal(0, direction="inbound", domain="")
    mid = p.send_message("alice@sender.test", ["a@dest.test"])
    dest.wait_message(mid)
    equal(1, direction="outbound", domain="dest.test")
    equal(0, timeout=15, direction="outbound", domain="dest.test")


def test_metrics_count_auth_failures(world, pki, tmp_path):
    r = subprocess.run(["openssl", "passwd", "-6", "-stdin"], input=b"Right-pw1\n",
                       capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    users = tmp_path / "users.txt"
    users.write_text("alice:" + r.stdout.decode().strip() + "\n")
    auth = (f'petrel.configure_auth {{ users_file = "{users}", max_failures = 100 }}')
    p, (url,) = http_petrel(world, listener={"tls": listener_tls(pki),
                                             "auth_mechanisms": ["PLAIN"]}, extra=auth)
    import base64

    def plain(user, pw):
        return base64.b64encode(f"\0{user}\0{pw}".encode()).decode()
    c = p.raw()
    with c:
        assert c.cmd("EHLO client.test")[0] == 250
        assert c.cmd("STARTTLS")[0] == 220
        c.sock = pki.client_context(verify=True).wrap_socket(c.sock, server_hostname="127.0.0.1")
        c.sock.settimeout(10)
        assert c.cmd("EHLO client.test")[0] == 250
        for pw in ("wrong1", "wrong2", "right-pw1"):
            code, text = c.cmd("AUTH PLAIN " + plain("alice", pw))
            assert code == 535, (code, text)
        code, text = c.cmd("AUTH PLAIN " + plain("mallory", "x"))
        assert code == 535, (code, text)
        code, text = c.cmd("AUTH PLAIN " + plain("alice", "Right-pw1"))
        assert code == 235, (code, text)
    m = wait_metric(url, "petrel_auth_failures_total", 4)
    errs = m.value("petrel_smtp_errors_total", direction="inbound", code_class="5xx")
    assert errs is not None and errs >= 4, m.dump("smtp_errors")


def test_metrics_count_outbound_tls_failure(world):
    ip = "127.0.0.2"
    world.dns.add_mx("dest.test", "mx.dest.test", 10)
    world.dns.add_a("mx.dest.test", ip)
    plain = world.sink(ip)                      # no STARTTLS, but tls = "encrypt"
    p, (url,) = http_petrel(world, delivery={"tls": "encrypt"})
    m = metrics(url)
    assert not m.value("petrel_tls_failures_total", direction="outbound"), m.dump("tls_failures")
    p.send_message("alice@sender.test", ["enc@dest.test"])
    p.wait_record("TransientFailure", recipient="enc@dest.test")
    wait_for(lambda: (metrics(url).value("petrel_tls_failures_total", direction="outbound")
                      or 0) >= 1, 10, "petrel_tls_failures_total{direction=outbound} >= 1")
    m = metrics(url)
    assert m.value("petrel_messages_deferred_total", domain="dest.test") >= 1, m.dump("deferred")
    assert not m.value("petrel_messages_delivered_total", domain="dest.test")
    assert not plain.messages()


# ---------------------------------------------------------------- health

def test_healthz_and_readyz(world):
    p, (url,) = http_petrel(world)
    r = request(url, "/healthz")
    assert r.status == 200 and r.json() == {"status": "ok"}, r
    r = request(url, "/readyz")
    assert r.status == 200, r
    assert r.json().get("status") == "ready", r
    # The spool directory gone (renamed away): not ready; back: ready again.
    away = p.spool_dir + ".away"
    os.rename(p.spool_dir, away)
    try:
        r = request(url, "/readyz")
        assert "spool" in assert_json_error(r, 503), r
        assert request(url, "/healthz").status == 200
    finally:
        os.rename(away, p.spool_dir)
    assert request(url, "/readyz").status == 200


# ---------------------------------------------------------------- errors

def test_unknown_path_404_and_wrong_method_405_are_json(world):
    p, (url,) = http_petrel(world)
    r = request(url, "/nope")
    assert r.status == 404, r
    assert r.json() == {"error": "no such endpoint: /nope"}, r
    for path in ("/metrics", "/healthz", "/readyz"):
        for method in ("POST", "DELETE", "PUT"):
            r = request(url, path, method=method, body=b"" if method != "DELETE" else None)
            assert_json_error(r, 405)
            allow = [m.strip() for m in (r.header("Allow") or "").split(",")]
            assert "GET" in allow and method not in allow, r
    # Strings from the client are escaped into valid JSON.
    r = request(url, '/x"y\\z%FF')
    assert r.status == 404 and r.json()["error"].startswith('no such endpoint: /x"y\\z'), r


def test_body_over_limit_is_413(world):
    p, (url,) = http_petrel(world)
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    try:
        conn.putrequest("POST", "/metrics")
        conn.putheader("Content-Length", str(2 * 1024 * 1024))
        conn.endheaders()
        r = conn.getresponse()
        assert_json_error(Resp(r.status, r.headers, r.read()), 413)
    finally:
        conn.close()
    assert request(url, "/healthz").status == 200


# ---------------------------------------------------------------- auth

def test_trusted_host_needs_no_key(world):
    """Default trusted_hosts (127.0.0.1, ::1); and a "[::]" listener matching an IPv4
    client (seen as ::ffff:127.0.0.1) against an IPv4 range."""
    port = free_port()
    p, (url, _) = http_petrel(world, [
        {},
        {"listen": f"[::]:{port}", "trusted_hosts": ["127.0.0.0/8"]},
    ])
    for base in (url, f"http://127.0.0.1:{port}"):
        assert request(base, "/metrics").status == 200
        assert request(base, "/healthz").status == 200


def test_untrusted_host_needs_a_bearer_key(world):
    p, (open_url, cidr_url) = http_petrel(world, [
        {"trusted_hosts": [], "api_keys": [KEY1, KEY2]},
        {"trusted_hosts": ["10.0.0.0/8", "::2/128"], "api_keys": [KEY1]},
    ])
    for url in (open_url, cidr_url):
        for path in ("/metrics", "/healthz", "/readyz", "/nope"):
            r = request(url, path)
            assert_json_error(r, 401)
            assert (r.header("WWW-Authenticate") or "").startswith("Bearer"), r
        assert request(url, "/metrics", key=KEY1).status == 200
        assert request(url, "/healthz", key=KEY1).json() == {"status": "ok"}
        assert request(url, "/nope", key=KEY1).status == 404   # auth first, then routing
        for wrong in ("wrong", KEY1[:-1], KEY1 + "x", KEY1.upper(), ""):
            assert_json_error(request(url, "/metrics", key=wrong), 401)
        assert_json_error(request(url, "/metrics", headers={"Authorization": KEY1}), 401)
        assert_json_error(request(url, "/metrics", headers={"Authorization": "Basic " + KEY1}), 401)
    assert request(open_url, "/metrics", key=KEY2).status == 200
    assert_json_error(request(cidr_url, "/metrics", key=KEY2), 401)   # not this listener's key
    # The scheme is case-insensitive (RFC 7235).
    assert request(open_url, "/healthz", headers={"Authorization": "bearer " + KEY2}).status == 200


# ---------------------------------------------------------------- listeners

def test_https_listener(world, pki):
    p, (url,) = http_petrel(world, [{"tls": listener_tls(pki), "trusted_hosts": [],
                                     "api_keys": [KEY1]}])
    assert url.startswith("https://")
    ctx = pki.client_context(verify=True)
    r = request(url, "/healthz", key=KEY1, ctx=ctx)
    assert r.status == 200 and r.json() == {"status": "ok"}, r
    assert request(url, "/metrics", key=KEY1, ctx=ctx).status == 200
    assert_json_error(request(url, "/metrics", ctx=ctx), 401)
    # Plain HTTP to the HTTPS port gets no HTTP answer.
    plain = url.replace("https://", "http://")
    try:
        r = request(plain, "/healthz", key=KEY1, timeout=5)
    except (http.client.HTTPException, OSError):
        r = None
    assert r is None or r.status != 200, f"plain HTTP on the HTTPS port answered {r}"
    assert f"listening on {url}" in p.stderr_text()


def test_https_min_tls_version(world, pki):
    p, (url,) = http_petrel(world, [{"tls": listener_tls(pki, min_tls_version="1.3")}])
    ok = request(url, "/healthz", ctx=pki.client_context(verify=True))
    assert ok.status == 200, ok
    old = pki.client_context(verify=True, max_version=ssl.TLSVersion.TLSv1_2)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        request(url, "/healthz", ctx=old)


def test_two_listeners_and_ipv6_loopback(world):
    try:
        s = socket.socket(socket.AF_INET6)
        s.bind(("::1", 0))
        s.close()
    except OSError:
        pytest.skip("no IPv6 loopback")
    port6 = free_port()
    p, urls = http_petrel(world, [{}, {}, {"listen": f"[::1]:{port6}"}])
    assert len(set(urls)) == 3
    for url in urls:
        r = request(url, "/healthz")
        assert r.status == 200 and r.json() == {"status": "ok"}, (url, r)
        assert "petrel_queue_depth" in metrics(url).type


def test_listen_address_in_use_is_a_startup_error(world):
    blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        port = blocker.getsockname()[1]
        p, _ = http_petrel(world, [{"listen": f"127.0.0.1:{port}"}], start=False)
        p.start(wait=False)
        rc = p.proc.wait(10)
        p.expected_exit = True
        err = p.stderr_text()
        assert rc == 1, f"exit code {rc}, want 1; stderr:\n{err}"
        assert f"127.0.0.1:{port}" in err and "in use" in err.lower(), err
        assert "petrel ready" not in err, err
    finally:
        blocker.close()


@pytest.mark.parametrize("bad", ["missing", "garbage"])
def test_bad_tls_files_are_a_startup_error(world, pki, tmp_path, bad):
    cert, key = listener_tls(pki)["cert_file"], listener_tls(pki)["key_file"]
    if bad == "missing":
        cert = str(tmp_path / "no-such-cert.pem")
    else:
        cert = str(tmp_path / "garbage.pem")
        with open(cert, "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
    p, (url,) = http_petrel(world, [{"tls": {"cert_file": cert, "key_file": key}}], start=False)
    p.start(wait=False)
    rc = p.proc.wait(10)
    p.expected_exit = True
    err = p.stderr_text()
    assert rc == 1, f"exit code {rc}, want 1; stderr:\n{err}"
    assert cert in err and url.split("://")[1] in err, err
    assert "petrel ready" not in err, err
