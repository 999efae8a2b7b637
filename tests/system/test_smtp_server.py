"""The inbound SMTP server: ESMTP capabilities, relay control, command sequencing,
pipelining and split packets, a real client (swaks) (DESIGN §4 listener, §6)."""

import re
import smtplib
import socket
import time
import uuid

from harness import check_record_keys, make_message, msgid_of, swaks


def test_greeting_and_ehlo_name_and_capabilities(world):
    p = world.petrel(listener={"hostname": "relay.petrel.test", "max_message_size": "1MB"})
    s = smtplib.SMTP(local_hostname="client.test", timeout=10)
    try:
        code, msg = s.connect(p.host, p.port)
        assert code == 220, msg
        assert msg.split()[0] == b"relay.petrel.test", f"greeting should name the hostname: {msg!r}"
        code, resp = s.ehlo()
        assert code == 250, resp
        assert resp.split(b"\n")[0].split()[0] == b"relay.petrel.test", resp
        for ext in ("pipelining", "size", "8bitmime", "enhancedstatuscodes", "smtputf8"):
            assert s.has_extn(ext), f"EHLO does not advertise {ext.upper()}: {resp!r}"
        assert s.esmtp_features["size"].strip() == str(1024 * 1024), \
            f"SIZE should be max_message_size in bytes: {s.esmtp_features['size']!r}"
    finally:
        s.close()


def test_default_size_is_25mb(world):
    p = world.petrel()
    with p.smtp() as s:
        assert s.esmtp_features["size"].strip() == str(25 * 1024 * 1024)


def test_helo_works(world):
    p, dest, _ = world.basic()
    s = smtplib.SMTP(p.host, p.port, local_hostname="client.test", timeout=10)
    try:
        code, resp = s.helo()
        assert code == 250, resp
        assert resp.split()[0] == b"petrel.test", resp
        data = make_message(to=["helo@dest.test"])
        p.send("alice@sender.test", ["helo@dest.test"], data, smtp=s)
    finally:
        s.quit()
    dest.wait_message(msgid_of(data))


def test_relay_from_loopback_accepted(world):
    p, dest, _ = world.basic()
    mid = p.send_message("alice@sender.test", ["bob@dest.test"])
    dest.wait_message(mid)
    rec = p.wait_record("Reception", recipient="bob@dest.test")
    check_record_keys(rec)
    assert rec["code"] == 250 and rec["peer_address"] == "127.0.0.1"


def test_relay_denied_outside_relay_hosts(world):
    dest = world.mx_domain("dest.test", "127.0.0.2")
    p = world.petrel(listener={"relay_hosts": ["10.0.0.0/8"]})
    with p.smtp() as s:
        code, resp = s.mail("alice@sender.test")
        assert code == 250, resp
        code, resp = s.rcpt("victim@dest.test")
        assert code in (550, 554), f"open relay? RCPT got {code} {resp!r}"
        assert b"5.7.1" in resp, resp
        code, resp = s.rcpt("other@elsewhere.test")
        assert code in (550, 554) and b"5.7.1" in resp, (code, resp)
        code, resp = s.docmd("DATA")
        assert code in (503, 554), f"DATA with no accepted recipient: {code} {resp!r}"
    rec = p.wait_record("Rejection", recipient="victim@dest.test")
    check_record_keys(rec)
    assert rec["peer_address"] == "127.0.0.1", rec
    assert rec["code"] in (550, 554), rec
    time.sleep(1.0)
    assert not p.records("Reception"), p.records("Reception")
    assert not dest.messages()


def test_relay_hosts_cidr_match(world):
    """127.0.0.1 inside a /32 is allowed; the list is honoured, not just loopback."""
    p, dest, _ = world.basic(listener={"relay_hosts": ["10.1.2.0/24", "127.0.0.1/32"]})
    mid = p.send_message("alice@sender.test", ["cidr@dest.test"])
    dest.wait_message(mid)


def test_command_sequencing(world):
    p, _, _ = world.basic()
    c = p.raw()
    try:
        assert c.cmd("EHLO client.test")[0] == 250
        assert c.cmd("NOOP")[0] == 250
        assert c.cmd("RSET")[0] == 250
        code, text = c.cmd("FROBNICATE now")
        assert code == 500, (code, text)
        code, text = c.cmd("RCPT TO:<bob@dest.test>")
        assert code == 503, f"RCPT before MAIL: {code} {text}"
        code, text = c.cmd("DATA")
        assert code in (503, 554), f"DATA before MAIL: {code} {text}"
        assert c.cmd("MAIL FROM:<alice@sender.test>")[0] == 250
        code, text = c.cmd("MAIL FROM:<alice@sender.test>")
        assert code == 503, f"nested MAIL: {code} {text}"
        code, text = c.cmd("DATA")
        assert code in (503, 554), f"DATA before RCPT: {code} {text}"
        assert c.cmd("RSET")[0] == 250
        code, text = c.cmd("RCPT TO:<bob@dest.test>")
        assert code == 503, f"RCPT after RSET: {code} {text}"
        code, text = c.cmd("QUIT")
        assert code == 221, (code, text)
        assert c.wait_closed(5), "petrel should close the connection after QUIT"
    finally:
        c.close()


def test_enhanced_status_codes_in_replies(world):
    p, _, _ = world.basic()
    c = p.raw()
    try:
        c.cmd("EHLO client.test")
        code, text = c.cmd("MAIL FROM:<alice@sender.test>")
        assert code == 250 and re.match(r"2\.\d{1,3}\.\d{1,3}\b", text), (code, text)
        code, text = c.cmd("RCPT TO:<bob@dest.test>")
        assert code == 250 and re.match(r"2\.\d{1,3}\.\d{1,3}\b", text), (code, text)
        code, text = c.cmd("FROBNICATE")
        assert code == 500 and re.match(r"5\.\d{1,3}\.\d{1,3}\b", text), (code, text)
    finally:
        c.close()


def test_malformed_addresses_rejected(world):
    p, dest, _ = world.basic()
    c = p.raw()
    try:
        c.cmd("EHLO client.test")
        for bad in ("MAIL FROM:<unterminated@sender.test", "MAIL FROM:<a@b@c>",
                    "MAIL TO:<alice@sender.test>", "MAIL FROM:"):
            code, text = c.cmd(bad)
            assert 500 <= code <= 559, f"{bad!r} got {code} {text}"
        assert c.cmd("MAIL FROM:<alice@sender.test>")[0] == 250
        for bad in ("RCPT TO:<no-at-sign>", "RCPT TO:<bob@dest.test", "RCPT TO:"):
            code, text = c.cmd(bad)
            assert 500 <= code <= 559, f"{bad!r} got {code} {text}"
        assert c.cmd("RSET")[0] == 250
        code, text = c.cmd("MAIL FROM:<alice@sender.test> NOSUCHPARAM=1")
        assert 500 <= code <= 559, (code, text)
    finally:
        c.close()
    world.assert_serving(p)


def test_null_sender_accepted(world):
    p, dest, _ = world.basic()
    data = make_message("", ["bob@dest.test"], subject="null sender")
    p.send("", ["bob@dest.test"], data)
    t = dest.wait_message(msgid_of(data))
    assert t.mail_from == ""


def test_several_messages_on_one_connection(world):
    p, dest, _ = world.basic()
    ids = []
    with p.smtp() as s:
        for i in range(3):
            data = make_message(to=[f"m{i}@dest.test"], subject=f"msg {i}")
            p.send("alice@sender.test", [f"m{i}@dest.test"], data, smtp=s)
            ids.append(msgid_of(data))
        s.rset()
    for mid in ids:
        dest.wait_message(mid)
    recs = [p.wait_record("Reception", recipient=f"m{i}@dest.test") for i in range(3)]
    assert len({r["id"] for r in recs}) == 3, "each message gets its own id"


def test_pipelined_transaction(world):
    p, dest, _ = world.basic()
    data = make_message(to=["p1@dest.test", "p2@dest.test"], subject="pipelined")
    c = p.raw()
    try:
        assert c.cmd("EHLO client.test")[0] == 250
        c.send(b"MAIL FROM:<alice@sender.test>\r\nRCPT TO:<p1@dest.test>\r\n"
               b"RCPT TO:<p2@dest.test>\r\nDATA\r\n")
        codes = [r[0] for r in c.replies(4)]
        assert codes == [250, 250, 250, 354], codes
        c.send(data + b".\r\nQUIT\r\n")
        codes = [r[0] for r in c.replies(2)]
        assert codes == [250, 221], codes
    finally:
        c.close()
    t = dest.wait_message(msgid_of(data))
    assert sorted(t.rcpt_tos) == ["p1@dest.test", "p2@dest.test"]


def test_split_packets(world):
    """Commands and the end-of-data marker split across many small writes."""
    p, dest, _ = world.basic()
    data = make_message(to=["split@dest.test"], subject="split packets",
                        body="line one\r\n.dotted\r\nlast line\r\n")
    stuffed = data.replace(b"\r\n.", b"\r\n..")
    c = p.raw()
    c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def dribble(b, step=3):
        for i in range(0, len(b), step):
            c.send(b[i:i + step])
            time.sleep(0.002)
    try:
        dribble(b"EHLO client.test\r\n")
        assert c.reply()[0] == 250
        dribble(b"MAIL FROM:<alice@sender.test>\r\n")
        assert c.reply()[0] == 250
        dribble(b"RCPT TO:<split@dest.test>\r\n", step=1)
        assert c.reply()[0] == 250
        dribble(b"DATA\r\n", step=1)
        assert c.reply()[0] == 354
        dribble(stuffed[:-2], step=7)
        for piece in (b"\r", b"\n", b".", b"\r", b"\n"):
            c.send(piece)
            time.sleep(0.05)
        assert c.reply()[0] == 250
        assert c.cmd("QUIT")[0] == 221
    finally:
        c.close()
    t = dest.wait_message(msgid_of(data))
    assert b"\r\n.dotted\r\n" in t.data


def test_size_parameter_within_limit(world):
    p, dest, _ = world.basic(listener={"max_message_size": "100KB"})
    data = make_message(to=["sized@dest.test"])
    p.send("alice@sender.test", ["sized@dest.test"], data,
           mail_options=[f"SIZE={len(data)}"])
    dest.wait_message(msgid_of(data))


def test_smtputf8_addresses(world):
    p, dest, _ = world.basic()
    sender, rcpt = "jösé@sender.test", "bjørn@dest.test"
    data = make_message(sender, [rcpt], subject="smtputf8",
                        body="Grüße aus der Prüfung\r\n")
    p.send(sender, [rcpt], data, mail_options=["SMTPUTF8", "BODY=8BITMIME"])
    t = dest.wait_message(msgid_of(data))
    assert t.rcpt_tos == [rcpt]
    assert t.mail_from == sender
    assert "Grüße".encode() in t.data


def test_swaks_client(world):
    p, dest, _ = world.basic()
    tag = uuid.uuid4().hex
    res = swaks("--server", f"127.0.0.1:{p.port}", "--from", "alice@sender.test",
                "--to", "swaks@dest.test", "--helo", "client.test",
                "--header", f"Subject: swaks {tag}", "--body", f"sent by swaks {tag}")
    out = res.stdout.decode("utf-8", "replace")
    assert res.returncode == 0, out + res.stderr.decode("utf-8", "replace")
    t = world_wait_subject(dest, f"swaks {tag}")
    assert t.rcpt_tos == ["swaks@dest.test"]
    assert f"sent by swaks {tag}".encode() in t.data


def test_swaks_pipelining(world):
    p, dest, _ = world.basic()
    tag = uuid.uuid4().hex
    res = swaks("--server", f"127.0.0.1:{p.port}", "--from", "alice@sender.test",
                "--to", "sw1@dest.test,sw2@dest.test", "--pipeline",
                "--header", f"Subject: piped {tag}", "--body", "pipelined body")
    out = res.stdout.decode("utf-8", "replace")
    assert res.returncode == 0, out + res.stderr.decode("utf-8", "replace")
    t = world_wait_subject(dest, f"piped {tag}")
    assert sorted(t.rcpt_tos) == ["sw1@dest.test", "sw2@dest.test"]


def world_wait_subject(sink, subject, timeout=15):
    from harness import wait_for
    return wait_for(lambda: next((t for t in sink.messages() if t.header("Subject") == subject),
                                 None), timeout, f"a message with Subject {subject!r} at {sink}")
