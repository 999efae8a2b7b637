"""AUTH as real clients use it (issue 10, first defects): CRAM-MD5 is offered only
when the users file can serve it, a failure followed by a success in the same session
does not count toward the ban, clients inside relay_hosts are never banned, and the
ban's 421 on an implicit-TLS listener is never sent in clear.

Clients: Python's smtplib (tries CRAM-MD5, then PLAIN, then LOGIN) and curl (picks
CRAM-MD5 when offered), against crypt(3) users files made by petrelctl.
"""

import os
import smtplib
import socket
import ssl
import subprocess

import pytest

from certs import PKI, listener_tls
from harness import PETRELCTL_BIN, free_port, make_message, msgid_of

MECHS = ["PLAIN", "LOGIN", "CRAM-MD5"]
OUTSIDE = {"relay_hosts": ["10.0.0.0/8"]}      # 127.0.0.1 outside relay_hosts: bannable
BAN = {"max_failures": 5, "failure_window": "10m", "ban_time": "10m"}


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return PKI(tmp_path_factory.mktemp("pki"))


def hash_password(password, cram=False):
    args = [PETRELCTL_BIN, "hash-password"] + (["--cram-md5"] if cram else [])
    r = subprocess.run(args, input=(password + "\n").encode(), capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout.decode().strip()


@pytest.fixture(scope="module")
def crypt_users(tmp_path_factory):
    """Only crypt(3) entries: CRAM-MD5 cannot succeed for anyone."""
    path = os.path.join(str(tmp_path_factory.mktemp("users")), "users")
    with open(path, "w") as f:
        f.write(f"app1:{hash_password('s3cret')}\n")
        f.write(f"app2:{hash_password('other-pw')}\n")
    return path


@pytest.fixture(scope="module")
def mixed_users(tmp_path_factory):
    """One {CRAM-MD5} entry (so CRAM-MD5 is offered) and one crypt(3) user."""
    path = os.path.join(str(tmp_path_factory.mktemp("users")), "users")
    with open(path, "w") as f:
        f.write(f"app1:{hash_password('s3cret')}\n")
        f.write(f"cram1:{hash_password('cram-pw', cram=True)}\n")
    return path


def auth_extra(users_file, ban=BAN):
    return ("petrel.configure_auth { "
            f'users_file = "{users_file}", max_failures = {ban["max_failures"]}, '
            f'failure_window = "{ban["failure_window"]}", ban_time = "{ban["ban_time"]}" }}')


def start(world, pki, users_file, listener=None, ban=BAN):
    lst = {"tls": listener_tls(pki), "auth_mechanisms": MECHS, **OUTSIDE}
    lst.update(listener or {})
    return world.petrel(listener=lst, extra=auth_extra(users_file, ban))


def smtplib_login(p, pki, user, pw):
    s = smtplib.SMTP(p.host, p.port, local_hostname="client.test", timeout=15)
    try:
        s.ehlo()
        s.starttls(context=pki.client_context(verify=True))
        s.ehlo()
        mechs = set(s.esmtp_features.get("auth", "").upper().split())
        code, _ = s.login(user, pw)
        return code, mechs
    finally:
        try:
            s.quit()
        except (smtplib.SMTPException, OSError):
            pass


def test_cram_md5_not_offered_with_crypt_users(world, pki, crypt_users):
    p = start(world, pki, crypt_users)
    for i in range(8):
        code, mechs = smtplib_login(p, pki, "app1", "s3cret")
        assert code == 235, f"login {i + 1}: {code}"
        assert mechs == {"PLAIN", "LOGIN"}, f"EHLO AUTH offers {mechs} with a crypt(3)-only file"
    assert not p.records("Rejection", code=421), "a healthy client was banned"
    assert "CRAM-MD5 is not offered" in p.stderr_text(), "no start-up warning"
    # Asked for anyway, CRAM-MD5 is refused like any mechanism not offered (504).
    c = p.raw()
    with c:
        assert c.cmd("EHLO client.test")[0] == 250
        assert c.cmd("STARTTLS")[0] == 220
        c.sock = pki.client_context(verify=True).wrap_socket(c.sock, server_hostname="127.0.0.1")
        assert c.cmd("EHLO client.test")[0] == 250
        code, text = c.cmd("AUTH CRAM-MD5")
        assert code == 504, (code, text)
    p.assert_alive()


def test_failure_then_success_in_session_is_not_counted(world, pki, mixed_users):
    """CRAM-MD5 is offered (the file has a {CRAM-MD5} entry); smtplib's CRAM-MD5 for the
    crypt(3) user app1 fails (535) and PLAIN then succeeds, every time."""
    p = start(world, pki, mixed_users)
    for i in range(8):
        code, mechs = smtplib_login(p, pki, "app1", "s3cret")
        assert code == 235, f"login {i + 1}: {code}"
        assert "CRAM-MD5" in mechs, mechs
    assert not p.records("Rejection", code=421), "failure-then-success sessions were banned"
    # Real failures still ban: smtplib's wrong password fails CRAM-MD5, PLAIN and
    # LOGIN (3 failures a session); max_failures 5 bans during the second session.
    with pytest.raises(smtplib.SMTPAuthenticationError):
        smtplib_login(p, pki, "app1", "wrong0")
    with pytest.raises((smtplib.SMTPAuthenticationError, smtplib.SMTPServerDisconnected)):
        smtplib_login(p, pki, "app1", "wrong1")
    p.wait_record("Rejection", code=421, timeout=10)
    with pytest.raises((smtplib.SMTPServerDisconnected, smtplib.SMTPConnectError,
                        ConnectionError)):
        smtplib_login(p, pki, "app1", "s3cret")


def test_curl_with_crypt_users(world, pki, crypt_users):
    dest = world.mx_domain("dest.test", "127.0.0.2")
    p = start(world, pki, crypt_users)
    for i in range(6):
        data = make_message("app@sender.test", [f"curl{i}@dest.test"], subject=f"curl {i}")
        r = subprocess.run(
            ["curl", "-sS", "--max-time", "30", f"smtp://127.0.0.1:{p.port}",
             "--ssl-reqd", "--cacert", pki.ca_file, "--mail-from", "app@sender.test",
             "--mail-rcpt", f"curl{i}@dest.test", "--user", "app1:s3cret", "-T", "-"],
            input=data, capture_output=True, timeout=60)
        assert r.returncode == 0, f"curl {i + 1}: rc {r.returncode}: {r.stderr!r}"
        dest.wait_message(msgid_of(data))
    assert not p.records("Rejection", code=421)


def test_curl_cram_md5_user(world, pki, mixed_users):
    """With a {CRAM-MD5} entry curl picks CRAM-MD5 and it works."""
    dest = world.mx_domain("dest.test", "127.0.0.2")
    p = start(world, pki, mixed_users)
    data = make_message("app@sender.test", ["cram@dest.test"])
    r = subprocess.run(
        ["curl", "-sS", "-v", "--max-time", "30", f"smtp://127.0.0.1:{p.port}", "--ssl-reqd",
         "--cacert", pki.ca_file, "--mail-from", "app@sender.test", "--mail-rcpt",
         "cram@dest.test", "--user", "cram1:cram-pw", "-T", "-"],
        input=data, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert b"AUTH CRAM-MD5" in r.stderr, r.stderr[-2000:]
    dest.wait_message(msgid_of(data))


def test_relay_hosts_client_never_banned(world, pki, crypt_users):
    p = start(world, pki, crypt_users, listener={"relay_hosts": ["127.0.0.0/8"]},
              ban={"max_failures": 2, "failure_window": "10m", "ban_time": "10m"})
    for i in range(6):
        with pytest.raises(smtplib.SMTPAuthenticationError):
            smtplib_login(p, pki, "app1", f"wrong{i}")
    code, _ = smtplib_login(p, pki, "app1", "s3cret")
    assert code == 235
    assert not p.records("Rejection", code=421), "a relay_hosts client was banned"


def _ban_implicit(world, pki, users):
    port = free_port()
    p = world.petrel(listeners=[{"listen": f"127.0.0.1:{port}", "name": "smtps",
                                 "hostname": "petrel.test", "tls": listener_tls(pki, implicit=True),
                                 "auth_mechanisms": MECHS, **OUTSIDE}],
                     extra=auth_extra(users, {"max_failures": 2, "failure_window": "10m",
                                              "ban_time": "10m"}))
    for _ in range(1):   # smtplib tries PLAIN then LOGIN: two failures, banned
        s = smtplib.SMTP_SSL(p.host, port, local_hostname="client.test", timeout=10,
                             context=pki.client_context(verify=True))
        try:
            s.ehlo()
            with pytest.raises((smtplib.SMTPAuthenticationError, smtplib.SMTPServerDisconnected)):
                s.login("app1", "wrong")
        finally:
            s.close()
    p.wait_record("Rejection", code=421, timeout=10)
    return p, port


def test_ban_421_on_implicit_tls_not_in_clear(world, pki, crypt_users):
    p, port = _ban_implicit(world, pki, crypt_users)
    # A plain TCP client that speaks first gets nothing in clear: petrel waits for a
    # ClientHello and closes (at most the greeting/refusal timeout later).
    s = socket.create_connection(("127.0.0.1", port), timeout=15)
    try:
        got = b""
        try:
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                got += chunk
        except (socket.timeout, ConnectionError):
            pass
        assert b"421" not in got and b"220" not in got, f"said in clear: {got!r}"
    finally:
        s.close()
    # Over TLS the banned client reads the 421 after the handshake.
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    t = pki.client_context(verify=True).wrap_socket(raw, server_hostname="127.0.0.1")
    try:
        data = b""
        while b"\n" not in data:
            chunk = t.recv(4096)
            if not chunk:
                break
            data += chunk
        assert data.startswith(b"421 4.7.0"), data
    finally:
        t.close()
    p.assert_alive()


def test_connection_limit_on_implicit_tls_not_in_clear(world, pki, crypt_users):
    """Over max_connections_per_ip on an implicit-TLS listener: closed, never a 421 in
    clear (a TLS client would read it as a broken handshake)."""
    port = free_port()
    p = world.petrel(listeners=[{"listen": f"127.0.0.1:{port}", "name": "smtps",
                                 "hostname": "petrel.test", "tls": listener_tls(pki, implicit=True),
                                 "max_connections_per_ip": 2}])
    held = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(2)]
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        try:
            got = b""
            try:
                while True:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    got += chunk
            except (socket.timeout, ConnectionError):
                pass
            assert got == b"", f"said in clear: {got!r}"
        finally:
            s.close()
    finally:
        for h in held:
            h.close()
    p.assert_alive()
