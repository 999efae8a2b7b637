"""Inbound TLS: STARTTLS (RFC 3207) and implicit TLS (RFC 8314) on petrel's listeners,
protocol versions, the `tls` field of Reception records, and TLS abuse (STARTTLS twice,
commands pipelined behind STARTTLS, stalled handshakes, TLS spoken to a plain port).
Issue 3 "Inbound" and "Bad input"; DESIGN §4 listener `tls`, configure_tls.

Certificates come from certs.PKI (openssl CLI, generated per test module).
"""

import re
import select
import smtplib
import socket
import ssl
import subprocess
import time

import pytest

from certs import PETREL_NAME, PKI, listener_tls, openssl_supports_tls11_client
from harness import RawSMTP, free_port, make_message, msgid_of

TLS_FIELD_RE = re.compile(r"^TLSv1\.[23]:[A-Za-z0-9_-]+$")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return PKI(tmp_path_factory.mktemp("pki"))


def tls_petrel(world, pki, listener=None, **cfg):
    lst = {"tls": listener_tls(pki)}
    lst.update(listener or {})
    return world.petrel(listener=lst, **cfg)


def client_ctx(pki, **kw):
    """Verifies petrel's certificate (CA + host name 127.0.0.1): petrel must present
    the configured certificate."""
    return pki.client_context(verify=True, **kw)


def ehlo_lines(text):
    return [ln.strip().upper() for ln in text.split("\n")]


def has_ext(text, ext):
    return any(ln == ext or ln.startswith(ext + " ") for ln in ehlo_lines(text)[1:])


def assert_no_pending(sock, wait=0.5):
    """Nothing more arrives on a plain socket within `wait` seconds."""
    r, _, _ = select.select([sock], [], [], wait)
    if r:
        try:
            data = sock.recv(4096, socket.MSG_PEEK)
        except OSError:
            data = b""
        assert not data, f"petrel sent {data[:300]!r} where it should wait for the handshake"


def starttls(c, ctx, server_hostname="127.0.0.1"):
    """STARTTLS on a RawSMTP (EHLO already done): checks the 220 and that nothing
    follows it in clear text, then upgrades c.sock in place."""
    code, text = c.cmd("STARTTLS")
    assert code == 220, f"STARTTLS: {code} {text}"
    assert c.buf == b"", f"bytes after the 220 to STARTTLS, before the handshake: {c.buf!r}"
    c.sock = ctx.wrap_socket(c.sock, server_hostname=server_hostname)
    return text


def assert_quiet_tls(c, wait=0.7):
    """No unsolicited reply is pending on a (TLS) RawSMTP."""
    assert c.buf == b"", f"unexpected extra data from petrel: {c.buf!r}"
    c.sock.settimeout(wait)
    try:
        chunk = c.sock.recv(4096)
    except (socket.timeout, TimeoutError, ssl.SSLWantReadError):
        return
    assert not chunk or chunk == b"", f"unexpected extra reply from petrel: {chunk!r}"


def client_hello_bytes(ctx=None):
    """The first flight (ClientHello) of a TLS client, as raw bytes."""
    ctx = ctx or ssl._create_unverified_context()
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname="petrel.test")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    data = out.read()
    assert data[:1] == b"\x16", data[:10]
    return data


# ---------------------------------------------------------------- STARTTLS basics

def test_ehlo_offers_starttls_only_before_tls(world, pki):
    p = tls_petrel(world, pki)
    s = smtplib.SMTP(p.host, p.port, local_hostname="client.test", timeout=10)
    try:
        code, resp = s.ehlo()
        assert code == 250, resp
        assert s.has_extn("starttls"), f"a listener with tls must offer STARTTLS: {resp!r}"
        code, resp = s.starttls(context=client_ctx(pki))
        assert code == 220, (code, resp)
        assert resp.startswith(b"2.0.0"), f"STARTTLS reply should be '220 2.0.0 ...': {resp!r}"
        code, resp = s.ehlo()
        assert code == 250, resp
        assert not s.has_extn("starttls"), f"STARTTLS offered again inside TLS: {resp!r}"
        # The rest of the list is still there (a fresh EHLO, RFC 3207 §4.2).
        for ext in ("pipelining", "8bitmime", "enhancedstatuscodes", "size"):
            assert s.has_extn(ext), f"EHLO after STARTTLS lacks {ext}: {resp!r}"
        assert s.sock.version() in ("TLSv1.2", "TLSv1.3"), s.sock.version()
    finally:
        s.close()


def test_starttls_not_offered_without_tls(world):
    p = world.petrel()
    with p.raw() as c:
        code, text = c.cmd("EHLO client.test")
        assert code == 250
        assert not has_ext(text, "STARTTLS"), f"STARTTLS offered without tls config: {text}"
        code, text = c.cmd("STARTTLS")
        assert code in (502, 454), f"STARTTLS on a listener without tls: {code} {text}"
        if code == 502:
            assert text.startswith("5.5.1"), text
        code, text = c.cmd("NOOP")
        assert code == 250, f"session unusable after a refused STARTTLS: {code} {text}"
    world.assert_serving(p)


def test_starttls_before_ehlo_is_503(world, pki):
    p = tls_petrel(world, pki)
    with p.raw() as c:
        code, text = c.cmd("STARTTLS")
        assert code == 503, f"STARTTLS before EHLO: {code} {text}"
        code, text = c.cmd("EHLO client.test")
        assert code == 250 and has_ext(text, "STARTTLS"), (code, text)
        starttls(c, client_ctx(pki))
        code, text = c.cmd("EHLO client.test")
        assert code == 250, (code, text)
    world.assert_serving(p)


def test_starttls_twice_is_503(world, pki):
    p = tls_petrel(world, pki)
    with p.raw() as c:
        assert c.cmd("EHLO client.test")[0] == 250
        starttls(c, client_ctx(pki))
        code, text = c.cmd("EHLO client.test")
        assert code == 250 and not has_ext(text, "STARTTLS"), text
        code, text = c.cmd("STARTTLS")
        assert code == 503, f"STARTTLS inside TLS: {code} {text}"
        assert text.startswith("5.5.1"), f"expected 503 5.5.1: {code} {text}"
        # Still the same TLS session, still usable.
        code, text = c.cmd("NOOP")
        assert code == 250, f"after the refused second STARTTLS: {code} {text}"
        assert c.sock.version() in ("TLSv1.2", "TLSv1.3")
    world.assert_serving(p)


@pytest.mark.parametrize("injected", [
    b"RSET\r\n",
    b"MAIL FROM:<evil@attacker.test>\r\nRCPT TO:<victim@dest.test>\r\n",
    b"NOOP\r\nNOOP\r\nNOOP\r\n",
], ids=["rset", "mail_rcpt", "noops"])
def test_commands_pipelined_after_starttls_are_discarded(world, pki, injected):
    """CVE-2011-0411: plaintext bytes that follow STARTTLS in the same packet must not
    be executed inside the TLS session."""
    dest = world.mx_domain("dest.test", "127.0.0.2")
    p = tls_petrel(world, pki)
    with p.raw() as c:
        assert c.cmd("EHLO client.test")[0] == 250
        c.send(b"STARTTLS\r\n" + injected)     # one write: one packet on loopback
        code, text = c.reply()
        assert code == 220, f"STARTTLS with pipelined junk: {code} {text}"
        assert c.buf == b"", f"petrel answered the injected commands in clear: {c.buf!r}"
        assert_no_pending(c.sock, 0.3)
        c.sock = client_ctx(pki).wrap_socket(c.sock, server_hostname="127.0.0.1")
        c.sock.settimeout(10)
        code, text = c.cmd("EHLO client.test")
        lines = text.split("\n")
        assert code == 250 and lines[0].split()[0] == PETREL_NAME and len(lines) > 2, \
            (f"the first reply inside TLS is not the EHLO reply (an injected command was "
             f"executed?): {code} {text!r}")
        code, text = c.cmd("NOOP")
        assert code == 250, f"reply to NOOP is not NOOP's (queued injected replies?): {code} {text}"
        assert_quiet_tls(c)
        # No transaction was opened by the injected MAIL: a new MAIL is not "nested".
        code, text = c.cmd("MAIL FROM:<alice@sender.test>")
        assert code == 250, f"MAIL after STARTTLS: {code} {text}"
        code, text = c.cmd("RSET")
        assert code == 250
    time.sleep(0.5)
    assert not p.records("Reception"), p.records("Reception")
    assert not dest.messages()
    world.assert_serving(p)


# ---------------------------------------------------------------- the tls log field

def test_reception_over_starttls_logs_protocol_and_cipher(world, pki):
    p, dest, _ = world.basic(listener={"tls": listener_tls(pki)})
    s = smtplib.SMTP(p.host, p.port, local_hostname="client.test", timeout=10)
    try:
        s.ehlo()
        s.starttls(context=client_ctx(pki))
        s.ehlo()
        want = f"{s.sock.version()}:{s.sock.cipher()[0]}"
        data = make_message(to=["tls@dest.test"], subject="over starttls")
        p.send("alice@sender.test", ["tls@dest.test"], data, smtp=s)
    finally:
        s.quit()
    dest.wait_message(msgid_of(data))
    rec = p.wait_record("Reception", recipient="tls@dest.test")
    assert rec["tls"] is not None, f"Reception over TLS has tls null: {rec}"
    assert TLS_FIELD_RE.match(rec["tls"]), f"tls should be 'PROTOCOL:CIPHER': {rec['tls']!r}"
    assert rec["tls"] == want, f"logged {rec['tls']!r}, the client negotiated {want!r}"


def test_reception_in_clear_logs_tls_null(world, pki):
    p, dest, _ = world.basic(listener={"tls": listener_tls(pki)})
    mid = p.send_message("alice@sender.test", ["clear@dest.test"])
    dest.wait_message(mid)
    rec = p.wait_record("Reception", recipient="clear@dest.test")
    assert "tls" in rec and rec["tls"] is None, f"Reception in clear: tls should be null: {rec}"


def test_tls12_client_logged_as_tls12(world, pki):
    p, dest, _ = world.basic(listener={"tls": listener_tls(pki)})
    s = smtplib.SMTP(p.host, p.port, local_hostname="client.test", timeout=10)
    try:
        s.ehlo()
        s.starttls(context=client_ctx(pki, max_version=ssl.TLSVersion.TLSv1_2))
        s.ehlo()
        assert s.sock.version() == "TLSv1.2"
        cipher = s.sock.cipher()[0]
        data = make_message(to=["tls12@dest.test"])
        p.send("alice@sender.test", ["tls12@dest.test"], data, smtp=s)
    finally:
        s.quit()
    dest.wait_message(msgid_of(data))
    rec = p.wait_record("Reception", recipient="tls12@dest.test")
    assert rec["tls"] == f"TLSv1.2:{cipher}", rec


# ---------------------------------------------------------------- implicit TLS

def smtps_listener(pki, port, **extra):
    lst = {"listen": f"127.0.0.1:{port}", "name": "smtps", "hostname": PETREL_NAME,
           "tls": listener_tls(pki, implicit=True)}
    lst.update(extra)
    return lst


def test_implicit_tls_handshake_then_greeting(world, pki):
    dest = world.mx_domain("dest.test", "127.0.0.2")
    port = free_port()
    p = world.petrel(listeners=[smtps_listener(pki, port)])
    s = smtplib.SMTP_SSL(p.host, port, local_hostname="client.test", timeout=10,
                         context=client_ctx(pki))
    try:
        code, resp = s.ehlo()
        assert code == 250, resp
        assert not s.has_extn("starttls"), f"STARTTLS offered on implicit TLS: {resp!r}"
        want = f"{s.sock.version()}:{s.sock.cipher()[0]}"
        data = make_message(to=["smtps@dest.test"])
        p.send("alice@sender.test", ["smtps@dest.test"], data, smtp=s)
        code, resp = s.docmd("STARTTLS")
        assert code == 503, f"STARTTLS on implicit TLS: {code} {resp!r}"
    finally:
        s.close()
    dest.wait_message(msgid_of(data))
    rec = p.wait_record("Reception", recipient="smtps@dest.test")
    assert rec["tls"] == want, rec
    world.assert_serving(p)


def test_implicit_tls_greeting_not_in_clear(world, pki):
    port = free_port()
    p = world.petrel(listeners=[smtps_listener(pki, port, greeting_timeout="2s",
                                               command_timeout="2s")])
    c = RawSMTP(p.host, port, timeout=5)
    try:
        r, _, _ = select.select([c.sock], [], [], 1.0)
        if r:
            try:
                data = c.sock.recv(4096)
            except OSError:
                data = b""
            assert not data.startswith(b"220"), \
                f"implicit TLS listener greeted in clear: {data!r}"
        # A plain-text client talking SMTP: no SMTP conversation must start.
        try:
            c.send(b"EHLO client.test\r\n")
            deadline = time.monotonic() + 6
            got = b""
            while time.monotonic() < deadline:
                r, _, _ = select.select([c.sock], [], [], 0.5)
                if r:
                    chunk = c.sock.recv(4096)
                    if not chunk:
                        break
                    got += chunk
            assert not re.search(rb"^250[ -]", got, re.M), \
                f"implicit TLS listener answered EHLO in clear: {got!r}"
        except OSError:
            pass
    finally:
        c.close()
    p.assert_alive()
    world.assert_serving(p)


# ---------------------------------------------------------------- versions

def s_client(port, *args, timeout=20):
    r = subprocess.run(["openssl", "s_client", "-starttls", "smtp", "-connect",
                        f"127.0.0.1:{port}", "-name", "client.test", "-brief", *args],
                       input=b"", capture_output=True, timeout=timeout)
    return r.returncode, (r.stdout + r.stderr).decode("utf-8", "replace")


@pytest.mark.parametrize("version,flag", [("TLSv1.2", "-tls1_2"), ("TLSv1.3", "-tls1_3")])
def test_s_client_accepted_versions(world, pki, version, flag):
    p = tls_petrel(world, pki)
    rc, out = s_client(p.port, flag, "-CAfile", pki.ca_file)
    assert rc == 0, f"openssl s_client {flag} failed (rc {rc}):\n{out}"
    assert re.search(r"Protocol version:\s*" + re.escape(version), out), out
    assert re.search(r"Verification:\s*OK", out), f"petrel's certificate did not verify:\n{out}"
    world.assert_serving(p)


@pytest.mark.parametrize("seclevel0", [False, True], ids=["default", "ciphers_seclevel0"])
def test_s_client_tls11_refused(world, pki, tmp_path, seclevel0):
    """TLS 1.0/1.1 are never accepted. With ciphers = "DEFAULT@SECLEVEL=0" OpenSSL itself
    would allow them (SHA-1 signatures), so only petrel's version floor refuses."""
    if not openssl_supports_tls11_client(tmp_path, pki):
        pytest.skip("the local openssl cannot negotiate TLS 1.1 even at SECLEVEL=0; "
                    "petrel's refusal cannot be told apart from our client's")
    extra = 'petrel.configure_tls { ciphers = "DEFAULT@SECLEVEL=0" }' if seclevel0 else ""
    p = tls_petrel(world, pki, extra=extra)
    rc, out = s_client(p.port, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0")
    assert rc != 0 and not re.search(r"Protocol version:\s*TLSv1\.1", out), \
        f"petrel accepted TLS 1.1:\n{out}"
    assert "no protocols available" not in out, f"our client refused, not petrel:\n{out}"
    # Same for TLS 1.0.
    rc, out = s_client(p.port, "-tls1", "-cipher", "DEFAULT@SECLEVEL=0")
    assert rc != 0 and not re.search(r"Protocol version:\s*TLSv1(\.0)?\s*$", out, re.M), \
        f"petrel accepted TLS 1.0:\n{out}"
    p.assert_alive()
    world.assert_serving(p)


def test_configure_tls_min_version_13(world, pki):
    p = tls_petrel(world, pki, extra='petrel.configure_tls { min_tls_version = "1.3" }')
    rc, out = s_client(p.port, "-tls1_2", "-CAfile", pki.ca_file)
    assert rc != 0 and "TLSv1.2" not in re.findall(r"Protocol version:\s*(\S+)", out), \
        f"min_tls_version 1.3 but TLS 1.2 accepted:\n{out}"
    rc, out = s_client(p.port, "-tls1_3", "-CAfile", pki.ca_file)
    assert rc == 0 and "TLSv1.3" in out, out
    world.assert_serving(p)


def test_listener_min_tls_version_13(world, pki):
    p = tls_petrel(world, pki, listener={"tls": listener_tls(pki, min_tls_version="1.3")})
    s = smtplib.SMTP(p.host, p.port, local_hostname="client.test", timeout=10)
    try:
        s.ehlo()
        with pytest.raises((ssl.SSLError, OSError)):
            s.starttls(context=client_ctx(pki, max_version=ssl.TLSVersion.TLSv1_2))
    finally:
        s.close()
    s = smtplib.SMTP(p.host, p.port, local_hostname="client.test", timeout=10)
    try:
        s.ehlo()
        s.starttls(context=client_ctx(pki))
        assert s.sock.version() == "TLSv1.3"
        assert s.ehlo()[0] == 250
    finally:
        s.close()
    world.assert_serving(p)


def test_configure_tls_ciphers_tls12(world, pki):
    """configure_tls { ciphers } is the OpenSSL cipher list for TLS 1.2."""
    want = "ECDHE-ECDSA-AES128-GCM-SHA256"        # the test certificates are P-256
    p = tls_petrel(world, pki, extra=f'petrel.configure_tls {{ ciphers = "{want}" }}')
    s = smtplib.SMTP(p.host, p.port, local_hostname="client.test", timeout=10)
    try:
        s.ehlo()
        s.starttls(context=client_ctx(pki, max_version=ssl.TLSVersion.TLSv1_2))
        assert s.sock.version() == "TLSv1.2"
        assert s.sock.cipher()[0] == want, s.sock.cipher()
    finally:
        s.close()
    world.assert_serving(p)


# ---------------------------------------------------------------- abuse

def test_tls_client_on_plain_port(world):
    """A client that speaks TLS to a plain listener: junk replies (5xx) or a close,
    no crash, and petrel keeps serving."""
    p = world.petrel(listener={"command_timeout": "2s"})
    # 1) a real TLS client: it reads the clear 220 as a TLS record and gives up.
    raw = socket.create_connection((p.host, p.port), timeout=5)
    with pytest.raises((ssl.SSLError, OSError)):
        ssl._create_unverified_context().wrap_socket(raw, server_hostname="petrel.test")
    raw.close()
    # 2) a client that blasts its ClientHello without reading the greeting.
    hello = client_hello_bytes()
    c = RawSMTP(p.host, p.port, timeout=5)
    try:
        c.send(hello)
        code, text = c.reply()
        assert code == 220, (code, text)
        codes = []
        t_end = time.monotonic() + 8
        while time.monotonic() < t_end:
            try:
                codes.append(c.reply(timeout=4)[0])
            except (socket.timeout, ConnectionError, OSError):
                break
            except AssertionError:
                break               # not SMTP: acceptable, just no success
        assert all(cd >= 500 or cd == 421 for cd in codes), \
            f"petrel answered a TLS ClientHello on a plain port with {codes}"
    finally:
        c.close()
    p.assert_alive()
    world.assert_serving(p)


@pytest.mark.parametrize("stall", ["nothing", "partial_hello"])
def test_stalled_starttls_handshake_is_dropped(world, pki, stall):
    p = tls_petrel(world, pki, listener={"tls": listener_tls(pki), "command_timeout": "2s"})
    c = p.raw(timeout=15)
    try:
        assert c.cmd("EHLO client.test")[0] == 250
        code, text = c.cmd("STARTTLS")
        assert code == 220, (code, text)
        if stall == "partial_hello":
            c.send(client_hello_bytes()[:20])
        t0 = time.monotonic()
        closed = c.wait_closed(timeout=10)
        elapsed = time.monotonic() - t0
        assert closed, "petrel kept a stalled TLS handshake open for 10 s (command_timeout 2s)"
        assert elapsed <= 6, \
            f"a stalled TLS handshake was dropped only after {elapsed:.1f}s (command_timeout 2s)"
    finally:
        c.close()
    p.assert_alive()
    world.assert_serving(p)


def test_stalled_implicit_tls_handshake_is_dropped(world, pki):
    port = free_port()
    p = world.petrel(listeners=[smtps_listener(pki, port, greeting_timeout="2s",
                                               command_timeout="2s")])
    c = RawSMTP(p.host, port, timeout=15)
    try:
        c.send(client_hello_bytes()[:30])
        t0 = time.monotonic()
        closed = c.wait_closed(timeout=10)
        elapsed = time.monotonic() - t0
        assert closed, "petrel kept a stalled implicit TLS handshake open for 10 s"
        assert elapsed <= 6, \
            f"a stalled implicit TLS handshake was dropped only after {elapsed:.1f}s (timeouts 2s)"
    finally:
        c.close()
    # A well-behaved SMTPS client still gets served.
    s = smtplib.SMTP_SSL(p.host, port, local_hostname="client.test", timeout=10,
                         context=client_ctx(pki))
    try:
        assert s.ehlo()[0] == 250
        assert s.noop()[0] == 250
    finally:
        s.close()
    world.assert_serving(p)


def test_many_failed_handshakes_no_leak_no_crash(world, pki):
    """Clients that abort the handshake in every way: petrel stays up and serves."""
    p = tls_petrel(world, pki, listener={"tls": listener_tls(pki), "command_timeout": "2s"})
    hello = client_hello_bytes()
    for i in range(30):
        c = p.raw(timeout=5)
        try:
            assert c.cmd("EHLO client.test")[0] == 250
            assert c.cmd("STARTTLS")[0] == 220
            kind = i % 3
            if kind == 0:
                c.send(hello[: len(hello) // 2])
            elif kind == 1:
                c.send(b"\x16\x03\x01\xff\xff" + b"\x00" * 64)     # absurd record length
            else:
                c.send(b"EHLO not-tls\r\n")
        finally:
            c.close()
    p.assert_alive()
    world.assert_serving(p)
    # And TLS still works.
    s = smtplib.SMTP(p.host, p.port, local_hostname="client.test", timeout=10)
    try:
        s.ehlo()
        s.starttls(context=client_ctx(pki))
        assert s.ehlo()[0] == 250
    finally:
        s.close()
