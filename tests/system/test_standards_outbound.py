"""Outbound standards (issue 11): BDAT (RFC 3030) towards a next hop that offers
CHUNKING, with and without PIPELINING, DATA otherwise; `BODY=8BITMIME` declared only
for 8-bit content (RFC 6152); 8-bit content to a hop without 8BITMIME (with
`eight_bit_downgrade = false`; the conversion is in test_standards_8bit.py) and a UTF-8
envelope to a hop without SMTPUTF8 are never sent: they bounce locally with 5.6.3 /
5.6.7. The next hop is standards_sinks.CapsSink, which records the raw commands.
"""

import os
import re
import subprocess

from harness import raw_send, PETREL_BIN, make_message, msgid_of, parse_dsn, split_first_header, wait_for
from standards_sinks import CapsSink
from test_dkim import keys  # noqa: F401 (fixture)


def caps_hop(world, domain, exts):
    ip = world.new_ip()
    world.dns.add_mx(domain, f"mx.{domain}", 10)
    world.dns.add_a(f"mx.{domain}", ip)
    s = CapsSink(ip, world.mx_port, exts=exts, name=f"mx.{domain}")
    world.sinks.append(s)
    return s.start()


def mail_lines(sink):
    return [c for c in sink.command_lines() if c.upper().startswith(b"MAIL ")]


def bdat_lines(sink):
    return [c for c in sink.command_lines() if c.upper().startswith(b"BDAT ")]


DOTTY = "first\r\n.leading dot\r\n..two dots\r\n.\r\nlast\r\n"


def test_bdat_to_a_hop_offering_chunking(world):
    world.mx_domain("sender.test", "127.0.0.3")
    hop = caps_hop(world, "dest.test", ["PIPELINING", "8BITMIME", "CHUNKING"])
    p = world.petrel()
    data = make_message(subject="bdat out", body=DOTTY)
    p.send("alice@sender.test", ["bob@dest.test", "carol@dest.test"], data)
    t = hop.wait_message(msgid_of(data))
    assert t.via == "BDAT", hop.command_lines()
    assert split_first_header(t.data)[1] == data, "BDAT carries the content unstuffed"
    assert sorted(t.rcpt_tos) == ["bob@dest.test", "carol@dest.test"]
    cmds = hop.command_lines()
    assert not any(c.upper() == b"DATA" for c in cmds), cmds
    (b,) = bdat_lines(hop)
    assert re.fullmatch(rb"BDAT (\d+) LAST", b) and int(b.split()[1]) == len(t.data), b
    # 7-bit content: no BODY= parameter (RFC 6152: declare 8BITMIME only for 8-bit)
    (m,) = mail_lines(hop)
    assert b"BODY=" not in m.upper(), m
    p.wait_record("Delivery", recipient="bob@dest.test")


def test_bdat_without_pipelining(world):
    hop = caps_hop(world, "dest.test", ["8BITMIME", "CHUNKING"])
    p = world.petrel()
    data = make_message(subject="lock-step bdat", body=DOTTY)
    p.send("alice@sender.test", ["bob@dest.test", "carol@dest.test"], data)
    t = hop.wait_message(msgid_of(data))
    assert t.via == "BDAT"
    assert split_first_header(t.data)[1] == data
    cmds = [c.split(b" ")[0].upper() for c in hop.command_lines()]
    assert cmds[:5] == [b"EHLO", b"MAIL", b"RCPT", b"RCPT", b"BDAT"], cmds


def test_data_to_a_hop_without_chunking(world):
    hop = caps_hop(world, "dest.test", ["PIPELINING", "8BITMIME"])
    p = world.petrel()
    data = make_message(subject="data out", body=DOTTY)
    p.send("alice@sender.test", ["bob@dest.test"], data)
    t = hop.wait_message(msgid_of(data))
    assert t.via == "DATA"
    assert split_first_header(t.data)[1] == data
    assert bdat_lines(hop) == []


def test_body_8bitmime_only_for_8bit_content(world):
    hop = caps_hop(world, "dest.test", ["PIPELINING", "8BITMIME", "CHUNKING"])
    p = world.petrel()
    seven = make_message(subject="seven bit")
    eight = make_message(subject="eight bit", body="Grüße aus Köln\r\n")
    raw_send(p, "alice@sender.test", ["bob@dest.test"], seven)
    raw_send(p, "alice@sender.test", ["bob@dest.test"], eight, " BODY=8BITMIME")
    t7 = hop.wait_message(msgid_of(seven))
    t8 = hop.wait_message(msgid_of(eight))
    assert b"BODY=" not in t7.mail_line.upper(), t7.mail_line
    assert b" BODY=8BITMIME" in t8.mail_line.upper(), t8.mail_line
    assert "Grüße aus Köln\r\n".encode() in t8.data


def test_8bit_to_hop_without_8bitmime_bounces_5_6_3(world):
    """eight_bit_downgrade = false: no conversion (test_standards_8bit.py has it)."""
    sender = world.mx_domain("sender.test", "127.0.0.3")
    hop = caps_hop(world, "dest.test", ["PIPELINING"])
    p = world.petrel(delivery={"eight_bit_downgrade": False})
    eight = make_message(subject="eight bit, no 8BITMIME", body="naïve café\r\n")
    seven = make_message(subject="seven bit still goes")
    raw_send(p, "alice@sender.test", ["bob@dest.test"], eight, " BODY=8BITMIME")
    raw_send(p, "alice@sender.test", ["bob@dest.test"], seven)
    hop.wait_message(msgid_of(seven))
    rec = p.wait_record("Bounce", recipient="bob@dest.test")
    assert rec["code"] in (550, 554) and "5.6.3" in (rec["response"] or ""), rec
    # never sent: the hop saw exactly one MAIL (the 7-bit message)
    assert len(mail_lines(hop)) == 1, hop.command_lines()
    assert all(t.message_id != msgid_of(eight) for t in hop.messages())
    dsn = wait_for(lambda: next((t for t in sender.messages() if t.mail_from in ("", "<>")),
                                None), 20, "the DSN to alice@sender.test")
    d = parse_dsn(dsn.data)
    assert d["report_type"] == "delivery-status"
    assert d["recipients"] and d["recipients"][0].get("status") == "5.6.3", d["recipients"]


def test_utf8_envelope_to_hop_without_smtputf8_bounces_5_6_7(world):
    world.mx_domain("sender.test", "127.0.0.3")
    plain = caps_hop(world, "dest.test", ["PIPELINING", "8BITMIME", "CHUNKING"])
    utf8 = caps_hop(world, "utf8.test", ["PIPELINING", "8BITMIME", "CHUNKING", "SMTPUTF8"])
    p = world.petrel()
    d1 = make_message(to=["bøb@dest.test"], subject="utf8 rcpt, no SMTPUTF8")
    d2 = make_message(to=["bøb@utf8.test"], subject="utf8 rcpt, SMTPUTF8")
    raw_send(p, "alice@sender.test", ["bøb@dest.test"], d1, " SMTPUTF8")
    raw_send(p, "alice@sender.test", ["bøb@utf8.test"], d2, " SMTPUTF8")
    t = utf8.wait_message(msgid_of(d2))
    assert b" SMTPUTF8" in t.mail_line.upper(), t.mail_line
    assert t.rcpt_tos == ["bøb@utf8.test"]
    rec = p.wait_record("Bounce", recipient="bøb@dest.test")
    assert "5.6.7" in (rec["response"] or ""), rec
    assert mail_lines(plain) == [], plain.command_lines()


def test_chunking_option_validated(world, tmp_path):
    def check(text):
        f = tmp_path / "c.lua"
        f.write_text(text)
        return subprocess.run([PETREL_BIN, "--check", "-c", str(f)], capture_output=True,
                              text=True, timeout=30)
    base = 'petrel.start_smtp_listener { listen = "127.0.0.1:2598" }\n'
    r = check(base + "petrel.configure_delivery { chunking = true }\n")
    assert r.returncode == 0 and "config ok" in r.stdout, r
    r = check(base + 'petrel.configure_delivery { chunking = "yes" }\n')
    assert r.returncode == 1 and re.search(r"c\.lua:2: .*chunking", r.stderr), r
    r = check(base + "petrel.configure_delivery {\n  chunking = false,\n}\n")
    assert r.returncode == 0 and "config ok" in r.stdout, r


def test_chunking_false_sends_data_to_a_hop_offering_chunking(world):
    world.mx_domain("sender.test", "127.0.0.3")
    hop = caps_hop(world, "dest.test", ["PIPELINING", "8BITMIME", "CHUNKING"])
    p = world.petrel(delivery={"chunking": False})
    data = make_message(subject="data out", body=DOTTY)
    p.send("alice@sender.test", ["bob@dest.test"], data)
    t = hop.wait_message(msgid_of(data))
    assert t.via == "DATA", hop.command_lines()
    assert split_first_header(t.data)[1] == data


def _private_postfix(tmp_path, sink_port):
    """Debian's Postfix as a private next hop (own config, queue and log under
    tmp_path, loopback, stopped by its master's PID), through bench.py's helper."""
    import os
    import shutil
    import sys
    import pytest
    if not shutil.which("postfix") and not os.path.exists("/usr/sbin/postfix"):
        pytest.skip("postfix is not installed (scripts/deps.sh bench)")
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "bench"))
    from bench import Postfix
    import tempfile
    # pytest's tmp dirs are 0700: the postfix user could not reach its data dir
    work = tempfile.mkdtemp(prefix="petrel-test-postfix-")
    pf = Postfix(work, sink_port, conns=2)
    pf.workdir = work
    try:
        pf.start()
    except Exception:
        pf.stop()
        shutil.rmtree(work, ignore_errors=True)
        raise
    return pf


def test_bdat_to_real_postfix(world, tmp_path):
    """Postfix 3.x offers CHUNKING: petrel sends BDAT and Postfix's own log counts
    it (its disconnect line: "... bdat=1 ... commands=N"); the message arrives
    intact behind Postfix."""
    final = world.sink("127.0.0.1", world.other_port())
    pf = _private_postfix(tmp_path, final.port)
    try:
        p = world.petrel(transport={"dest.test": {"relayhost": f"[127.0.0.1]:{pf.port}"}})
        data = make_message(subject="through postfix", body=DOTTY + "Grüße\r\n")
        raw_send(p, "alice@sender.test", ["bob@dest.test"], data, " BODY=8BITMIME")
        t = final.wait_message(msgid_of(data), timeout=30)
        assert data.split(b"\r\n\r\n", 1)[1] in t.data
        p.wait_record("Delivery", recipient="bob@dest.test")
        maillog = os.path.join(pf.dir, "maillog")

        def bdat_logged():
            try:
                with open(maillog, errors="replace") as f:
                    return [ln for ln in f if "disconnect from" in ln and " bdat=" in ln]
            except OSError:
                return []
        p.stop()   # the connection to Postfix closes: it logs the disconnect line
        lines = wait_for(bdat_logged, 20, lambda: f"a disconnect line with bdat= in {maillog}")
        assert re.search(r" bdat=1\b", lines[0]) and " data=" not in lines[0], lines
    finally:
        pf.stop()
        import shutil
        shutil.rmtree(pf.workdir, ignore_errors=True)


def test_large_message_bdat_both_ways(world):
    """3 MB in three BDAT chunks in, one BDAT out, byte for byte (streaming through
    the connection's bounded input buffer; lines starting with dots untouched)."""
    hop = caps_hop(world, "dest.test", ["PIPELINING", "8BITMIME", "CHUNKING"])
    p = world.petrel()
    line = b".%07d " + b"abcdefghij" * 7 + b"\r\n"
    body = b"".join(line.replace(b"%07d", b"%07d" % i) for i in range(38000))
    data = make_message(subject="large bdat", body=body)
    third = len(data) // 3
    chunks = [data[:third], data[third:2 * third], data[2 * third:]]
    with p.raw(timeout=60) as c:
        assert c.cmd("EHLO client.test")[0] == 250
        assert c.cmd("MAIL FROM:<alice@sender.test>")[0] == 250
        assert c.cmd("RCPT TO:<bob@dest.test>")[0] == 250
        for i, ch in enumerate(chunks):
            c.send(f"BDAT {len(ch)}{' LAST' if i == 2 else ''}\r\n".encode() + ch)
        replies = c.replies(3, timeout=60)
        assert [r[0] for r in replies] == [250, 250, 250], replies
    t = hop.wait_message(msgid_of(data), timeout=60)
    assert t.via == "BDAT"
    assert split_first_header(t.data)[1] == data


def test_bdat_with_refused_recipients(world):
    """Pipelined MAIL, RCPTs and BDAT: a refused recipient bounces with its own
    reply while the others are delivered; when every recipient is refused the BDAT
    reply (554) does not overwrite theirs and the connection stays usable."""
    world.mx_domain("sender.test", "127.0.0.3")
    hop = caps_hop(world, "dest.test", ["PIPELINING", "8BITMIME", "CHUNKING"])
    hop.rcpt_reply = lambda a: "550 5.1.1 no such user" if a.startswith("nobody") else None
    p = world.petrel()
    d1 = make_message(subject="one refused")
    p.send("alice@sender.test", ["bob@dest.test", "nobody@dest.test"], d1)
    t = hop.wait_message(msgid_of(d1))
    assert t.rcpt_tos == ["bob@dest.test"] and t.via == "BDAT"
    rec = p.wait_record("Bounce", recipient="nobody@dest.test")
    assert rec["code"] == 550 and "5.1.1" in rec["response"], rec
    p.wait_record("Delivery", recipient="bob@dest.test")

    d2 = make_message(subject="all refused")
    p.send("alice@sender.test", ["nobody2@dest.test"], d2)
    rec = p.wait_record("Bounce", recipient="nobody2@dest.test")
    assert rec["code"] == 550 and "no such user" in rec["response"], rec
    d3 = make_message(subject="after all refused")
    p.send("alice@sender.test", ["carol@dest.test"], d3)
    hop.wait_message(msgid_of(d3))
    assert len(bdat_lines(hop)) == 3, hop.command_lines()


def test_bdat_final_reply_decides(world):
    """The reply to BDAT LAST is the delivery result: 452 defers, 554 bounces."""
    world.mx_domain("sender.test", "127.0.0.3")
    hop = caps_hop(world, "dest.test", ["PIPELINING", "8BITMIME", "CHUNKING"])
    hop.final_reply = "452 4.3.1 try later"
    p = world.petrel()
    d1 = make_message(subject="deferred")
    p.send("alice@sender.test", ["bob@dest.test"], d1)
    rec = p.wait_record("TransientFailure", recipient="bob@dest.test")
    assert rec["code"] == 452 and "4.3.1" in rec["response"], rec
    hop.final_reply = "554 5.6.0 content refused"
    rec = p.wait_record("Bounce", recipient="bob@dest.test", timeout=30)
    assert rec["code"] == 554 and "5.6.0" in rec["response"], rec
    assert hop.messages() == []


def test_petrel_to_petrel_bdat(world):
    """One petrel relays to another (which offers CHUNKING): BDAT both ways between
    the real daemons, the message intact (dot lines, 8-bit body) at the final sink."""
    final = world.sink("127.0.0.1", world.other_port())
    b_ip = world.new_ip()
    b = world.petrel(listener={"listen": f"{b_ip}:{world.mx_port}", "hostname": "b.petrel.test"},
                     transport={"dest.test": {"relayhost": f"[127.0.0.1]:{final.port}"}})
    world.dns.add_mx("dest.test", "mx.dest.test", 10)
    world.dns.add_a("mx.dest.test", b_ip)
    a = world.petrel()
    data = make_message(subject="a to b", body=DOTTY + "Grüße\r\n")
    raw_send(a, "alice@sender.test", ["bob@dest.test"], data, " BODY=8BITMIME")
    t = final.wait_message(msgid_of(data), timeout=30)
    assert t.data.endswith(data), t.data[:600]
    # b received it by BDAT (its session went through the chunk state), with BODY=8BITMIME
    assert "S_RCPT -> S_CHUNK" in b.stderr_text(), b.stderr_tail(40)
    assert t.data.count(b"Received: from ") >= 2


def send_binarymime(p, sender, rcpt, data, params=""):
    """One BODY=BINARYMIME transaction over BDAT (RFC 3030 §3)."""
    with p.raw() as c:
        assert c.cmd("EHLO client.test")[0] == 250
        assert c.cmd(f"MAIL FROM:<{sender}> BODY=BINARYMIME{params}")[0] == 250
        assert c.cmd(f"RCPT TO:<{rcpt}>")[0] == 250
        c.send(f"BDAT {len(data)} LAST\r\n".encode() + data)
        code, text = c.reply()
        assert code == 250, (code, text)


def binary_data(subject):
    head = make_message(subject=subject, body="").split(b"\r\n\r\n", 1)[0]
    return head + (b"\r\nMIME-Version: 1.0\r\nContent-Type: application/octet-stream\r\n"
                   b"Content-Transfer-Encoding: binary\r\n\r\n\x00\xff bare\nLF\rCR\r\n")


def test_binarymime_to_capable_hop(world):
    world.mx_domain("sender.test", "127.0.0.3")
    hop = caps_hop(world, "dest.test", ["8BITMIME", "CHUNKING", "BINARYMIME"])  # lock-step
    p = world.petrel()
    data = binary_data("binarymime out")
    send_binarymime(p, "alice@sender.test", "bob@dest.test", data)
    t = hop.wait_message(msgid_of(data), timeout=30)
    (m,) = mail_lines(hop)
    assert m.upper().endswith(b" BODY=BINARYMIME"), m
    assert t.via == "BDAT" and not any(c.upper() == b"DATA" for c in hop.command_lines())
    assert split_first_header(t.data)[1] == data
    p.wait_record("Delivery", recipient="bob@dest.test")


def test_binarymime_to_hop_without_bounces_5_6_3(world):
    """A hop offering CHUNKING but not BINARYMIME, and one without CHUNKING: the
    message is not converted, it bounces with 5.6.3 and nothing is sent."""
    sender = world.mx_domain("sender.test", "127.0.0.3")
    chunk = caps_hop(world, "dest.test", ["PIPELINING", "8BITMIME", "CHUNKING"])
    plain = caps_hop(world, "plain.test", ["PIPELINING", "8BITMIME", "BINARYMIME"])
    p = world.petrel()
    d1, d2 = binary_data("no binarymime"), binary_data("no chunking")
    send_binarymime(p, "alice@sender.test", "bob@dest.test", d1, " RET=FULL")
    send_binarymime(p, "alice@sender.test", "bob@plain.test", d2)
    for rcpt in ("bob@dest.test", "bob@plain.test"):
        rec = p.wait_record("Bounce", recipient=rcpt, timeout=30)
        assert rec["code"] == 554 and "5.6.3" in (rec["response"] or ""), rec
        assert "BINARYMIME" in rec["response"], rec
    assert mail_lines(chunk) == [] and mail_lines(plain) == [], \
        (chunk.command_lines(), plain.command_lines())
    dsns = wait_for(lambda: [t for t in sender.messages() if t.mail_from in ("", "<>")]
                    if len([t for t in sender.messages() if t.mail_from in ("", "<>")]) >= 2
                    else None, 30, "two DSNs to alice@sender.test")
    for dsn in dsns:
        d = parse_dsn(dsn.data)
        assert d["recipients"][0].get("status") == "5.6.3", d["recipients"]
        # RET=FULL or not, binary content never goes back: the header block does
        assert b"message/rfc822" not in dsn.data and b"\x00\xff bare" not in dsn.data
        assert b"text/rfc822-headers" in dsn.data


def test_binarymime_signed_and_relayed_intact(world, keys):  # noqa: F811
    """petrel's DKIM signature goes on a BINARYMIME message (NUL, bare CR/LF) without
    changing a content octet."""
    from harness import Lua
    world.mx_domain("sender.test", "127.0.0.3")
    hop = caps_hop(world, "dest.test", ["PIPELINING", "CHUNKING", "BINARYMIME"])
    p = world.petrel(extra=Lua(f'''
petrel.configure_dkim_signing {{ domain = "sender.test", selector = "s1",
  key_file = "{keys["rsa"]}" }}
'''))
    data = binary_data("binarymime signed")
    send_binarymime(p, "alice@sender.test", "bob@dest.test", data)
    t = hop.wait_message(msgid_of(data), timeout=30)
    assert t.data.lower().startswith(b"dkim-signature:"), t.data[:200]
    assert t.data.endswith(data), "content after the added headers is unchanged"
    p.wait_record("Delivery", recipient="bob@dest.test")


def test_binarymime_with_chunking_off_bounces_5_6_3(world):
    """chunking = false: no BDAT, so no way to send BINARYMIME content: 5.6.3."""
    world.mx_domain("sender.test", "127.0.0.3")
    hop = caps_hop(world, "dest.test", ["PIPELINING", "8BITMIME", "CHUNKING", "BINARYMIME"])
    p = world.petrel(delivery={"chunking": False})
    send_binarymime(p, "alice@sender.test", "bob@dest.test", binary_data("chunking off"))
    rec = p.wait_record("Bounce", recipient="bob@dest.test", timeout=30)
    assert rec["code"] == 554 and "5.6.3" in rec["response"] and "BDAT" in rec["response"], rec
    assert mail_lines(hop) == [], hop.command_lines()
