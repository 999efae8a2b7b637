"""Inbound SMTP AUTH (RFC 4954): PLAIN, LOGIN, CRAM-MD5 against configure_auth's
users_file, auth_require_tls, relay control for authenticated clients, malformed and
hostile AUTH input, and the brute-force ban. Issue 3 "Inbound", "Bad input";
DESIGN §4 listener auth_mechanisms / auth_require_tls, configure_auth; §6 Open relay.
"""

import base64
import hashlib
import hmac
import os
import re
import smtplib
import socket
import ssl
import subprocess
import time

import pytest

from certs import PKI, listener_tls
from harness import (PETRELCTL_BIN, check_record_keys, make_message, msgid_of, swaks,
                     wait_for)

MECHS = ["PLAIN", "LOGIN", "CRAM-MD5"]
USERS = {
    "alice": ("Alice-pw1", "crypt"),            # petrelctl hash-password ($y$ by default)
    "carol": ("Carol-cram2", "cram"),           # petrelctl hash-password --cram-md5
    "dave": ("Dave-sha512", "sha512"),          # $6$ from openssl passwd -6
    "erin": ("Erin-sha256", "sha256"),          # $5$ from openssl passwd -5
}


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return PKI(tmp_path_factory.mktemp("pki"))


def hash_password(password, kind):
    if kind in ("crypt", "cram"):
        args = [PETRELCTL_BIN, "hash-password"] + (["--cram-md5"] if kind == "cram" else [])
    else:
        args = ["openssl", "passwd", "-6" if kind == "sha512" else "-5", "-stdin"]
    r = subprocess.run(args, input=(password + "\n").encode(), capture_output=True, timeout=30)
    assert r.returncode == 0, f"{args}: rc {r.returncode}: {r.stderr!r}"
    out = r.stdout.decode().strip()
    if kind == "cram":
        assert re.fullmatch(r"\{CRAM-MD5\}[0-9a-f]{64}", out), f"--cram-md5 printed {out!r}"
    elif kind == "crypt":
        assert re.match(r"^\$(y|6|5|2b|7)\$", out), f"hash-password printed {out!r}"
    return out


@pytest.fixture(scope="module")
def users_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("users")
    path = os.path.join(str(d), "users.txt")
    with open(path, "w") as f:
        f.write("# petrel test users\n")
        for user, (pw, kind) in USERS.items():
            f.write(f"{user}:{hash_password(pw, kind)}\n")
    return path


def auth_config(users_file, max_failures=100, failure_window="10m", ban_time="10m"):
    return ("petrel.configure_auth { "
            f'users_file = "{users_file}", max_failures = {max_failures}, '
            f'failure_window = "{failure_window}", ban_time = "{ban_time}" }}')


def auth_petrel(world, pki, users_file, listener=None, auth=None, extra="", **cfg):
    lst = {"tls": listener_tls(pki), "auth_mechanisms": MECHS}
    lst.update(listener or {})
    return world.petrel(listener=lst, extra=auth_config(users_file, **(auth or {})) + "\n" + extra,
                        **cfg)


def ctx_of(pki):
    return pki.client_context(verify=True)


def b64(s):
    if isinstance(s, str):
        s = s.encode()
    return base64.b64encode(s).decode()


def plain(user, pw):
    return b64(f"\0{user}\0{pw}")


def tls_raw(p, pki, ehlo=True):
    """A RawSMTP to p, EHLO + STARTTLS + EHLO done; returns (client, ehlo text)."""
    c = p.raw()
    code, text = c.cmd("EHLO client.test")
    assert code == 250, (code, text)
    code, text = c.cmd("STARTTLS")
    assert code == 220, (code, text)
    c.sock = ctx_of(pki).wrap_socket(c.sock, server_hostname="127.0.0.1")
    c.sock.settimeout(10)
    text = ""
    if ehlo:
        code, text = c.cmd("EHLO client.test")
        assert code == 250, (code, text)
    return c, text


def auth_line(text):
    for ln in text.split("\n")[1:]:
        if ln.upper().startswith("AUTH ") or ln.upper() == "AUTH":
            return ln.upper().split()[1:]
    return None


def assert_code(got, codes, enhanced=None, what=""):
    code, text = got
    codes = (codes,) if isinstance(codes, int) else tuple(codes)
    assert code in codes, f"{what}: expected {codes}, got {code} {text}"
    if enhanced:
        assert text.startswith(enhanced), f"{what}: expected {code} {enhanced}, got {code} {text}"


def cram_response(user, password, challenge_b64):
    challenge = base64.b64decode(challenge_b64, validate=True)
    digest = hmac.new(password.encode(), challenge, hashlib.md5).hexdigest()
    return b64(f"{user} {digest}")


# ---------------------------------------------------------------- advertising

def test_auth_advertised_only_inside_tls(world, pki, users_file):
    p = auth_petrel(world, pki, users_file)
    with p.raw() as c:
        code, text = c.cmd("EHLO client.test")
        assert code == 250
        assert auth_line(text) is None, f"AUTH offered in clear with auth_require_tls: {text}"
        c.sock.close()
    c, text = tls_raw(p, pki)
    with c:
        mechs = auth_line(text)
        assert mechs is not None, f"no AUTH in the EHLO list inside TLS: {text}"
        assert set(mechs) == set(MECHS), f"AUTH lists {mechs}, configured {MECHS}"


def test_auth_mechanisms_follow_listener_config(world, pki, users_file):
    p = auth_petrel(world, pki, users_file, listener={"auth_mechanisms": ["PLAIN"]})
    c, text = tls_raw(p, pki)
    with c:
        assert auth_line(text) == ["PLAIN"], text
        assert_code(c.cmd("AUTH LOGIN"), 504, "5.5.4", "AUTH LOGIN not enabled")
        assert_code(c.cmd("AUTH CRAM-MD5"), 504, "5.5.4", "AUTH CRAM-MD5 not enabled")
        assert_code(c.cmd("AUTH PLAIN " + plain("alice", "Alice-pw1")), 235, "2.7.0")


def test_no_auth_without_mechanisms(world, pki, users_file):
    p = auth_petrel(world, pki, users_file, listener={"auth_mechanisms": []})
    c, text = tls_raw(p, pki)
    with c:
        assert auth_line(text) is None, f"AUTH offered with auth_mechanisms = {{}}: {text}"
        code, resp = c.cmd("AUTH PLAIN " + plain("alice", "Alice-pw1"))
        assert 500 <= code < 600, f"AUTH with no mechanisms configured: {code} {resp}"


def test_auth_in_clear_refused_538(world, pki, users_file):
    dest = world.mx_domain("dest.test", "127.0.0.2")
    p = auth_petrel(world, pki, users_file, listener={"relay_hosts": ["10.0.0.0/8"]})
    with p.raw() as c:
        assert c.cmd("EHLO client.test")[0] == 250
        assert_code(c.cmd("AUTH PLAIN " + plain("alice", "Alice-pw1")), 538, "5.7.11",
                    "AUTH in clear")
        assert_code(c.cmd("AUTH LOGIN"), 538, "5.7.11", "AUTH LOGIN in clear")
        # No relay was granted by the refused AUTH.
        assert c.cmd("MAIL FROM:<alice@sender.test>")[0] == 250
        code, text = c.cmd("RCPT TO:<bob@dest.test>")
        assert code in (550, 554) and "5.7.1" in text, f"relay after a refused AUTH: {code} {text}"
    assert not dest.messages()


def test_auth_require_tls_false_allows_clear_auth(world, pki, users_file):
    dest = world.mx_domain("dest.test", "127.0.0.2")
    p = auth_petrel(world, pki, users_file,
                    listener={"auth_require_tls": False, "relay_hosts": ["10.0.0.0/8"]})
    s = smtplib.SMTP(p.host, p.port, local_hostname="client.test", timeout=10)
    try:
        code, resp = s.ehlo()
        assert s.has_extn("auth"), f"AUTH not offered in clear with auth_require_tls=false: {resp!r}"
        code, resp = s.login("alice", "Alice-pw1")
        assert code == 235, (code, resp)
        data = make_message(to=["clear-auth@dest.test"])
        p.send("alice@sender.test", ["clear-auth@dest.test"], data, smtp=s)
    finally:
        s.quit()
    dest.wait_message(msgid_of(data))


def test_auth_require_tls_false_listener_without_tls(world, pki, users_file):
    """AUTH on a plain listener (no tls at all) when auth_require_tls = false."""
    p = world.petrel(listener={"auth_mechanisms": ["PLAIN", "LOGIN"], "auth_require_tls": False},
                     extra=auth_config(users_file))
    with p.raw() as c:
        code, text = c.cmd("EHLO client.test")
        assert set(auth_line(text) or []) == {"PLAIN", "LOGIN"}, text
        assert_code(c.cmd("AUTH PLAIN " + plain("alice", "Alice-pw1")), 235, "2.7.0")


# ---------------------------------------------------------------- mechanisms

@pytest.mark.parametrize("user", ["alice", "carol", "dave", "erin"])
def test_auth_plain_success(world, pki, users_file, user):
    """PLAIN with each kind of users_file entry ($y$, {CRAM-MD5}, $6$, $5$)."""
    p = auth_petrel(world, pki, users_file)
    c, _ = tls_raw(p, pki)
    with c:
        assert_code(c.cmd("AUTH PLAIN " + plain(user, USERS[user][0])), 235, "2.7.0",
                    f"AUTH PLAIN {user}")


def test_auth_plain_without_initial_response(world, pki, users_file):
    p = auth_petrel(world, pki, users_file)
    c, _ = tls_raw(p, pki)
    with c:
        code, text = c.cmd("AUTH PLAIN")
        assert code == 334, (code, text)
        assert text.strip() == "", f"PLAIN's challenge should be empty: {text!r}"
        assert_code(c.cmd(plain("alice", "Alice-pw1")), 235, "2.7.0")


def test_auth_plain_with_authzid_equal_to_user(world, pki, users_file):
    p = auth_petrel(world, pki, users_file)
    c, _ = tls_raw(p, pki)
    with c:
        assert_code(c.cmd("AUTH PLAIN " + b64("alice\0alice\0Alice-pw1")), 235, "2.7.0")


@pytest.mark.parametrize("user", ["alice", "carol"])
def test_auth_login_success(world, pki, users_file, user):
    p = auth_petrel(world, pki, users_file)
    c, _ = tls_raw(p, pki)
    with c:
        code, text = c.cmd("AUTH LOGIN")
        assert code == 334, (code, text)
        assert base64.b64decode(text.strip()).lower().startswith(b"username"), text
        code, text = c.cmd(b64(user))
        assert code == 334, (code, text)
        assert base64.b64decode(text.strip()).lower().startswith(b"password"), text
        assert_code(c.cmd(b64(USERS[user][0])), 235, "2.7.0", f"AUTH LOGIN {user}")


def test_auth_login_with_initial_response(world, pki, users_file):
    p = auth_petrel(world, pki, users_file)
    c, _ = tls_raw(p, pki)
    with c:
        code, text = c.cmd("AUTH LOGIN " + b64("alice"))
        assert code == 334, (code, text)
        assert base64.b64decode(text.strip()).lower().startswith(b"password"), text
        assert_code(c.cmd(b64("Alice-pw1")), 235, "2.7.0")


def test_auth_cram_md5_success(world, pki, users_file):
    p = auth_petrel(world, pki, users_file)
    c, _ = tls_raw(p, pki)
    with c:
        code, text = c.cmd("AUTH CRAM-MD5")
        assert code == 334, (code, text)
        challenge = base64.b64decode(text.strip(), validate=True)
        assert re.fullmatch(rb"<[^<>@\s]+@[^<>\s]+>", challenge), \
            f"CRAM-MD5 challenge should look like a msg-id: {challenge!r}"
        assert_code(c.cmd(cram_response("carol", "Carol-cram2", text.strip())), 235, "2.7.0")
    # A fresh challenge each time.
    c, _ = tls_raw(p, pki)
    with c:
        code, text2 = c.cmd("AUTH CRAM-MD5")
        assert code == 334 and text2.strip() != text.strip(), "CRAM-MD5 challenge repeated"
        c.cmd("*")


def test_auth_cram_md5_failures(world, pki, users_file):
    p = auth_petrel(world, pki, users_file)
    c, _ = tls_raw(p, pki)
    with c:
        code, text = c.cmd("AUTH CRAM-MD5")
        assert code == 334
        assert_code(c.cmd(cram_response("carol", "wrong", text.strip())), 535, "5.7.8",
                    "CRAM-MD5 wrong password")
        # A user whose entry is a crypt hash cannot do CRAM-MD5 (no secret to use).
        code, text = c.cmd("AUTH CRAM-MD5")
        assert code == 334
        assert_code(c.cmd(cram_response("alice", "Alice-pw1", text.strip())), 535, "5.7.8",
                    "CRAM-MD5 for a crypt(3) user")
        code, text = c.cmd("AUTH CRAM-MD5")
        assert code == 334
        assert_code(c.cmd(cram_response("nobody", "x", text.strip())), 535, "5.7.8",
                    "CRAM-MD5 unknown user")
        # A replayed response to a new challenge fails.
        code, text = c.cmd("AUTH CRAM-MD5")
        assert code == 334
        old = cram_response("carol", "Carol-cram2", b64("<1.2@petrel.test>"))
        assert_code(c.cmd(old), 535, "5.7.8", "CRAM-MD5 response to another challenge")


def test_smtplib_starttls_login(world, pki, users_file):
    dest = world.mx_domain("dest.test", "127.0.0.2")
    p = auth_petrel(world, pki, users_file, listener={"relay_hosts": ["10.0.0.0/8"]})
    s = smtplib.SMTP(p.host, p.port, local_hostname="client.test", timeout=10)
    try:
        s.ehlo()
        s.starttls(context=ctx_of(pki))
        s.ehlo()
        code, resp = s.login("alice", "Alice-pw1")
        assert code == 235, (code, resp)
        data = make_message(to=["smtplib@dest.test"])
        p.send("alice@sender.test", ["smtplib@dest.test"], data, smtp=s)
    finally:
        s.quit()
    dest.wait_message(msgid_of(data))


def test_implicit_tls_auth_and_relay(world, pki, users_file):
    """SMTPS (implicit TLS, 465-style): AUTH is offered at once and grants relay."""
    from harness import free_port
    dest = world.mx_domain("dest.test", "127.0.0.2")
    port = free_port()
    p = world.petrel(listeners=[{"listen": f"127.0.0.1:{port}", "name": "smtps",
                                 "hostname": "petrel.test", "relay_hosts": ["10.0.0.0/8"],
                                 "tls": listener_tls(pki, implicit=True),
                                 "auth_mechanisms": MECHS}],
                     extra=auth_config(users_file))
    s = smtplib.SMTP_SSL(p.host, port, local_hostname="client.test", timeout=10,
                         context=ctx_of(pki))
    try:
        code, resp = s.ehlo()
        assert s.has_extn("auth"), f"no AUTH on implicit TLS: {resp!r}"
        assert set(s.esmtp_features["auth"].upper().split()) == set(MECHS), resp
        code, resp = s.mail("alice@sender.test")
        assert code == 250
        code, resp = s.rcpt("before-auth@dest.test")
        assert code in (550, 554), f"relay before AUTH on SMTPS: {code} {resp!r}"
        s.rset()
        assert s.login("alice", "Alice-pw1")[0] == 235
        data = make_message(to=["smtps-auth@dest.test"])
        p.send("alice@sender.test", ["smtps-auth@dest.test"], data, smtp=s)
    finally:
        s.quit()
    dest.wait_message(msgid_of(data))
    rec = p.wait_record("Reception", recipient="smtps-auth@dest.test")
    assert rec["tls"], rec


@pytest.mark.parametrize("mech,user", [("PLAIN", "alice"), ("LOGIN", "dave"),
                                       ("CRAM-MD5", "carol")])
def test_swaks_tls_auth(world, pki, users_file, mech, user):
    dest = world.mx_domain("dest.test", "127.0.0.2")
    p = auth_petrel(world, pki, users_file, listener={"relay_hosts": ["10.0.0.0/8"]})
    subject = f"swaks {mech} {time.time()}"
    r = swaks("--server", f"127.0.0.1:{p.port}", "--tls", "--auth", mech,
              "--auth-user", user, "--auth-password", USERS[user][0],
              "--from", "alice@sender.test", "--to", f"swaks-{user}@dest.test",
              "--ehlo", "client.test", "--header", f"Subject: {subject}",
              "--timeout", "20")
    out = (r.stdout + r.stderr).decode("utf-8", "replace")
    assert r.returncode == 0, f"swaks failed (rc {r.returncode}):\n{out}"
    assert re.search(r"<~\s+235", out), f"no 235 in the swaks transcript:\n{out}"
    wait_for(lambda: [t for t in dest.messages() if t.header("Subject") == subject], 15,
             f"the swaks message at {dest}")


# ---------------------------------------------------------------- failures

def test_wrong_password_and_unknown_user_535(world, pki, users_file):
    dest = world.mx_domain("dest.test", "127.0.0.2")
    p = auth_petrel(world, pki, users_file, listener={"relay_hosts": ["10.0.0.0/8"]})
    c, _ = tls_raw(p, pki)
    with c:
        assert_code(c.cmd("AUTH PLAIN " + plain("alice", "wrong")), 535, "5.7.8", "wrong password")
        assert_code(c.cmd("AUTH PLAIN " + plain("mallory", "x")), 535, "5.7.8", "unknown user")
        assert_code(c.cmd("AUTH PLAIN " + plain("carol", "wrong")), 535, "5.7.8",
                    "wrong password, CRAM-MD5 entry")
        assert_code(c.cmd("AUTH PLAIN " + plain("alice", "alice-pw1")), 535, "5.7.8",
                    "password case matters")
        code, text = c.cmd("AUTH LOGIN")
        assert code == 334
        assert c.cmd(b64("alice"))[0] == 334
        assert_code(c.cmd(b64("wrong")), 535, "5.7.8", "LOGIN wrong password")
        # Still not allowed to relay.
        assert c.cmd("MAIL FROM:<alice@sender.test>")[0] == 250
        code, text = c.cmd("RCPT TO:<bob@dest.test>")
        assert code in (550, 554) and "5.7.1" in text, (code, text)
        # A later success in the same session works.
        c.cmd("RSET")
        assert_code(c.cmd("AUTH PLAIN " + plain("alice", "Alice-pw1")), 235, "2.7.0")
    assert not dest.messages()


@pytest.mark.parametrize("how", ["initial", "continuation_plain", "continuation_login"])
def test_malformed_base64_501(world, pki, users_file, how):
    p = auth_petrel(world, pki, users_file)
    c, _ = tls_raw(p, pki)
    with c:
        if how == "initial":
            got = c.cmd("AUTH PLAIN !!!not*base64###")
        elif how == "continuation_plain":
            assert c.cmd("AUTH PLAIN")[0] == 334
            got = c.cmd("AGFsaWNl%%%")
        else:
            assert c.cmd("AUTH LOGIN")[0] == 334
            got = c.cmd("@@@@")
        assert_code(got, 501, "5.5.2", f"malformed base64 ({how})")
        # The session goes on.
        assert c.cmd("NOOP")[0] == 250
        assert_code(c.cmd("AUTH PLAIN " + plain("alice", "Alice-pw1")), 235, "2.7.0")
    world.assert_serving(p)


def test_unknown_mechanism_504(world, pki, users_file):
    p = auth_petrel(world, pki, users_file)
    c, _ = tls_raw(p, pki)
    with c:
        assert_code(c.cmd("AUTH XOAUTH9"), 504, "5.5.4", "unknown mechanism")
        assert_code(c.cmd("AUTH DIGEST-MD5"), 504, "5.5.4", "unsupported mechanism")
        code, text = c.cmd("AUTH")
        assert code in (501, 504), f"AUTH without a mechanism: {code} {text}"
        assert c.cmd("NOOP")[0] == 250


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN", "CRAM-MD5"])
def test_cancel_with_star_501(world, pki, users_file, mech):
    p = auth_petrel(world, pki, users_file)
    c, _ = tls_raw(p, pki)
    with c:
        assert c.cmd(f"AUTH {mech}")[0] == 334
        assert_code(c.cmd("*"), 501, None, f"AUTH {mech} cancelled")
        assert c.cmd("NOOP")[0] == 250
        assert_code(c.cmd("AUTH PLAIN " + plain("alice", "Alice-pw1")), 235, "2.7.0")


def test_auth_when_authenticated_503(world, pki, users_file):
    p = auth_petrel(world, pki, users_file)
    c, _ = tls_raw(p, pki)
    with c:
        assert_code(c.cmd("AUTH PLAIN " + plain("alice", "Alice-pw1")), 235, "2.7.0")
        assert_code(c.cmd("AUTH PLAIN " + plain("carol", "Carol-cram2")), 503, "5.5.1",
                    "second AUTH")
        assert_code(c.cmd("AUTH LOGIN"), 503, "5.5.1", "second AUTH (LOGIN)")


def test_auth_before_ehlo_503(world, pki, users_file):
    p = auth_petrel(world, pki, users_file, listener={"auth_require_tls": False})
    with p.raw() as c:
        code, text = c.cmd("AUTH PLAIN " + plain("alice", "Alice-pw1"))
        assert code == 503, f"AUTH before EHLO: {code} {text}"


def test_auth_during_mail_transaction_503(world, pki, users_file):
    p = auth_petrel(world, pki, users_file)
    c, _ = tls_raw(p, pki)
    with c:
        assert c.cmd("MAIL FROM:<alice@sender.test>")[0] == 250
        code, text = c.cmd("AUTH PLAIN " + plain("alice", "Alice-pw1"))
        assert code == 503, f"AUTH inside a mail transaction (RFC 4954 §4): {code} {text}"


@pytest.mark.parametrize("how", ["initial", "continuation"])
def test_huge_credentials(world, pki, users_file, how):
    p = auth_petrel(world, pki, users_file)
    blob = b64(b"\0alice\0" + b"A" * 7493)
    assert len(blob) >= 10000
    c, _ = tls_raw(p, pki)
    try:
        if how == "initial":
            c.send(("AUTH PLAIN " + blob + "\r\n").encode())
        else:
            assert c.cmd("AUTH PLAIN")[0] == 334
            c.send((blob + "\r\n").encode())
        try:
            code, text = c.reply(timeout=10)
        except (ConnectionError, OSError) as e:
            raise AssertionError(f"petrel closed without a reply to 10 KB credentials: {e!r}")
        assert code in (500, 501), f"10 KB of credentials ({how}): {code} {text}"
    finally:
        c.close()
    p.assert_alive()
    world.assert_serving(p)


@pytest.mark.parametrize("creds", ["=", "", "AAA=", None], ids=["equals", "empty_line",
                                                              "two_nuls", "login_empty"])
def test_empty_credentials(world, pki, users_file, creds):
    p = auth_petrel(world, pki, users_file)
    c, _ = tls_raw(p, pki)
    with c:
        if creds is None:
            assert c.cmd("AUTH LOGIN")[0] == 334
            code, text = c.cmd("")
            if code == 334:                 # empty user name taken; then empty password
                code, text = c.cmd("")
        elif creds == "":
            assert c.cmd("AUTH PLAIN")[0] == 334
            code, text = c.cmd("")
        elif creds == "=":
            code, text = c.cmd("AUTH PLAIN =")
        else:
            code, text = c.cmd("AUTH PLAIN " + creds)    # "\0\0": empty user and password
        assert code in (535, 501), f"empty credentials ({creds!r}): {code} {text}"
        assert c.cmd("NOOP")[0] == 250
    world.assert_serving(p)


# ---------------------------------------------------------------- relay control

def test_relay_needs_auth_outside_relay_hosts(world, pki, users_file):
    dest = world.mx_domain("dest.test", "127.0.0.2")
    p = auth_petrel(world, pki, users_file, listener={"relay_hosts": ["10.0.0.0/8"]})
    # 1) unauthenticated (inside TLS): refused, logged.
    c, _ = tls_raw(p, pki)
    with c:
        assert c.cmd("MAIL FROM:<alice@sender.test>")[0] == 250
        code, text = c.cmd("RCPT TO:<noauth@dest.test>")
        assert code in (550, 554) and "5.7.1" in text, f"open relay? {code} {text}"
    rec = p.wait_record("Rejection", recipient="noauth@dest.test")
    check_record_keys(rec)
    assert rec["code"] in (550, 554) and rec["peer_address"] == "127.0.0.1", rec
    # 2) after a failed AUTH: still refused.
    c, _ = tls_raw(p, pki)
    with c:
        assert c.cmd("AUTH PLAIN " + plain("alice", "nope"))[0] == 535
        assert c.cmd("MAIL FROM:<alice@sender.test>")[0] == 250
        code, text = c.cmd("RCPT TO:<failedauth@dest.test>")
        assert code in (550, 554) and "5.7.1" in text, f"relay after failed AUTH: {code} {text}"
    p.wait_record("Rejection", recipient="failedauth@dest.test")
    # 3) authenticated: accepted and delivered.
    s = smtplib.SMTP(p.host, p.port, local_hostname="client.test", timeout=10)
    try:
        s.ehlo()
        s.starttls(context=ctx_of(pki))
        s.ehlo()
        s.login("alice", "Alice-pw1")
        data = make_message(to=["authed@dest.test"])
        p.send("alice@sender.test", ["authed@dest.test"], data, smtp=s)
    finally:
        s.quit()
    dest.wait_message(msgid_of(data))
    rec = p.wait_record("Reception", recipient="authed@dest.test")
    assert rec["tls"] and rec["peer_address"] == "127.0.0.1", rec
    time.sleep(0.5)
    assert not dest.for_rcpt("noauth@dest.test") and not dest.for_rcpt("failedauth@dest.test")


def test_auth_relay_is_per_session(world, pki, users_file):
    """Authentication does not leak to the next connection."""
    dest = world.mx_domain("dest.test", "127.0.0.2")
    p = auth_petrel(world, pki, users_file, listener={"relay_hosts": ["10.0.0.0/8"]})
    c, _ = tls_raw(p, pki)
    with c:
        assert c.cmd("AUTH PLAIN " + plain("alice", "Alice-pw1"))[0] == 235
    c, _ = tls_raw(p, pki)
    with c:
        assert c.cmd("MAIL FROM:<alice@sender.test>")[0] == 250
        code, text = c.cmd("RCPT TO:<leak@dest.test>")
        assert code in (550, 554), f"relay granted to an unauthenticated session: {code} {text}"
    assert not dest.messages()


def test_auth_user_in_hook_meta_and_default_tenant(world, pki, users_file):
    """The AUTH user becomes meta.auth_user and, with no listener tenant or X-Tenant,
    the tenant (issue 3)."""
    dest = world.mx_domain("dest.test", "127.0.0.2")
    hook = ('petrel.on("smtp_message_received", function(domain, meta)\n'
            '  petrel.add_header("X-Test-Auth-User", tostring(meta.auth_user))\n'
            '  petrel.add_header("X-Test-Tenant", tostring(meta.tenant))\n'
            'end)')
    p = auth_petrel(world, pki, users_file, listener={"relay_hosts": ["10.0.0.0/8"]},
                    extra=hook)
    s = smtplib.SMTP(p.host, p.port, local_hostname="client.test", timeout=10)
    try:
        s.ehlo()
        s.starttls(context=ctx_of(pki))
        s.ehlo()
        s.login("carol", "Carol-cram2")
        data = make_message(sender="carol@sender.test", to=["meta@dest.test"])
        p.send("carol@sender.test", ["meta@dest.test"], data, smtp=s)
    finally:
        s.quit()
    t = dest.wait_message(msgid_of(data))
    assert t.header("X-Test-Auth-User") == "carol", t.data[:800]
    assert t.header("X-Test-Tenant") == "carol", t.data[:800]


# ---------------------------------------------------------------- brute force

BAN = {"max_failures": 3, "failure_window": "10m", "ban_time": "3s"}
# The test client (127.0.0.1) outside relay_hosts: clients inside are never banned.
OUTSIDE = {"relay_hosts": ["10.0.0.0/8"]}


def assert_banned_greeting(p, what):
    """A new connection gets a 421 greeting (or is closed without a 220)."""
    s = socket.create_connection((p.host, p.port), timeout=10)
    try:
        data = b""
        try:
            while b"\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        except (ConnectionError, OSError):
            pass
        assert not data.startswith(b"220"), f"{what}: banned IP greeted with {data!r}"
        assert data.startswith(b"421"), f"{what}: expected a 421 greeting, got {data!r}"
    finally:
        s.close()


def assert_ban_record(p):
    rec = p.wait_record("Rejection", code=421, timeout=10)
    check_record_keys(rec)
    assert rec["peer_address"] == "127.0.0.1", rec
    assert re.search(r"auth", rec["response"] or "", re.I), \
        f"the ban record should mention AUTH failures: {rec}"
    return rec


def test_brute_force_ban_in_one_session(world, pki, users_file):
    p = auth_petrel(world, pki, users_file, auth=BAN, listener=OUTSIDE)
    c, _ = tls_raw(p, pki)
    t_ban = None
    try:
        assert_code(c.cmd("AUTH PLAIN " + plain("alice", "guess1")), 535, "5.7.8", "failure 1")
        assert_code(c.cmd("AUTH PLAIN " + plain("alice", "guess2")), 535, "5.7.8", "failure 2")
        code, text = c.cmd("AUTH PLAIN " + plain("alice", "guess3"))
        t_ban = time.monotonic()
        assert code in (535, 421), f"failure 3: {code} {text}"
        if code == 535:
            # Either petrel now says 421 by itself, or the next command gets it.
            try:
                code, text = c.reply(timeout=0.7)
            except (socket.timeout, TimeoutError):
                try:
                    code, text = c.cmd("AUTH PLAIN " + plain("alice", "Alice-pw1"), timeout=10)
                except ConnectionError:
                    raise AssertionError("closed without a 421 after the 3rd failure")
        assert code == 421, f"after 3 failures: {code} {text} (the right password must not work)"
        assert text.startswith("4.7.0"), text
        assert c.wait_closed(5), "petrel should close the connection after the 421"
    finally:
        c.close()
    assert_banned_greeting(p, "right after the ban")
    rec = assert_ban_record(p)
    assert rec["code"] == 421
    # The ban expires (ban_time 3s).
    wait_for(lambda: time.monotonic() - t_ban > 3.2, 10)

    def greeted():
        try:
            with p.raw(timeout=5) as cc:
                return True
        except (AssertionError, ConnectionError, OSError):
            return False
    wait_for(greeted, 10, "a 220 greeting after ban_time")
    c, _ = tls_raw(p, pki)
    with c:
        assert_code(c.cmd("AUTH PLAIN " + plain("alice", "Alice-pw1")), 235, "2.7.0",
                    "after the ban expired")
    p.assert_alive()


def test_brute_force_ban_across_connections(world, pki, users_file):
    p = auth_petrel(world, pki, users_file, auth=BAN, listener=OUTSIDE)
    for i in range(3):
        c, _ = tls_raw(p, pki)
        try:
            code, text = c.cmd("AUTH PLAIN " + plain("mallory", f"try{i}"))
            assert code in (535, 421), (i, code, text)
            if code == 421:
                assert i == 2, f"banned after {i + 1} failures, max_failures is 3"
        finally:
            c.close()
    assert_banned_greeting(p, "4th connection")
    assert_ban_record(p)
    # Nothing got through: the right password on a new connection still gets 421.
    assert_banned_greeting(p, "5th connection")
    time.sleep(3.5)
    c, _ = tls_raw(p, pki)
    with c:
        assert_code(c.cmd("AUTH PLAIN " + plain("alice", "Alice-pw1")), 235, "2.7.0")


def test_successful_auths_do_not_ban(world, pki, users_file):
    p = auth_petrel(world, pki, users_file, auth=BAN, listener=OUTSIDE)
    for _ in range(5):
        c, _ = tls_raw(p, pki)
        with c:
            assert_code(c.cmd("AUTH PLAIN " + plain("alice", "Alice-pw1")), 235, "2.7.0")
    with p.raw() as c:
        assert c.cmd("NOOP")[0] == 250
    assert not p.records("Rejection", code=421)
