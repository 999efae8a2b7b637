"""The DSNs petrel itself sends (RFC 3461 / 3464, issue 11), parsed with Python's
email package: failure DSNs honour NOTIFY (NEVER, or a list without FAILURE: none)
and RET (HDRS: headers only; FULL: the whole message), carry Original-Envelope-Id
and Original-Recipient when given, and say `smtp;` only for a remote reply; one
delay DSN (Action: delayed, 4.x.x, Will-Retry-Until) per recipient after
configure_queue.delay_warning_after, never twice, never for NOTIFY without DELAY or
the null sender.
"""

import re
import time

from harness import raw_send, make_message, parse_dsn, run_petrel, wait_for


def dsns(sink):
    return [t for t in sink.messages() if t.mail_from == ""]


def wait_dsns(sink, n=1, timeout=25):
    return wait_for(lambda: len(dsns(sink)) >= n and dsns(sink), timeout,
                    lambda: f"{n} DSN(s) at {sink}; it has {sink.messages()!r}")


REFUSE = {"never@dest.test": "550 5.1.1 no such user (sink)",
          "succ@dest.test": "550 5.1.1 no such user (sink)",
          "bad@dest.test": "550 5.1.1 no such user (sink)",
          "hdrs@dest.test": "550 5.1.1 no such user (sink)"}


def test_notify_never_and_without_failure_send_no_dsn(world):
    world.mx_domain("dest.test", "127.0.0.2", rcpt_reply=REFUSE)
    sender = world.mx_domain("sender.test", "127.0.0.3")
    p = world.petrel()
    data = make_message(to=["never@dest.test", "succ@dest.test"], subject="no dsn wanted")
    raw_send(p, "alice@sender.test", ["never@dest.test", "succ@dest.test"], data,
              rcpt_params={"never@dest.test": " NOTIFY=NEVER",
                           "succ@dest.test": " NOTIFY=SUCCESS,DELAY"})
    p.wait_records("Bounce", 2)
    time.sleep(2.5)
    assert not dsns(sender), dsns(sender)
    # the same failure without NOTIFY does send one (the test would catch a dead path)
    data = make_message(to=["bad@dest.test"], subject="dsn wanted")
    raw_send(p, "alice@sender.test", ["bad@dest.test"], data)
    wait_dsns(sender)


def test_failure_dsn_fields_and_ret_hdrs(world):
    world.mx_domain("dest.test", "127.0.0.2", rcpt_reply=REFUSE)
    sender = world.mx_domain("sender.test", "127.0.0.3")
    p = world.petrel()
    body = "SECRET-BODY-LINE one\r\nSECRET-BODY-LINE two\r\n"
    data = make_message(to=["hdrs@dest.test"], subject="ret hdrs", body=body)
    raw_send(p, "alice@sender.test", ["hdrs@dest.test"], data, " RET=HDRS ENVID=ENV+2B42",
              rcpt_params={"hdrs@dest.test": " NOTIFY=FAILURE ORCPT=rfc822;Orig+2BHdrs@dest.test"})
    t = wait_dsns(sender)[0]
    d = parse_dsn(t.data)
    assert d["per_message"]["original-envelope-id"] == "ENV+42", d["per_message"]
    r = d["recipients"][0]
    assert r["original-recipient"] == "rfc822;Orig+Hdrs@dest.test", r
    assert r["action"] == "failed" and r["status"] == "5.1.1", r
    assert r["diagnostic-code"].startswith("smtp; 550 5.1.1"), r
    assert b"SECRET-BODY-LINE" not in t.data, "RET=HDRS returns the headers only"
    assert b"Subject: ret hdrs" in d["headers"]


def test_ret_full_returns_the_whole_message(world):
    world.mx_domain("dest.test", "127.0.0.2", rcpt_reply=REFUSE)
    sender = world.mx_domain("sender.test", "127.0.0.3")
    p = world.petrel()
    body = "FULL-BODY-LINE one\r\n.dotted line\r\nFULL-BODY-LINE two\r\n"
    data = make_message(to=["bad@dest.test"], subject="ret full", body=body)
    raw_send(p, "alice@sender.test", ["bad@dest.test"], data, " RET=FULL")
    t = wait_dsns(sender)[0]
    d = parse_dsn(t.data)
    parts = d["msg"].get_payload()
    assert [x.get_content_type() for x in parts] == [
        "text/plain", "message/delivery-status", "message/rfc822"], parts
    inner = parts[2].get_payload()[0]
    assert inner["Subject"] == "ret full"
    got = inner.get_payload()
    assert "FULL-BODY-LINE one\r\n.dotted line\r\nFULL-BODY-LINE two" in got.replace("\n", "\r\n").replace("\r\r", "\r"), got
    assert "envelope-id" not in d["per_message"], "no ENVID given, no field"
    assert "original-recipient" not in d["recipients"][0]


def test_ret_full_for_a_message_split_over_two_domains(world):
    """Each domain's entry is removed right after its DSN is queued; the DSN job
    reads the original later, off the delivery loop: the content is held until the
    last read, so both reports carry the whole message (issue 9)."""
    refuse = lambda a: "550 5.1.1 no such user (sink)"
    world.mx_domain("dest.test", "127.0.0.2", rcpt_reply=refuse)
    world.mx_domain("other.test", "127.0.0.4", rcpt_reply=refuse)
    sender = world.mx_domain("sender.test", "127.0.0.3")
    p = world.petrel()
    body = "SPLIT-BODY-LINE " + "x" * 200 + "\r\n"
    data = make_message(to=["bad@dest.test", "bad@other.test"], subject="ret full split",
                        body=body * 50)
    raw_send(p, "alice@sender.test", ["bad@dest.test", "bad@other.test"], data, " RET=FULL")
    got = wait_dsns(sender, 2)
    assert len(got) == 2, got
    for t in got:
        assert t.data.count(b"SPLIT-BODY-LINE") == 50, t.data[:500]
    # the content went with the last entry: after a restart nothing is queued
    time.sleep(1.0)
    p.stop()
    p.start()
    assert re.findall(r"recovered (\d+) queued entries", p.stderr_text())[-1] == "0"


def test_ret_full_for_many_messages_split_over_three_domains(world):
    """The same under load: the entries of one message fail on different delivery
    threads at different moments, so one entry's DSN job can finish (and its
    deferred removal run) before another entry's DSN job starts. Every report still
    carries the whole message, and nothing is left queued. (A run under ASan once
    returned an empty message/rfc822 part: the first job's removal took the content
    with the last entry while the second job was still to read it.)"""
    refuse = lambda a: "550 5.1.1 no such user (sink)"
    domains = ["dest.test", "other.test", "third.test"]
    for i, d in enumerate(domains):
        world.mx_domain(d, f"127.0.0.{4 + i}", rcpt_reply=refuse)
    sender = world.mx_domain("sender.test", "127.0.0.3")
    p = world.petrel(delivery={"threads": 3})
    body = "SPLIT-BODY-LINE " + "x" * 200 + "\r\n"
    n = 20
    for k in range(n):
        rcpts = [f"bad{k}@{d}" for d in domains]
        data = make_message(to=rcpts, subject=f"ret full split {k}", body=body * 50)
        raw_send(p, "alice@sender.test", rcpts, data, " RET=FULL")
    got = wait_dsns(sender, n * len(domains), timeout=60)
    assert len(got) == n * len(domains), len(got)
    short = [t for t in got if t.data.count(b"SPLIT-BODY-LINE") != 50]
    assert not short, f"{len(short)} report(s) without the whole message: {short[0].data[-400:]!r}"
    time.sleep(1.0)
    p.stop()
    p.start()
    assert re.findall(r"recovered (\d+) queued entries", p.stderr_text())[-1] == "0"


def test_local_failure_is_not_labelled_smtp(world):
    # a null MX (RFC 7505): our own verdict, not a remote reply
    sender = world.mx_domain("sender.test", "127.0.0.3")
    world.dns.set_null_mx("nullmx.test")
    p = world.petrel()
    data = make_message(to=["x@nullmx.test"], subject="null mx")
    raw_send(p, "alice@sender.test", ["x@nullmx.test"], data)
    t = wait_dsns(sender)[0]
    r = parse_dsn(t.data)["recipients"][0]
    assert r["action"] == "failed", r
    assert r["diagnostic-code"].lower().startswith("x-petrel;"), r
    assert "smtp;" not in r["diagnostic-code"], r


def test_delay_dsn_sent_once(world):
    world.mx_domain("dest.test", "127.0.0.2", rcpt_reply=lambda a: "451 4.2.2 mailbox busy (sink)")
    sender = world.mx_domain("sender.test", "127.0.0.3")
    p = world.petrel(queue={"delay_warning_after": "2s", "retry_interval": "1s",
                            "max_retry_interval": "1s"})
    rcpts = ["slow@dest.test", "quiet@dest.test", "asked@dest.test"]
    data = make_message(to=rcpts, subject="delayed")
    raw_send(p, "alice@sender.test", rcpts, data, " ENVID=D1",
              rcpt_params={"quiet@dest.test": " NOTIFY=FAILURE",
                           "asked@dest.test": " NOTIFY=DELAY ORCPT=rfc822;asked@orig.test"})
    # the null sender never gets one
    nd = make_message("", ["slow@dest.test"], subject="null sender delayed")
    raw_send(p, "", ["slow@dest.test"], nd)
    t = wait_dsns(sender)[0]
    # several more retries go by: still exactly one delay DSN
    p.wait_records("TransientFailure", 18, timeout=30)
    time.sleep(1)
    assert len(dsns(sender)) == 1, dsns(sender)
    assert t.rcpt_tos == ["alice@sender.test"]
    d = parse_dsn(t.data)
    assert d["msg"]["Subject"].startswith("Delayed Mail"), d["msg"]["Subject"]
    assert d["per_message"]["original-envelope-id"] == "D1"
    got = {r["final-recipient"].split(";")[1].strip(): r for r in d["recipients"]}
    assert sorted(got) == ["asked@dest.test", "slow@dest.test"], got
    for r in got.values():
        assert r["action"] == "delayed", r
        assert re.match(r"^4\.\d+\.\d+$", r["status"]), r
        assert r["status"] == "4.2.2", r
        assert r.get("will-retry-until"), r
        assert r["diagnostic-code"].startswith("smtp; 451 4.2.2"), r
    assert got["asked@dest.test"]["original-recipient"] == "rfc822;asked@orig.test"
    # still queued, still retried
    assert not p.records("Bounce") and not p.records("Expiration")
    # the mark is in the spool: a restart does not warn again
    before = len(p.records("TransientFailure"))
    p.stop()
    p.restart()
    wait_for(lambda: len(p.records("TransientFailure")) >= before + 8, 30,
             "retries after the restart")
    time.sleep(1)
    assert len(dsns(sender)) == 1, dsns(sender)


def test_delay_warning_after_is_checked(world, tmp_path):
    cfg = tmp_path / "c.lua"
    cfg.write_text('petrel.configure_queue { delay_warning_after = "soon" }\n')
    r = run_petrel("-c", str(cfg), "--check", cwd=str(tmp_path))
    assert r.returncode == 1 and b"delay_warning_after" in r.stderr, (r.returncode, r.stderr)
    cfg.write_text('petrel.configure_queue { delay_warning_after = "4h" }\n')
    r = run_petrel("-c", str(cfg), "--check", cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
