"""Inbound CHUNKING (RFC 3030) and LIMITS (RFC 9422): EHLO advertises CHUNKING,
BINARYMIME (BDAT only after BODY=BINARYMIME, content kept as sent) and LIMITS RCPTMAX; `BDAT n [LAST]` with and without PIPELINING, chunk
sizes checked against max_message_size before buffering (552 5.3.4, the octets
discarded, never read as commands), the reply to `BDAT ... LAST` is the durable 250
of the DATA path (hooks, Received:, spool), and the bad input of issue 11: BDAT mixed
with DATA, BDAT before MAIL/RCPT/EHLO, a chunk larger than the octets sent, BDAT 0 LAST.
Issue 11; DESIGN §6, §12.
"""

import smtplib
import time

from harness import make_message, msgid_of, split_first_header


def ehlo_exts(text):
    return [ln.strip().upper() for ln in text.split("\n")[1:]]


def start_txn(c, sender="alice@sender.test", rcpts=("bob@dest.test",)):
    assert c.cmd("EHLO client.test")[0] == 250
    assert c.cmd(f"MAIL FROM:<{sender}>")[0] == 250
    for r in rcpts:
        assert c.cmd(f"RCPT TO:<{r}>")[0] == 250


def bdat(c, data, last=True):
    c.send(f"BDAT {len(data)}{' LAST' if last else ''}\r\n".encode() + data)
    return c.reply()


def test_ehlo_advertises_chunking_and_limits(world):
    p = world.petrel(listener={"max_recipients": 7})
    with p.raw() as c:
        code, text = c.cmd("EHLO client.test")
        assert code == 250
        exts = ehlo_exts(text)
        assert "CHUNKING" in exts, exts
        assert "PIPELINING" in exts, exts
        assert "BINARYMIME" in exts, exts
        assert "LIMITS RCPTMAX=7" in exts, exts
        # the advertised limit is the real one: the 8th recipient is refused
        assert c.cmd("MAIL FROM:<alice@sender.test>")[0] == 250
        for i in range(7):
            assert c.cmd(f"RCPT TO:<r{i}@dest.test>")[0] == 250
        code, text = c.cmd("RCPT TO:<r7@dest.test>")
        assert code == 452, (code, text)
    with p.raw() as c:   # HELO sessions get no extensions at all
        code, text = c.cmd("HELO client.test")
        assert code == 250 and "CHUNKING" not in text.upper()


def test_bdat_last_delivers_with_received_first(world):
    p, dest, _ = world.basic()
    data = make_message(subject="one chunk", body="line 1\r\n.dot line\r\n.\r\nend\r\n")
    with p.raw() as c:
        start_txn(c)
        code, text = bdat(c, data)
        assert code == 250 and text.startswith("2.0.0"), (code, text)
        assert c.cmd("QUIT")[0] == 221
    t = dest.wait_message(msgid_of(data))
    first, rest = split_first_header(t.data)
    assert first.startswith(b"Received: from client.test"), first
    assert b"by petrel.test" in first and b"with ESMTP " in first, first
    assert rest == data, "BDAT content must arrive byte for byte (dots are not stuffing)"
    rec = p.wait_record("Reception", recipient="bob@dest.test")
    assert rec["protocol"] == "smtp" and rec["code"] == 250


def test_bdat_pipelined_chunks_split_crlf(world):
    """Everything in one write; a CRLF split across two chunks stays one CRLF; chunk
    octets that look like commands are content."""
    p, dest, _ = world.basic()
    data = make_message(subject="pipelined chunks",
                        body="RSET\r\nQUIT\r\nMAIL FROM:<evil@x.test>\r\nlast line\r\n")
    cut = data.index(b"\r\n", len(data) // 2) + 1          # chunk 1 ends with the CR
    parts = [data[:cut], data[cut:cut + 5], data[cut + 5:]]
    wire = (b"EHLO client.test\r\nMAIL FROM:<alice@sender.test>\r\nRCPT TO:<bob@dest.test>\r\n"
            + b"".join(f"BDAT {len(x)}{' LAST' if i == 2 else ''}\r\n".encode() + x
                       for i, x in enumerate(parts))
            + b"NOOP\r\n")
    with p.raw() as c:
        c.send(wire)
        replies = c.replies(7)
        codes = [r[0] for r in replies]
        assert codes == [250, 250, 250, 250, 250, 250, 250], replies
        assert f"{cut} octets" in replies[3][1], replies[3]
        assert "queued as" in replies[5][1], replies[5]
    t = dest.wait_message(msgid_of(data))
    assert split_first_header(t.data)[1] == data
    assert len(dest.messages()) == 1


def test_bdat_with_smtplib_and_hooks(world):
    """smtplib driving BDAT by hand; the smtp_message_received hook runs for BDAT
    mail as for DATA (same path)."""
    dest = world.mx_domain("dest.test", "127.0.0.2")
    world.mx_domain("sender.test", "127.0.0.3")
    p = world.petrel(extra='petrel.on("smtp_message_received", function(domain, meta)\n'
                           '  petrel.add_header("X-Hooked", "bdat " .. domain)\nend)\n')
    data = make_message(subject="smtplib bdat")
    s = p.smtp()
    try:
        assert s.has_extn("chunking")
        assert s.mail("alice@sender.test")[0] == 250
        assert s.rcpt("bob@dest.test")[0] == 250
        half = len(data) // 2
        s.send(f"BDAT {half}\r\n".encode() + data[:half])
        code, resp = s.getreply()
        assert code == 250, (code, resp)
        s.send(f"BDAT {len(data) - half} LAST\r\n".encode() + data[half:])
        code, resp = s.getreply()
        assert code == 250 and b"queued as" in resp, (code, resp)
    finally:
        s.quit()
    t = dest.wait_message(msgid_of(data))
    assert t.header("X-Hooked") == "bdat dest.test", t.data[:400]


def test_bdat_reply_is_durable(world):
    """kill -9 right after the 250 to BDAT LAST: the message is delivered after
    restart (the 250 came after the spool fsync)."""
    world.mx_domain("dest.test", "127.0.0.2", sink=False)
    p = world.petrel()
    data = make_message(subject="durable bdat")
    with p.raw() as c:
        start_txn(c)
        code, text = bdat(c, data)
        assert code == 250, (code, text)
    p.kill()
    dest = world.sink("127.0.0.2")
    p.restart()
    dest.wait_message(msgid_of(data), timeout=30)


def test_bdat_too_big_refused_before_buffering(world):
    p, dest, _ = world.basic(listener={"max_message_size": "1KB"})
    big = b"X" * 600 + b"\r\nQUIT\r\nRSET\r\n" + b"Y" * 1000 + b"\r\n"
    with p.raw() as c:
        start_txn(c)
        # one chunk over the limit: 552, its octets (with command-like lines) dropped
        code, text = bdat(c, big)
        assert code == 552 and text.startswith("5.3.4"), (code, text)
        assert c.cmd("NOOP")[0] == 250
        # the transaction is over: a further chunk in the pipeline is 503, discarded
        c.send(b"BDAT 6 LAST\r\nQUIT\r\nNOOP\r\n")
        code, text = c.reply()
        assert code == 503, (code, text)
        assert c.reply() == (250, "2.0.0 Ok")
        # the limit counts all chunks: 600 + 600 > 1024
        assert c.cmd("MAIL FROM:<alice@sender.test>")[0] == 250
        assert c.cmd("RCPT TO:<bob@dest.test>")[0] == 250
        code, _ = bdat(c, b"a" * 598 + b"\r\n", last=False)
        assert code == 250
        code, text = bdat(c, b"b" * 598 + b"\r\n", last=True)
        assert code == 552 and text.startswith("5.3.4"), (code, text)
        assert c.cmd("RSET")[0] == 250
        # and a message within the limit still goes through on the same connection
        small = make_message(subject="small")
        start_txn(c)
        assert bdat(c, small)[0] == 250
    dest.wait_message(msgid_of(small))
    assert len(dest.messages()) == 1
    rej = p.wait_record("Rejection", code=552)
    assert rej["recipient"] == "bob@dest.test"


def test_bdat_and_data_interleaved(world):
    p, dest, _ = world.basic()
    data = make_message(subject="interleaved")
    with p.raw() as c:
        start_txn(c)
        assert bdat(c, data[:40], last=False)[0] == 250
        code, text = c.cmd("DATA")
        assert code == 503, (code, text)
        code, text = c.cmd("MAIL FROM:<other@sender.test>")
        assert code == 503, (code, text)
        assert c.cmd("NOOP")[0] == 250
        # the BDAT message is still intact and can be finished
        code, text = bdat(c, data[40:], last=True)
        assert code == 250 and "queued as" in text, (code, text)
        # a DATA transaction afterwards works as usual
        start_txn(c)
        d2 = make_message(subject="after bdat")
        assert c.cmd("DATA")[0] == 354
        c.send(d2 + b".\r\n")
        assert c.reply()[0] == 250
    dest.wait_message(msgid_of(data))
    dest.wait_message(msgid_of(d2))


def test_bdat_0_last(world):
    p, dest, _ = world.basic()
    data = make_message(subject="ends with BDAT 0 LAST")
    with p.raw() as c:
        start_txn(c)
        assert bdat(c, data, last=False)[0] == 250
        code, text = c.cmd("BDAT 0 LAST")
        assert code == 250 and "queued as" in text, (code, text)
        # BDAT 0 LAST as the only chunk: an empty message, accepted like an empty DATA
        start_txn(c)
        code, text = c.cmd("BDAT 0 LAST")
        assert code == 250 and "queued as" in text, (code, text)
        # BDAT 0 (not last) is a no-op chunk
        start_txn(c)
        assert c.cmd("BDAT 0")[0] == 250
        assert c.cmd("RSET")[0] == 250
    t = dest.wait_message(msgid_of(data))
    assert split_first_header(t.data)[1] == data
    dest.wait_count(2)


def test_bdat_before_ehlo_mail_rcpt(world):
    p, dest, _ = world.basic()
    junk = b"RSET\r\nQUIT\r\n"
    with p.raw() as c:
        c.send(f"BDAT {len(junk)}\r\n".encode() + junk + b"NOOP\r\n")
        code, text = c.reply()
        assert code == 503, (code, text)
        assert c.reply()[0] == 250                      # the NOOP, nothing in between
        assert c.cmd("EHLO client.test")[0] == 250
        c.send(f"BDAT {len(junk)} LAST\r\n".encode() + junk + b"NOOP\r\n")
        code, text = c.reply()
        assert code == 503 and "MAIL" in text, (code, text)
        assert c.reply()[0] == 250
        assert c.cmd("MAIL FROM:<alice@sender.test>")[0] == 250
        c.send(f"BDAT {len(junk)} LAST\r\n".encode() + junk + b"NOOP\r\n")
        code, text = c.reply()
        assert code == 503 and "RCPT" in text, (code, text)
        assert c.reply()[0] == 250
        # the transaction survives the refused chunk
        assert c.cmd("RCPT TO:<bob@dest.test>")[0] == 250
        data = make_message(subject="after refused chunks")
        assert bdat(c, data)[0] == 250
    dest.wait_message(msgid_of(data))
    assert len(dest.messages()) == 1


def test_bdat_after_helo_refused(world):
    p = world.petrel()
    with p.raw() as c:
        assert c.cmd("HELO client.test")[0] == 250
        assert c.cmd("MAIL FROM:<alice@sender.test>")[0] == 250
        assert c.cmd("RCPT TO:<bob@dest.test>")[0] == 250
        c.send(b"BDAT 4 LAST\r\nQUITNOOP\r\n")
        assert c.reply()[0] == 503
        assert c.reply()[0] == 250


def test_bdat_chunk_larger_than_sent_times_out(world):
    p, dest, _ = world.basic(listener={"data_timeout": "2s"})
    with p.raw() as c:
        start_txn(c)
        c.send(b"BDAT 1000 LAST\r\nonly a few octets\r\nQUIT\r\n")
        t0 = time.monotonic()
        code, text = c.reply(timeout=20)
        assert code == 421 and "4.4.2" in text, (code, text)
        assert time.monotonic() - t0 >= 1.5
        assert c.wait_closed(10)
    time.sleep(0.5)
    assert dest.messages() == []
    world.assert_serving(p)


def test_bdat_bad_syntax_closes(world):
    p = world.petrel()
    for line in ("BDAT", "BDAT abc", "BDAT 10 FIRST", "BDAT -1", "BDAT 99999999999999999999999"):
        with p.raw() as c:
            start_txn(c)
            code, text = c.cmd(line)
            assert code == 501, (line, code, text)
            assert c.wait_closed(10), line
    p.assert_alive()


def test_bdat_long_line_and_bare_lf(world):
    p, dest, _ = world.basic()
    with p.raw() as c:
        start_txn(c)
        long = make_message(subject="long line", body=b"x" * 1200 + b"\r\n")
        code, text = bdat(c, long)
        assert code == 554 and text.startswith("5.6.0"), (code, text)
        # a bare LF is never stored bare: normalized to CRLF (or refused outright)
        start_txn(c)
        bare = make_message(subject="bare lf", body=b"one\ntwo\r\nthree\n")
        code, text = bdat(c, bare)
        assert code in (250, 550, 554), (code, text)
    if code == 250:
        t = dest.wait_message(msgid_of(bare))
        body = t.data.split(b"\r\n\r\n", 1)[1]
        assert body == b"one\r\ntwo\r\nthree\r\n", body
    assert msgid_of(long) not in [m.message_id for m in dest.messages()]


def test_bdat_unterminated_last_line(world):
    """A message whose last chunk does not end in CRLF is ended with one."""
    p, dest, _ = world.basic()
    data = make_message(subject="no final crlf", body=b"no newline at the end")
    with p.raw() as c:
        start_txn(c)
        assert bdat(c, data)[0] == 250
    t = dest.wait_message(msgid_of(data))
    assert t.data.endswith(b"no newline at the end\r\n"), t.data[-60:]


def test_smtplib_data_still_works_after_ehlo_change(world):
    """smtplib's own sendmail (DATA) is unaffected by the new extensions."""
    p, dest, _ = world.basic()
    data = make_message(subject="plain data")
    s = p.smtp()
    try:
        s.sendmail("alice@sender.test", ["bob@dest.test"], data)
    except smtplib.SMTPException as e:
        raise AssertionError(f"sendmail failed: {e!r}")
    finally:
        s.quit()
    dest.wait_message(msgid_of(data))


def test_random_bdat_sequences_one_reply_each(world):
    """Property: in any pipelined mix of EHLO, MAIL, RCPT, BDAT (accepted, refused,
    zero-sized, over the limit), NOOP and RSET, every command gets exactly one reply,
    in order; chunk octets full of command lines never produce a reply of their own;
    every message acknowledged with 250 ... queued arrives, byte for byte."""
    import random
    p, dest, _ = world.basic(listener={"max_message_size": "4KB"})
    rng = random.Random(11)
    expect_queued = []
    for conn_no in range(60):
        cmds = [b"EHLO client.test\r\n"]
        payloads = []          # (index of the BDAT LAST command, full message) if accepted
        n_cmds = 1
        state, msg = "ready", b""
        for _ in range(rng.randint(3, 12)):
            r = rng.random()
            if r < 0.2:
                cmds.append(b"MAIL FROM:<alice@sender.test>\r\n")
                state, msg = ("mail" if state == "ready" else state), msg
            elif r < 0.4:
                cmds.append(b"RCPT TO:<bob@dest.test>\r\n")
                if state in ("mail", "rcpt"):
                    state = "rcpt"
            elif r < 0.85:
                size = rng.choice([0, 1, 5, 300, 2000, 5000])
                body = (b"NOOP\r\nRSET\r\nQUIT\r\n" * 400)[:size]
                last = rng.random() < 0.5
                cmds.append(f"BDAT {size}{' LAST' if last else ''}\r\n".encode() + body)
                if state in ("rcpt", "bdat"):
                    if len(msg) + size > 4096:
                        state, msg = "ready", b""
                    elif last:
                        payloads.append((n_cmds, msg + body))
                        state, msg = "ready", b""
                    else:
                        state, msg = "bdat", msg + body
            elif r < 0.93:
                cmds.append(b"NOOP\r\n")
            else:
                cmds.append(b"RSET\r\n")
                state, msg = "ready", b""
            n_cmds += 1
        cmds.append(b"QUIT\r\n")
        n_cmds += 1
        with p.raw(timeout=30) as c:
            c.send(b"".join(cmds))
            replies = c.replies(n_cmds, timeout=30)
            assert replies[-1][0] == 221, (conn_no, replies)
            assert c.wait_closed(10), conn_no
            assert c.buf == b"", (conn_no, c.buf[:200])   # no extra reply after QUIT's
        for idx, content in payloads:
            code, text = replies[idx]
            assert code in (250, 554), (conn_no, idx, replies)   # 554: a 999+ octet line
            if code == 250:
                assert "queued as" in text, (conn_no, idx, replies)
                expect_queued.append(content)
    p.assert_alive()
    assert len(expect_queued) >= 5, "the seed should produce a few accepted messages"
    wait = __import__("harness").wait_for
    wait(lambda: len(dest.messages()) >= len(expect_queued), 30,
         f"{len(expect_queued)} messages at the sink")
    import re

    def normalized(c):
        # every CRLF, bare CR or bare LF is one CRLF; a last partial line is ended
        c = re.sub(rb"\r\n|\r|\n", b"\r\n", c)
        return c + b"\r\n" if c and not c.endswith(b"\r\n") else c

    def client_part(t):
        rest = split_first_header(t.data)[1]
        # our own Date:/Message-ID: (the payloads have no header of their own)
        return re.sub(rb"^Date: [^\r]*\r\nMessage-ID: <[0-9a-f]+@petrel\.test>\r\n", b"", rest)
    got = sorted(client_part(t) for t in dest.messages())
    want = sorted(normalized(c) for c in expect_queued)
    assert got == want


BINARY_BODY = (b"binary part follows\r\n\x00\x01\x02\xff\xfe bare LF\nbare CR\rend\r\n"
               + bytes(range(256)) + b"x" * 1500 + b"\r\nno final CRLF \x00")


def binary_message(subject):
    head = make_message(subject=subject, body="").split(b"\r\n\r\n", 1)[0]
    return head + (b"\r\nMIME-Version: 1.0\r\nContent-Type: application/octet-stream\r\n"
                   b"Content-Transfer-Encoding: binary\r\n\r\n") + BINARY_BODY


def test_binarymime_inbound_bdat_only_stored_as_is(world):
    """RFC 3030 §3: BODY=BINARYMIME accepted; DATA after it 503 5.5.1 (the
    transaction survives); the BDAT content (NUL, bare CR/LF, a 1500-octet line, no
    final CRLF) is stored and relayed byte for byte to a BINARYMIME hop."""
    from test_standards_outbound import caps_hop
    world.mx_domain("sender.test", "127.0.0.3")
    hop = caps_hop(world, "dest.test", ["PIPELINING", "8BITMIME", "CHUNKING", "BINARYMIME"])
    p = world.petrel()
    data = binary_message("binarymime in")
    with p.raw() as c:
        assert c.cmd("EHLO client.test")[0] == 250
        code, text = c.cmd("MAIL FROM:<alice@sender.test> BODY=BINARYMIME")
        assert code == 250, (code, text)
        assert c.cmd("RCPT TO:<bob@dest.test>")[0] == 250
        code, text = c.cmd("DATA")
        assert code == 503 and text.startswith("5.5.1"), (code, text)
        half = len(data) // 2
        assert bdat(c, data[:half], last=False)[0] == 250
        code, text = bdat(c, data[half:])
        assert code == 250 and "queued" in text, (code, text)
        # the next transaction is an ordinary one: DATA works again
        assert c.cmd("MAIL FROM:<alice@sender.test>")[0] == 250
        assert c.cmd("RCPT TO:<bob@dest.test>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        c.send(make_message(subject="plain after binary") + b".\r\n")
        assert c.reply()[0] == 250
    t = hop.wait_message(msgid_of(data), timeout=30)
    assert t.via == "BDAT"
    assert b" BODY=BINARYMIME" in t.mail_line.upper(), t.mail_line
    assert split_first_header(t.data)[1] == data, "BINARYMIME content must be kept as sent"
