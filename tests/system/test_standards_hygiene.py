"""Submission, envelope and content hygiene (issue 11): listener `tls_required`
(530 5.7.0 before STARTTLS), the Received: protocol names of RFC 3848 / RFC 6531
(SMTP, ESMTP, ESMTPS, ESMTPA, ESMTPSA, UTF8SMTP...), VRFY/EXPN/HELP/NOOP/RSET, the
RFC 5321 §4.1.2 path syntax (quoted local parts, address literals) with garbage
refused, unknown parameters 555, and Date:/Message-ID: added when missing (Postfix's
always_add_missing_headers) for DATA and BDAT alike.
"""

import base64
import os
import re
import smtplib
import subprocess

import pytest

from certs import PKI, listener_tls
from harness import PETREL_BIN, make_message, msgid_of, split_first_header


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return PKI(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def users_file(tmp_path_factory):
    """One PLAIN user, hashed by petrelctl (as test_auth does)."""
    from harness import PETRELCTL_BIN
    d = tmp_path_factory.mktemp("users")
    out = subprocess.run([PETRELCTL_BIN, "hash-password"], input="Secret-pw1\n", text=True,
                         capture_output=True, timeout=30)
    assert out.returncode == 0, out.stderr
    path = os.path.join(str(d), "users.txt")
    with open(path, "w") as f:
        f.write(f"carl:{out.stdout.strip().splitlines()[-1]}\n")
    return path


def plain_auth(c):
    token = base64.b64encode(b"\0carl\0Secret-pw1").decode()
    code, text = c.cmd(f"AUTH PLAIN {token}")
    assert code == 235, (code, text)


def received_with(t):
    first, _ = split_first_header(t.data)
    m = re.search(rb"\bwith ([A-Z0-9]+) id ", first)
    assert m, first
    return m.group(1).decode()


def tls_client(pki):
    return pki.client_context(verify=False)


# ---------------------------------------------------------------- tls_required

def test_tls_required_refuses_mail_before_starttls(world, pki):
    dest = world.mx_domain("dest.test", "127.0.0.2")
    p = world.petrel(listener={"tls": listener_tls(pki), "tls_required": True})
    s = smtplib.SMTP(p.host, p.port, local_hostname="client.test", timeout=10)
    try:
        s.ehlo()
        code, resp = s.mail("alice@sender.test")
        assert (code, resp) == (530, b"5.7.0 Must issue a STARTTLS command first"), (code, resp)
        s.starttls(context=tls_client(pki))
        s.ehlo()
        data = make_message(subject="after starttls")
        s.sendmail("alice@sender.test", ["bob@dest.test"], data)
    finally:
        s.quit()
    t = dest.wait_message(msgid_of(data))
    assert received_with(t) == "ESMTPS"


def test_tls_required_off_by_default(world, pki):
    world.mx_domain("dest.test", "127.0.0.2")
    p = world.petrel(listener={"tls": listener_tls(pki)})
    with p.raw() as c:
        assert c.cmd("EHLO client.test")[0] == 250
        assert c.cmd("MAIL FROM:<alice@sender.test>")[0] == 250


def test_tls_required_implicit_tls_listener(world, pki):
    """On an implicit-TLS (465) listener every session is already encrypted."""
    dest = world.mx_domain("dest.test", "127.0.0.2")
    p = world.petrel(listener={"tls": listener_tls(pki, implicit=True), "tls_required": True})
    s = smtplib.SMTP_SSL(p.host, p.port, local_hostname="client.test", timeout=10,
                         context=tls_client(pki))
    try:
        data = make_message(subject="implicit")
        s.sendmail("alice@sender.test", ["bob@dest.test"], data)
    finally:
        s.quit()
    assert received_with(dest.wait_message(msgid_of(data))) == "ESMTPS"


def test_tls_required_without_tls_is_a_config_error(world, tmp_path):
    cfg = tmp_path / "bad.lua"
    cfg.write_text('\n\npetrel.start_smtp_listener {\n  listen = "127.0.0.1:2599",\n'
                   '  tls_required = true,\n}\n')
    r = subprocess.run([PETREL_BIN, "--check", "-c", str(cfg)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 1, r
    assert re.search(r"bad\.lua:\d+: .*tls_required", r.stderr), r.stderr
    cfg.write_text('petrel.start_smtp_listener { listen = "127.0.0.1:2599", tls_required = "yes" }\n')
    r = subprocess.run([PETREL_BIN, "--check", "-c", str(cfg)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 1 and "tls_required" in r.stderr, r


# ---------------------------------------------------------------- Received: protocol

def test_received_protocol_names(world, pki, users_file):
    dest = world.mx_domain("dest.test", "127.0.0.2")
    extra = f'petrel.configure_auth {{ users_file = "{users_file}" }}'
    p = world.petrel(listener={"tls": listener_tls(pki), "auth_mechanisms": ["PLAIN"],
                               "auth_require_tls": False}, extra=extra)
    sent = {}

    def send(c, tag, utf8=False):
        data = make_message(subject=tag)
        assert c.cmd("MAIL FROM:<alice@sender.test>" + (" SMTPUTF8" if utf8 else ""))[0] == 250
        assert c.cmd("RCPT TO:<bob@dest.test>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        c.send(data + b".\r\n")
        assert c.reply()[0] == 250
        sent[tag] = msgid_of(data)

    with p.raw() as c:
        assert c.cmd("HELO client.test")[0] == 250
        send(c, "SMTP")
        assert c.cmd("EHLO client.test")[0] == 250
        send(c, "ESMTP")
        send(c, "UTF8SMTP", utf8=True)
        plain_auth(c)
        send(c, "ESMTPA")
    s = smtplib.SMTP(p.host, p.port, local_hostname="client.test", timeout=10)
    try:
        s.starttls(context=tls_client(pki))
        s.ehlo()
        d1 = make_message(subject="ESMTPS")
        s.sendmail("alice@sender.test", ["bob@dest.test"], d1)
        sent["ESMTPS"] = msgid_of(d1)
        s.login("carl", "Secret-pw1")
        d2 = make_message(subject="ESMTPSA")
        s.sendmail("alice@sender.test", ["bob@dest.test"], d2)
        sent["ESMTPSA"] = msgid_of(d2)
    finally:
        s.quit()
    for proto, mid in sent.items():
        assert received_with(dest.wait_message(mid)) == proto, proto


# ---------------------------------------------------------------- envelope hygiene

def test_vrfy_expn_help_noop_rset(world):
    p = world.petrel()
    with p.raw() as c:
        assert c.cmd("EHLO client.test")[0] == 250
        code, text = c.cmd("VRFY bob@dest.test")
        assert code == 252 and text.startswith("2."), (code, text)
        assert c.cmd("VRFY")[0] == 501
        code, text = c.cmd("EXPN staff")
        assert code in (502, 252), (code, text)
        code, text = c.cmd("HELP")
        assert code == 214, (code, text)
        assert c.cmd("HELP MAIL")[0] == 214
        assert c.cmd("NOOP")[0] == 250
        assert c.cmd("NOOP anything")[0] == 250
        # RSET ends the transaction: RCPT needs a new MAIL
        assert c.cmd("MAIL FROM:<alice@sender.test>")[0] == 250
        assert c.cmd("RCPT TO:<bob@dest.test>")[0] == 250
        assert c.cmd("RSET")[0] == 250
        code, text = c.cmd("RCPT TO:<bob@dest.test>")
        assert code == 503, (code, text)
        assert c.cmd("DATA")[0] == 503
        assert c.cmd("MAIL FROM:<alice@sender.test>")[0] == 250
        # the commands that are allowed inside a transaction leave it intact
        assert c.cmd("VRFY bob")[0] == 252
        assert c.cmd("NOOP")[0] == 250
        assert c.cmd("RCPT TO:<bob@dest.test>")[0] == 250
        assert c.cmd("RSET")[0] == 250
        assert c.cmd("RSET")[0] == 250   # RSET with no transaction is fine too


GOOD_PATHS = [
    '"john doe"@dest.test',
    '"a\\"b@c"@dest.test',
    '"quoted.dots..ok"@dest.test',
    "o'brien+tag@dest.test",
    "user@[127.0.0.2]",
    "user@[IPv6:2001:db8::1]",
    "user@[IPv6:::1]",
]


def test_rfc5321_paths_accepted(world):
    p = world.petrel()
    with p.raw() as c:
        assert c.cmd("EHLO client.test")[0] == 250
        for path in GOOD_PATHS:
            code, text = c.cmd(f"MAIL FROM:<{path}>")
            assert code == 250, (path, code, text)
            assert c.cmd("RSET")[0] == 250
        assert c.cmd("MAIL FROM:<@relay.test,@other.test:alice@sender.test>")[0] == 250
        for path in GOOD_PATHS:
            code, text = c.cmd(f"RCPT TO:<{path}>")
            assert code == 250, (path, code, text)
        assert c.cmd("RCPT TO:<Postmaster>")[0] in (250, 550)   # accepted by syntax
        assert c.cmd("RSET")[0] == 250


def test_quoted_local_part_delivered_unchanged(world):
    p, dest, _ = world.basic()
    data = make_message(to=['"john doe"@dest.test'], subject="quoted")
    p.send("alice@sender.test", ['"john doe"@dest.test'], data)
    t = dest.wait_message(msgid_of(data))
    assert t.rcpt_tos == ['"john doe"@dest.test'], t.rcpt_tos


BAD_PATHS = [
    "a b@dest.test", "@dest.test", "user@", "user@@dest.test", "user@-bad.test",
    "user@bad-.test", "user@[300.1.1.1]", "user@[IPv6:zz::]", "user@[tag:content]",
    '"unterminated@dest.test', "user..dots@dest.test", ".lead@dest.test",
    "user@dest..test", "user@dest.test.", "<nested>@x.test",
]


def test_garbage_paths_refused(world):
    """Each refusal counts as an error (20 close the session), so a fresh
    connection per batch."""
    p = world.petrel()
    bad_lines = ([f"MAIL FROM:<{x}>" for x in BAD_PATHS] +
                 ["MAIL FROM:alice@sender.test", "MAIL FROM:<alice@sender.test",
                  "MAIL TO:<alice@sender.test>", "MAIL FROM:<alice@sender.test>x"])
    for i in range(0, len(bad_lines), 10):
        with p.raw() as c:
            assert c.cmd("EHLO client.test")[0] == 250
            for line in bad_lines[i:i + 10]:
                code, text = c.cmd(line)
                assert code in (501, 553), (line, code, text)
            assert c.cmd("MAIL FROM:<alice@sender.test>")[0] == 250
    rcpts = BAD_PATHS + [""]
    for i in range(0, len(rcpts), 10):
        with p.raw() as c:
            assert c.cmd("EHLO client.test")[0] == 250
            assert c.cmd("MAIL FROM:<alice@sender.test>")[0] == 250
            for path in rcpts[i:i + 10]:
                code, text = c.cmd(f"RCPT TO:<{path}>")
                assert code in (501, 553), (path, code, text)
            # nothing was taken: the transaction has no recipient
            assert c.cmd("DATA")[0] in (503, 554)
    p.assert_alive()


def test_unknown_parameters_555(world):
    p = world.petrel()
    with p.raw() as c:
        assert c.cmd("EHLO client.test")[0] == 250
        code, text = c.cmd("MAIL FROM:<alice@sender.test> FOO=bar")
        assert code == 555 and text.startswith("5.5.4"), (code, text)
        code, text = c.cmd("MAIL FROM:<alice@sender.test> XYZZY")
        assert code == 555, (code, text)
        code, text = c.cmd("MAIL FROM:<alice@sender.test> BODY=BINARY")
        assert code in (501, 555), (code, text)
        assert c.cmd("MAIL FROM:<alice@sender.test> SIZE=100 BODY=8BITMIME")[0] == 250
        code, text = c.cmd("RCPT TO:<bob@dest.test> FOO=bar")
        assert code == 555, (code, text)


# ---------------------------------------------------------------- content hygiene

def _headerless(subject, with_date=False, with_mid=False):
    h = f"From: <alice@sender.test>\r\nTo: <bob@dest.test>\r\nSubject: {subject}\r\n"
    if with_date:
        h += "Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
    if with_mid:
        h += "Message-ID: <mine@client.test>\r\n"
    return (h + "\r\nbody\r\n").encode()


def _by_subject(dest, subject):
    from harness import wait_for
    return wait_for(lambda: next((t for t in dest.messages() if t.header("Subject") == subject),
                                 None), 15, f"a message with subject {subject!r}")


def test_date_and_message_id_added_when_missing(world):
    p, dest, _ = world.basic()
    with p.raw() as c:
        assert c.cmd("EHLO client.test")[0] == 250
        for subject, body in (("data-none", _headerless("data-none")),
                              ("data-date", _headerless("data-date", with_date=True)),
                              ("data-both", _headerless("data-both", True, True))):
            assert c.cmd("MAIL FROM:<alice@sender.test>")[0] == 250
            assert c.cmd("RCPT TO:<bob@dest.test>")[0] == 250
            assert c.cmd("DATA")[0] == 354
            c.send(body + b".\r\n")
            assert c.reply()[0] == 250
        body = _headerless("bdat-none")
        assert c.cmd("MAIL FROM:<alice@sender.test>")[0] == 250
        assert c.cmd("RCPT TO:<bob@dest.test>")[0] == 250
        c.send(f"BDAT {len(body)} LAST\r\n".encode() + body)
        assert c.reply()[0] == 250

    ids = {r["id"] for r in p.wait_records("Reception", 4)}
    for subject in ("data-none", "bdat-none"):
        t = _by_subject(dest, subject)
        mid = t.header("Message-ID")
        m = re.fullmatch(r"<([0-9a-f]+)@petrel\.test>", mid or "")
        assert m and m.group(1) in ids, (subject, mid, ids)
        assert re.match(r"^[A-Z][a-z]{2}, \d{1,2} [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d [+-]\d{4}$",
                        t.header("Date") or ""), t.header("Date")
        assert t.data.count(b"\r\nMessage-ID:") == 1 and t.data.count(b"\r\nDate:") == 1
        # the client's own header and body follow, unchanged
        assert t.data.endswith(_headerless(subject)), t.data
    t = _by_subject(dest, "data-date")
    assert t.header("Date") == "Mon, 1 Jan 2024 00:00:00 +0000"
    assert t.data.count(b"\r\nDate:") == 1
    assert re.fullmatch(r"<[0-9a-f]+@petrel\.test>", t.header("Message-ID") or "")
    t = _by_subject(dest, "data-both")
    assert t.header("Message-ID") == "<mine@client.test>"
    assert t.header("Date") == "Mon, 1 Jan 2024 00:00:00 +0000"
    assert t.data.count(b"Message-ID:") == 1 and t.data.count(b"\r\nDate:") == 1
