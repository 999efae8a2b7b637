"""8-bit downgrade (RFC 6152 §3): 8-bit content to a next hop without 8BITMIME is
converted to 7 bit (text parts quoted-printable, other leaf parts base64) before
petrel's DKIM signature, so the signature verifies; content that cannot be converted
(binary, message/* with 8-bit, an 8-bit header, a client's DKIM signature) still
bounces with 5.6.3. `configure_delivery { eight_bit_downgrade = true }` (the default).
The next hop is standards_sinks.CapsSink without 8BITMIME.
"""

import email
import email.policy

import pytest

from harness import Lua, make_message, msgid_of, raw_send, run_petrel, wait_for
from test_dkim import keys, verify_all  # noqa: F401 (fixture)
from test_standards_outbound import caps_hop, mail_lines

TEXT = "naïve café — Grüße aus Köln\r\nzweite Zeile mit ß und € " + "ä" * 60 + "\r\n" \
       "trailing space \r\n=equals= sign\r\n"


def seven_bit(data):
    assert all(b < 0x80 for b in data), [l for l in data.split(b"\r\n") if max(l or b"\0") >= 0x80][:3]
    assert all(len(l) <= 998 for l in data.split(b"\r\n"))


def body_text(part):
    return part.get_payload(decode=True).decode(part.get_content_charset())


def test_text_plain_becomes_quoted_printable(world):
    hop = caps_hop(world, "dest.test", ["PIPELINING"])
    p = world.petrel()
    data = make_message(subject="qp", body=TEXT, headers={
        "MIME-Version": "1.0", "Content-Type": "text/plain; charset=utf-8",
        "Content-Transfer-Encoding": "8bit"})
    raw_send(p, "alice@sender.test", ["bob@dest.test"], data, " BODY=8BITMIME")
    t = hop.wait_message(msgid_of(data), timeout=30)
    seven_bit(t.data)
    assert b"BODY=" not in mail_lines(hop)[0].upper()
    msg = email.message_from_bytes(t.data)
    assert msg["Content-Transfer-Encoding"] == "quoted-printable"
    assert len(msg.get_all("Content-Transfer-Encoding")) == 1
    assert body_text(msg) == TEXT.replace("\r\n", "\n") or body_text(msg) == TEXT
    p.wait_record("Delivery", recipient="bob@dest.test")


def test_no_mime_headers_gets_them(world):
    hop = caps_hop(world, "dest.test", ["PIPELINING"])
    p = world.petrel()
    data = make_message(subject="bare", body=TEXT)
    raw_send(p, "alice@sender.test", ["bob@dest.test"], data, " BODY=8BITMIME")
    t = hop.wait_message(msgid_of(data), timeout=30)
    seven_bit(t.data)
    msg = email.message_from_bytes(t.data)
    assert msg["MIME-Version"] == "1.0"
    assert msg.get_content_charset() == "utf-8"
    assert body_text(msg).replace("\r\n", "\n") == TEXT.replace("\r\n", "\n")


def multipart_message(extra_part=b""):
    b = "b0undary"
    body = (f"preamble\r\n--{b}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Transfer-Encoding: 8bit\r\n\r\n{TEXT}\r\n--{b}\r\n"
            f"Content-Type: text/html; charset=utf-8\r\n\r\n<p>{TEXT}</p>\r\n--{b}\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
            ).encode() + b"\xff\xfe\x80 raw\r\nbytes\r\n" + extra_part + f"\r\n--{b}--\r\n".encode()
    return make_message(subject="multi", body=body, headers={
        "MIME-Version": "1.0", "Content-Type": f'multipart/alternative; boundary="{b}"'})


def test_multipart_parts_converted_each(world):
    hop = caps_hop(world, "dest.test", ["PIPELINING"])
    p = world.petrel()
    data = multipart_message()
    raw_send(p, "alice@sender.test", ["bob@dest.test"], data, " BODY=8BITMIME")
    t = hop.wait_message(msgid_of(data), timeout=30)
    seven_bit(t.data)
    msg = email.message_from_bytes(t.data)
    parts = msg.get_payload()
    assert [x.get_content_type() for x in parts] == ["text/plain", "text/html",
                                                      "application/octet-stream"]
    assert parts[0]["Content-Transfer-Encoding"] == "quoted-printable"
    assert body_text(parts[0]) == TEXT
    assert body_text(parts[1]) == f"<p>{TEXT}</p>"
    assert parts[2]["Content-Transfer-Encoding"] == "base64"
    assert parts[2].get_payload(decode=True) == b"\xff\xfe\x80 raw\r\nbytes\r\n"


def test_dkim_signature_covers_the_converted_form(world, keys):  # noqa: F811
    hop = caps_hop(world, "dest.test", ["PIPELINING"])
    p = world.petrel(extra=Lua(f'''
petrel.configure_dkim_signing {{ domain = "sender.test", selector = "s1",
  key_file = "{keys["rsa"]}" }}
'''))
    data = multipart_message()
    raw_send(p, "alice@sender.test", ["bob@dest.test"], data, " BODY=8BITMIME")
    t = hop.wait_message(msgid_of(data), timeout=30)
    seven_bit(t.data)
    ok, sigs = verify_all(t.data, keys)
    assert sigs and all(ok), (ok, sigs)


@pytest.mark.parametrize("kind", ["binary", "message", "header", "signed"])
def test_unconvertible_still_bounces_5_6_3(world, kind):
    world.mx_domain("sender.test", "127.0.0.3")
    hop = caps_hop(world, "dest.test", ["PIPELINING"])
    p = world.petrel()
    headers = {"MIME-Version": "1.0", "Content-Type": "text/plain; charset=utf-8"}
    subject = "unconvertible"
    if kind == "binary":
        headers["Content-Transfer-Encoding"] = "binary"
    elif kind == "message":
        headers["Content-Type"] = "message/rfc822"
    elif kind == "header":
        subject = "Grüße"
    else:
        headers["DKIM-Signature"] = "v=1; a=rsa-sha256; d=sender.test; s=x; b=AAAA; bh=AAAA"
    body = ("Subject: inner\r\n\r\n" if kind == "message" else "") + TEXT
    data = make_message(subject=subject, body=body, headers=headers)
    raw_send(p, "alice@sender.test", ["bob@dest.test"], data, " BODY=8BITMIME")
    rec = p.wait_record("Bounce", recipient="bob@dest.test", timeout=30)
    assert "5.6.3" in (rec["response"] or ""), rec
    assert not mail_lines(hop)


def test_check_validates_option(tmp_path):
    path = tmp_path / "petrel.lua"
    path.write_text(f'petrel.configure_queue {{ spool_dir = "{tmp_path}/spool" }}\n'
                    'petrel.configure_delivery { eight_bit_downgrade = "bounce" }\n')
    res = run_petrel("-c", str(path), "--check", cwd=str(tmp_path))
    assert res.returncode == 1 and f"{path}:2:" in res.stderr.decode() \
        and "eight_bit_downgrade" in res.stderr.decode(), res.stderr
