"""Bad input and limits: oversize messages and lines, too many recipients, bare LF,
NULs, garbage, pipelined junk, clients that stall or vanish, connection limits, next
hops and DNS servers that misbehave, SMTP smuggling. After each, petrel still serves
(issue 2 "Bad input"; DESIGN §4 listener limits, §6 Protocol)."""

import random
import select
import smtplib
import socket
import struct
import threading
import time
import uuid

import pytest

from harness import RawSMTP, make_message, msgid_of, wait_for


def assert_nothing_queued(p, rcpt, sink=None, wait=1.5):
    time.sleep(wait)
    assert not p.records("Reception", recipient=rcpt), \
        f"a rejected/aborted message was queued: {p.records('Reception', recipient=rcpt)}"
    if sink is not None:
        assert not sink.for_rcpt(rcpt), f"it was even delivered: {sink.for_rcpt(rcpt)}"


def read_all_replies(c, quiet=3.0, limit=20.0):
    """Reads replies until the connection closes or stays quiet; returns (codes, closed)."""
    codes, t_end = [], time.monotonic() + limit
    while time.monotonic() < t_end:
        try:
            codes.append(c.reply(timeout=quiet)[0])
        except socket.timeout:
            return codes, False
        except (ConnectionError, OSError):
            return codes, True
    return codes, False


# ---------------------------------------------------------------- sizes and limits

def test_message_over_max_message_size_552(world):
    p, dest, _ = world.basic(listener={"max_message_size": "10KB"})
    big = make_message(to=["big@dest.test"], body=("x" * 70 + "\r\n") * 300)
    assert len(big) > 20000
    s = p.smtp()
    try:
        assert s.mail("alice@sender.test")[0] == 250      # no SIZE parameter
        assert s.rcpt("big@dest.test")[0] == 250
        code, resp = s.data(big)
        assert code == 552, f"oversize message got {code} {resp!r}"
        small = make_message(to=["small@dest.test"])
        try:
            p.send("alice@sender.test", ["small@dest.test"], small, smtp=s)
        except smtplib.SMTPServerDisconnected:
            p.send("alice@sender.test", ["small@dest.test"], small)
    finally:
        s.close()
    dest.wait_message(msgid_of(small))
    assert_nothing_queued(p, "big@dest.test", dest)


def test_size_parameter_too_big_552_at_mail(world):
    p, _, _ = world.basic(listener={"max_message_size": "10KB"})
    with p.smtp() as s:
        code, resp = s.mail("alice@sender.test", ["SIZE=20000000"])
        assert code == 552, f"MAIL with SIZE over the limit: {code} {resp!r}"
        code, resp = s.mail("alice@sender.test", ["SIZE=1000"])
        assert code == 250, (code, resp)
    world.assert_serving(p)


def test_max_recipients_452(world):
    p, dest, _ = world.basic(listener={"max_recipients": 5})
    rcpts = [f"r{i}@dest.test" for i in range(5)]
    data = make_message(to=rcpts)
    with p.smtp() as s:
        assert s.mail("alice@sender.test")[0] == 250
        for r in rcpts:
            assert s.rcpt(r)[0] == 250
        code, resp = s.rcpt("r5@dest.test")
        assert code == 452 and b"4.5.3" in resp, f"6th recipient: {code} {resp!r}"
        code, resp = s.data(data)
        assert code == 250, (code, resp)
    t = dest.wait_message(msgid_of(data))
    assert sorted(t.rcpt_tos) == sorted(rcpts)


def test_command_line_over_512_gets_500(world):
    p, _, _ = world.basic()
    c = p.raw()
    try:
        assert c.cmd("EHLO client.test")[0] == 250
        assert c.cmd("NOOP " + "n" * 400)[0] == 250, "a 400-octet line is fine"
        code, text = c.cmd("MAIL FROM:<" + "a" * 1000 + "@sender.test>")
        assert code == 500, f"over-long command line: {code} {text}"
        # The parser is back in sync: the rest of the long line was not a command.
        code, text = c.cmd("NOOP")
        assert code == 250, (code, text)
        assert c.cmd("MAIL FROM:<alice@sender.test>")[0] == 250
    finally:
        c.close()
    world.assert_serving(p)


def test_huge_line_without_newline(world):
    """200 KB without a line end: answered with 500 or a close, never buffered forever."""
    p, _, _ = world.basic()
    c = p.raw()
    try:
        c.cmd("EHLO client.test")
        try:
            c.send(b"NOOP " + b"A" * 200_000)
            time.sleep(0.5)
            c.send(b"\r\nNOOP\r\n")
        except OSError:
            pass                                    # closed on us: acceptable
        codes, closed = read_all_replies(c, quiet=3)
        assert codes or closed, "no reply and no close after 200 KB of junk line"
        if codes:
            assert codes[0] in (500, 421), codes
    finally:
        c.close()
    world.assert_serving(p)


def test_text_line_over_998(world):
    p, dest, _ = world.basic()
    data = make_message(to=["longline@dest.test"],
                        body=b"short\r\n" + b"L" * 2000 + b"\r\nafter the long line\r\n")
    with p.smtp() as s:
        assert s.mail("alice@sender.test")[0] == 250
        assert s.rcpt("longline@dest.test")[0] == 250
        code, resp = s.data(data)
    if 500 <= code <= 599:
        assert_nothing_queued(p, "longline@dest.test", dest)
    else:
        assert code == 250, f"line over 998 octets: {code} {resp!r}"
        t = dest.wait_message(msgid_of(data))
        for line in t.data.split(b"\r\n"):
            assert len(line) <= 998, f"petrel relayed a {len(line)}-octet line"
        assert b"after the long line" in t.data
    world.assert_serving(p)


# ---------------------------------------------------------------- odd bytes

def test_bare_lf_in_commands(world):
    p, _, _ = world.basic()
    c = p.raw()
    try:
        c.cmd("EHLO client.test")
        c.send(b"RSET\nRSET\r\n")
        first = c.reply(timeout=5)
        assert 200 <= first[0] <= 599
        c.send(b"QUIT\r\n")
        codes, _ = read_all_replies(c, quiet=3)
        assert codes and codes[-1] == 221, codes
        assert len(codes) <= 2, codes
    finally:
        c.close()
    world.assert_serving(p)


def test_bare_lf_in_data(world):
    p, dest, _ = world.basic()
    mid = f"<{uuid.uuid4().hex}@bare.lf>"
    body = (b"Subject: bare lf\r\nMessage-ID: " + mid.encode() + b"\r\n\r\n"
            b"line one\nline two\nline three\r\nlast\r\n")
    c = p.raw()
    try:
        c.cmd("EHLO client.test")
        assert c.cmd("MAIL FROM:<alice@sender.test>")[0] == 250
        assert c.cmd("RCPT TO:<barelf@dest.test>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        c.send(body + b".\r\n")
        code, text = c.reply(timeout=10)
    finally:
        c.close()
    if 500 <= code <= 599:
        assert_nothing_queued(p, "barelf@dest.test", dest)
    else:
        assert code == 250, (code, text)
        t = dest.wait_message(mid)
        assert b"line two" in t.data
        stripped = t.data.replace(b"\r\n", b"")
        assert b"\n" not in stripped and b"\r" not in stripped, \
            f"bare LF/CR relayed instead of normalized: {t.data!r}"
    world.assert_serving(p)


def test_nul_bytes(world):
    p, dest, _ = world.basic()
    c = p.raw()
    try:
        c.cmd("EHLO client.test")
        code, _ = c.cmd(b"MAIL FROM:<a\x00b@sender.test>")
        assert 500 <= code <= 559, code
        code, _ = c.cmd(b"NO\x00OP")
        assert 500 <= code <= 559, code
        assert c.cmd("MAIL FROM:<alice@sender.test>")[0] == 250
        code, _ = c.cmd(b"RCPT TO:<nul\x00@dest.test>")
        assert 500 <= code <= 559, code
        assert c.cmd("RCPT TO:<nul@dest.test>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        data = make_message(to=["nul@dest.test"], body=b"a NUL \x00 in the body\r\n")
        c.send(data + b".\r\n")
        code, _ = c.reply(timeout=10)
        assert code == 250 or 500 <= code <= 599, code
    finally:
        c.close()
    if code == 250:
        dest.wait_message(msgid_of(data))
    world.assert_serving(p)


def test_garbage_binary(world):
    p, _, _ = world.basic()
    rnd = random.Random(1234)
    junk = bytes(rnd.getrandbits(8) for _ in range(65536))
    c = p.raw()
    try:
        try:
            c.send(junk)
        except OSError:
            pass
        codes, _ = read_all_replies(c, quiet=3)
        assert all(400 <= x <= 599 for x in codes), f"garbage got non-error replies: {codes}"
    finally:
        c.close()
    world.assert_serving(p)


def test_garbage_after_data_command_is_just_content(world):
    """Arbitrary binary inside DATA is content, not commands."""
    p, dest, _ = world.basic()
    rnd = random.Random(99)
    blob = bytes(rnd.getrandbits(8) for _ in range(4096)).replace(b"\r\n.", b"\r\nx")
    data = make_message(to=["blob@dest.test"], body=blob + b"\r\n")
    c = p.raw()
    try:
        c.cmd("EHLO client.test")
        assert c.cmd("MAIL FROM:<alice@sender.test>")[0] == 250
        assert c.cmd("RCPT TO:<blob@dest.test>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        c.send(data.replace(b"\n.", b"\n..") + b".\r\n")
        code, _ = c.reply(timeout=10)
        assert code == 250 or 500 <= code <= 599, code
        assert c.cmd("QUIT")[0] == 221, "exactly one reply for the message"
    finally:
        c.close()
    world.assert_serving(p)


# ---------------------------------------------------------------- pipelining abuse

def test_10000_rcpt_pipelined(world):
    p, dest, _ = world.basic()
    c = p.raw(timeout=60)
    replies, errors = [], []
    try:
        assert c.cmd("EHLO client.test")[0] == 250
        assert c.cmd("MAIL FROM:<alice@sender.test>")[0] == 250

        def reader():
            try:
                for _ in range(10000):
                    replies.append(c.reply(timeout=60)[0])
            except Exception as e:
                errors.append(e)
        th = threading.Thread(target=reader, daemon=True)
        th.start()
        c.send(b"".join(b"RCPT TO:<r%d@dest.test>\r\n" % i for i in range(10000)))
        th.join(90)
        assert not errors, f"after {len(replies)} replies: {errors}"
        assert len(replies) == 10000
        assert replies.count(250) == 1000, f"{replies.count(250)} accepted (max_recipients 1000)"
        assert replies[:1000] == [250] * 1000
        assert set(replies[1000:]) == {452}, set(replies[1000:])
        assert c.cmd("DATA")[0] == 354
        data = make_message(to=["r0@dest.test"], subject="1000 recipients")
        c.send(data + b".\r\n")
        code, text = c.reply(timeout=30)
        assert code == 250, (code, text)
        c.cmd("QUIT")
    finally:
        c.close()
    mid = msgid_of(data)
    want = {f"r{i}@dest.test" for i in range(1000)}
    wait_for(lambda: {r for t in dest.find(mid) for r in t.rcpt_tos} == want, 60,
             lambda: f"all 1000 recipients; got {len({r for t in dest.find(mid) for r in t.rcpt_tos})}")
    world.assert_serving(p)


def test_pipelined_junk(world):
    p, dest, _ = world.basic()
    c = p.raw()
    try:
        assert c.cmd("EHLO client.test")[0] == 250
        c.send(b"FOO\r\nMAIL FROM:<alice@sender.test>\r\nBAR baz\r\nRCPT TO:<pj1@dest.test>\r\n"
               b"\x01\x02junk\xff\r\nRCPT TO:<pj2@dest.test>\r\nDATA\r\n")
        codes = [r[0] for r in c.replies(7, timeout=10)]
        assert codes[0] == 500 and codes[2] == 500 and 500 <= codes[4] <= 501, codes
        assert [codes[1], codes[3], codes[5], codes[6]] == [250, 250, 250, 354], codes
        data = make_message(to=["pj1@dest.test", "pj2@dest.test"])
        c.send(data + b".\r\nQUIT\r\n")
        assert [r[0] for r in c.replies(2)] == [250, 221]
    finally:
        c.close()
    t = dest.wait_message(msgid_of(data))
    assert sorted(t.rcpt_tos) == ["pj1@dest.test", "pj2@dest.test"]


SMUGGLE_ENDS = [b"\n.\n", b"\r\n.\n", b"\n.\r\n", b"\r.\r\n", b"\r\n.\r"]


@pytest.mark.parametrize("fake_end", SMUGGLE_ENDS, ids=[repr(e) for e in SMUGGLE_ENDS])
def test_smtp_smuggling(world, fake_end):
    p, dest, _ = world.basic()
    data = make_message(to=["real@dest.test"], subject="carrier")
    smuggled = (b"MAIL FROM:<evil@sender.test>\r\nRCPT TO:<victim@dest.test>\r\nDATA\r\n"
                b"From: <ceo@sender.test>\r\nSubject: smuggled\r\n\r\nevil\r\n.\r\n")
    c = p.raw()
    try:
        c.cmd("EHLO client.test")
        assert c.cmd("MAIL FROM:<alice@sender.test>")[0] == 250
        assert c.cmd("RCPT TO:<real@dest.test>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        c.send(data.rstrip(b"\r\n") + fake_end + smuggled)
        code, text = c.reply(timeout=10)
        assert code == 250 or 500 <= code <= 599, (code, text)
        # If the fake end had ended the message, the next replies would belong to the
        # smuggled MAIL/RCPT/DATA; the reply to QUIT must come next instead.
        code2, text2 = c.cmd("QUIT", timeout=10)
        assert code2 == 221, f"SMTP smuggling: after the message came {code2} {text2}"
    finally:
        c.close()
    time.sleep(1.0)
    assert not dest.for_rcpt("victim@dest.test"), "smuggled message delivered"
    assert not p.records("Reception", recipient="victim@dest.test")
    if code == 250:
        t = dest.wait_message(msgid_of(data))
        assert b"smuggled" in t.data, "the would-be smuggled text stays inside the message"


# ---------------------------------------------------------------- clients that misbehave

@pytest.mark.parametrize("how", ["close", "reset"])
def test_client_vanishes_mid_data(world, how):
    p, dest, _ = world.basic()
    c = p.raw()
    c.cmd("EHLO client.test")
    assert c.cmd("MAIL FROM:<alice@sender.test>")[0] == 250
    assert c.cmd("RCPT TO:<vanish@dest.test>")[0] == 250
    assert c.cmd("DATA")[0] == 354
    c.send(make_message(to=["vanish@dest.test"], body="half a message\r\n" * 100))
    time.sleep(0.2)
    if how == "reset":
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()
    assert_nothing_queued(p, "vanish@dest.test", dest)
    world.assert_serving(p)


def test_command_timeout_421(world):
    p, _, _ = world.basic(listener={"command_timeout": "2s"})
    c = p.raw()
    try:
        assert c.cmd("EHLO client.test")[0] == 250
        t0 = time.monotonic()
        code, text = c.reply(timeout=10)
        took = time.monotonic() - t0
        assert code == 421, (code, text)
        assert 1.5 <= took <= 6, f"cut after {took:.1f}s with command_timeout 2s"
        assert c.wait_closed(3), "petrel should close after the 421"
    finally:
        c.close()
    world.assert_serving(p)


def test_command_timeout_is_a_deadline_not_idle_timer(world):
    """A client dribbling one byte at a time is cut at command_timeout."""
    p, _, _ = world.basic(listener={"command_timeout": "2s"})
    c = p.raw()
    try:
        assert c.cmd("EHLO client.test")[0] == 250
        t0 = time.monotonic()
        closed_at = None
        while time.monotonic() - t0 < 12:
            try:
                c.send(b"X")
            except OSError:
                closed_at = time.monotonic()
                break
            r, _, _ = select.select([c.sock], [], [], 0.4)
            if r:
                try:
                    chunk = c.sock.recv(4096)
                except OSError:
                    chunk = b""
                if not chunk or b"421" in chunk:
                    closed_at = time.monotonic()
                    break
        assert closed_at is not None, "a dribbling client was never cut"
        assert closed_at - t0 <= 6, f"cut only after {closed_at - t0:.1f}s"
    finally:
        c.close()
    world.assert_serving(p)


def test_greeting_timeout(world):
    p, _, _ = world.basic(listener={"greeting_timeout": "2s"})
    c = p.raw()
    try:
        t0 = time.monotonic()
        code, text = c.reply(timeout=10)
        took = time.monotonic() - t0
        assert code == 421, (code, text)
        assert 1.5 <= took <= 6, took
        assert c.wait_closed(3)
    finally:
        c.close()
    # Only the first command is bound by it.
    c = p.raw()
    try:
        assert c.cmd("EHLO client.test")[0] == 250
        time.sleep(3)
        assert c.cmd("NOOP")[0] == 250
    finally:
        c.close()
    world.assert_serving(p)


def test_data_timeout(world):
    p, dest, _ = world.basic(listener={"data_timeout": "2s"})
    c = p.raw()
    t0 = None
    try:
        c.cmd("EHLO client.test")
        assert c.cmd("MAIL FROM:<alice@sender.test>")[0] == 250
        assert c.cmd("RCPT TO:<slowdata@dest.test>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        t0 = time.monotonic()
        cut = None
        while time.monotonic() - t0 < 12:
            try:
                c.send(b"Subject: slow\r\n" if cut is None else b"more\r\n")
            except OSError:
                cut = time.monotonic()
                break
            r, _, _ = select.select([c.sock], [], [], 0.3)
            if r:
                try:
                    chunk = c.sock.recv(4096)
                except OSError:
                    chunk = b""
                if not chunk or b"421" in chunk:
                    cut = time.monotonic()
                    break
        assert cut is not None, "a slow DATA phase was never cut"
        assert cut - t0 <= 6, f"cut only after {cut - t0:.1f}s with data_timeout 2s"
    finally:
        c.close()
    assert_nothing_queued(p, "slowdata@dest.test", dest)
    world.assert_serving(p)


def can_connect(p):
    """True if a new connection gets the 220 greeting."""
    try:
        c = RawSMTP(p.host, p.port, timeout=3)
    except OSError:
        return False
    try:
        return c.reply()[0] == 220
    except (ConnectionError, OSError):
        return False
    finally:
        c.close()


def test_max_connections_per_ip(world):
    p, _, _ = world.basic(listener={"max_connections_per_ip": 3})
    conns = [p.raw() for _ in range(3)]
    try:
        extra = RawSMTP(p.host, p.port, timeout=5)
        try:
            code, text = extra.reply()
            assert code == 421, f"4th connection from one IP: {code} {text}"
            assert extra.wait_closed(5), "petrel should close after the 421"
        finally:
            extra.close()
        conns.pop().close()
        wait_for(lambda: can_connect(p), 5, "a free slot after closing a connection")
    finally:
        for c in conns:
            c.close()
    wait_for(lambda: can_connect(p), 5, "free slots after closing every connection")
    world.assert_serving(p)


def test_max_connections(world):
    p, _, _ = world.basic(listener={"max_connections": 2})
    conns = [p.raw() for _ in range(2)]
    try:
        # Over the limit: a 421, a close, or no greeting at all (not accepted) -- never 220.
        extra = RawSMTP(p.host, p.port, timeout=3)
        try:
            try:
                code, text = extra.reply()
            except socket.timeout:
                code, text = None, "no greeting"
            except (ConnectionError, OSError):
                code, text = None, "closed"
            assert code in (421, None), f"connection over max_connections: {code} {text}"
        finally:
            extra.close()
    finally:
        for c in conns:
            c.close()
    wait_for(lambda: can_connect(p), 5, "free slots after closing every connection")

    # the probe's own slot is released asynchronously: retry the full check briefly
    def serving():
        try:
            world.assert_serving(p)
            return True
        except smtplib.SMTPConnectError:
            return False
    wait_for(serving, 10, "a full transaction once the slots are free")


def test_many_connections_opened_and_dropped(world):
    p, _, _ = world.basic()
    for i in range(100):
        s = socket.create_connection((p.host, p.port), timeout=5)
        if i % 2:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    world.assert_serving(p)


# ---------------------------------------------------------------- bad next hops

@pytest.mark.parametrize("behaviour", ["junk", "junk_ehlo", "close"])
def test_next_hop_misbehaves_defers(world, behaviour):
    world.mx_domain("dest.test", "127.0.0.2", sink=False)
    bad = world.raw_sink("127.0.0.2", behaviour)
    p = world.petrel()
    p.send_message("alice@sender.test", ["victim@dest.test"])
    tf = p.wait_record("TransientFailure", recipient="victim@dest.test", timeout=15)
    assert tf["peer_address"] in ("127.0.0.2", None), tf
    assert bad.connections >= 1
    assert not p.records("Bounce", recipient="victim@dest.test"), \
        "a broken next hop is a deferral, not a bounce"
    world.assert_serving(p)


def test_next_hop_hangs_at_greeting_defers(world):
    world.mx_domain("dest.test", "127.0.0.2", sink=False)
    world.raw_sink("127.0.0.2", "hang")
    p = world.petrel(delivery={"connect_timeout": "2s"})
    t0 = time.monotonic()
    p.send_message("alice@sender.test", ["hang@dest.test"])
    world.assert_serving(p)          # the hung hop does not block other deliveries
    p.wait_record("TransientFailure", recipient="hang@dest.test", timeout=20)
    assert time.monotonic() - t0 < 20
    assert not p.records("Bounce", recipient="hang@dest.test")


# ---------------------------------------------------------------- bad DNS

def test_dns_malformed_answer_defers(world):
    world.dns.set_mode("badans.test", "malformed")
    p = world.petrel()
    mid = p.send_message("alice@sender.test", ["x@badans.test"])
    p.wait_record("TransientFailure", recipient="x@badans.test", timeout=15)
    assert not p.records("Bounce", recipient="x@badans.test")
    world.assert_serving(p)
    world.dns.clear_mode("badans.test")
    sink = world.mx_domain("badans.test", "127.0.0.5")
    sink.wait_message(mid, timeout=20)


def test_dns_refused_defers(world):
    world.dns.set_mode("refused.test", "refused")
    p = world.petrel()
    p.send_message("alice@sender.test", ["x@refused.test"])
    p.wait_record("TransientFailure", recipient="x@refused.test", timeout=15)
    assert not p.records("Bounce", recipient="x@refused.test")


def test_dns_no_answer_and_garbage_defer(world):
    world.dns.set_mode("silent.test", "drop")
    world.dns.set_mode("garbled.test", "garbage")
    p = world.petrel()
    m1 = p.send_message("alice@sender.test", ["x@silent.test"])
    m2 = p.send_message("alice@sender.test", ["y@garbled.test"])
    world.assert_serving(p)          # waiting on DNS does not block other mail
    p.wait_record("TransientFailure", recipient="x@silent.test", timeout=45)
    p.wait_record("TransientFailure", recipient="y@garbled.test", timeout=45)
    assert not p.records("Bounce")
    world.dns.clear_mode("silent.test")
    world.dns.clear_mode("garbled.test")
    s1 = world.mx_domain("silent.test", "127.0.0.5")
    s2 = world.mx_domain("garbled.test", "127.0.0.6")
    s1.wait_message(m1, timeout=60)
    s2.wait_message(m2, timeout=60)
