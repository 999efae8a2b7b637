"""Delivery results: 5xx bounces with RFC 3464 DSNs, 4xx retries, expiry, partial
failures, no DSN for the null sender (DESIGN §6 Results)."""

import re
import time

from harness import make_message, msgid_of, parse_dsn, wait_for


def dsns(sink):
    return [t for t in sink.messages() if t.mail_from == ""]


def wait_dsn(sink, n=1, timeout=20):
    return wait_for(lambda: len(dsns(sink)) >= n and dsns(sink), timeout,
                    lambda: f"{n} DSN(s) from <> at {sink}; it has {sink.messages()!r}")


def test_5xx_recipient_bounces_with_dsn(world):
    dest = world.mx_domain("dest.test", "127.0.0.2", rcpt_reply={
        "bad@dest.test": "550 5.1.1 <bad@dest.test>: no such user here (sink)"})
    sender = world.mx_domain("sender.test", "127.0.0.3")
    p = world.petrel()
    data = make_message("alice@sender.test", ["bad@dest.test"], subject="will bounce 42")
    p.send("alice@sender.test", ["bad@dest.test"], data)
    b = p.wait_record("Bounce", recipient="bad@dest.test")
    assert b["code"] == 550 and "no such user here" in (b["response"] or ""), b
    assert b["peer_address"] == "127.0.0.2"
    dsn_txn = wait_dsn(sender)[0]
    assert dsn_txn.mail_from == "", "a DSN comes from the null sender"
    assert dsn_txn.rcpt_tos == ["alice@sender.test"]
    d = parse_dsn(dsn_txn.data)
    assert d["content_type"] == "multipart/report", d["content_type"]
    assert d["report_type"] == "delivery-status", d["msg"].get("Content-Type")
    assert d["per_message"].get("reporting-mta"), "Reporting-MTA field missing"
    assert len(d["recipients"]) == 1, d["recipients"]
    r = d["recipients"][0]
    assert "bad@dest.test" in r.get("final-recipient", ""), r
    assert r.get("action", "").lower() == "failed", r
    assert re.match(r"^5\.\d{1,3}\.\d{1,3}$", r.get("status", "")), r
    assert r.get("status") == "5.1.1", f"the remote enhanced status should be kept: {r}"
    assert "no such user here" in r.get("diagnostic-code", ""), r
    orig = d["headers"]
    assert msgid_of(data).encode() in orig, f"original headers missing from the DSN: {orig!r}"
    assert b"will bounce 42" in orig
    assert not dest.messages(), "nothing was accepted at the destination"
    # A DSN is not bounced back to the destination or re-sent.
    time.sleep(1.5)
    assert len(dsns(sender)) == 1


def test_null_sender_bounce_sends_no_dsn(world):
    world.mx_domain("dest.test", "127.0.0.2", rcpt_reply={
        "bad@dest.test": "550 5.1.1 no such user"})
    sender = world.mx_domain("sender.test", "127.0.0.3")
    p = world.petrel()
    data = make_message("", ["bad@dest.test"], subject="null sender bounce")
    p.send("", ["bad@dest.test"], data)
    p.wait_record("Bounce", recipient="bad@dest.test")
    time.sleep(2.5)
    assert not sender.messages(), "no DSN for the null sender"
    assert not sender.rcpt_attempts
    assert len(p.records("Bounce")) == 1, p.records("Bounce")
    assert not p.records("Delivery")


def test_4xx_deferred_then_delivered(world):
    attempts = {"n": 0}

    def flaky(addr):
        if addr == "slow@dest.test":
            attempts["n"] += 1
            if attempts["n"] <= 2:
                return "451 4.3.0 try again later (sink)"
        return None
    dest = world.mx_domain("dest.test", "127.0.0.2", rcpt_reply=flaky)
    world.mx_domain("sender.test", "127.0.0.3")
    p = world.petrel()
    data = make_message(to=["slow@dest.test"])
    p.send("alice@sender.test", ["slow@dest.test"], data)
    dest.wait_message(msgid_of(data), timeout=20)
    tfs = p.records("TransientFailure", recipient="slow@dest.test")
    assert len(tfs) == 2, tfs
    assert all(t["code"] == 451 for t in tfs), tfs
    assert "try again later" in tfs[0]["response"]
    d = p.wait_record("Delivery", recipient="slow@dest.test")
    assert d["attempts"] == 3, d
    assert not p.records("Bounce")
    tries = [a for a in dest.rcpt_attempts if a[0] == "slow@dest.test"]
    assert len(tries) == 3, tries


def test_retry_backoff_spacing(world):
    """Retries wait at least about retry_interval (1s) between attempts."""
    seen = []

    def record(addr):
        seen.append(time.monotonic())
        return "451 4.3.0 later" if len(seen) < 3 else None
    dest = world.mx_domain("dest.test", "127.0.0.2", rcpt_reply=record)
    p = world.petrel()
    mid = p.send_message("alice@sender.test", ["backoff@dest.test"])
    dest.wait_message(mid, timeout=20)
    gaps = [b - a for a, b in zip(seen, seen[1:])]
    assert all(g >= 0.5 for g in gaps), f"retries came too fast: {gaps}"
    assert all(g <= 5 for g in gaps), f"retries came too slowly for retry_interval=1s: {gaps}"


def test_expiry_with_mx_down(world):
    world.mx_domain("dest.test", "127.0.0.2", sink=False)
    sender = world.mx_domain("sender.test", "127.0.0.3")
    p = world.petrel(queue={"max_retry_age": "3s"})
    data = make_message(to=["never@dest.test"], subject="will expire")
    p.send("alice@sender.test", ["never@dest.test"], data)
    p.wait_record("TransientFailure", recipient="never@dest.test")
    e = p.wait_record("Expiration", recipient="never@dest.test", timeout=20)
    assert e["sender"] == "alice@sender.test"
    assert not p.records("Bounce", recipient="never@dest.test"), "expiry is not a Bounce"
    d = parse_dsn(wait_dsn(sender)[0].data)
    assert d["report_type"] == "delivery-status"
    r = d["recipients"][0]
    assert "never@dest.test" in r.get("final-recipient", ""), r
    assert r.get("action", "").lower() == "failed", r
    assert r.get("status") == "4.4.7", r
    assert msgid_of(data).encode() in d["headers"]


def test_expiry_diagnostic_is_last_response(world):
    world.mx_domain("dest.test", "127.0.0.2", rcpt_reply=lambda a: (
        "451 4.2.0 mailbox busy, come back later" if a == "busy@dest.test" else None))
    sender = world.mx_domain("sender.test", "127.0.0.3")
    p = world.petrel(queue={"max_retry_age": "3s"})
    p.send_message("alice@sender.test", ["busy@dest.test"])
    p.wait_record("Expiration", recipient="busy@dest.test", timeout=20)
    r = parse_dsn(wait_dsn(sender)[0].data)["recipients"][0]
    assert r.get("status") == "4.4.7", r
    assert "mailbox busy" in r.get("diagnostic-code", ""), r


def test_partial_failure_one_of_three(world):
    dest = world.mx_domain("dest.test", "127.0.0.2", rcpt_reply={
        "bad@dest.test": "550 5.1.1 unknown user bad"})
    sender = world.mx_domain("sender.test", "127.0.0.3")
    p = world.petrel()
    rcpts = ["ok1@dest.test", "bad@dest.test", "ok2@dest.test"]
    data = make_message(to=rcpts, subject="partial")
    p.send("alice@sender.test", rcpts, data)
    t = dest.wait_message(msgid_of(data))
    assert sorted(t.rcpt_tos) == ["ok1@dest.test", "ok2@dest.test"]
    p.wait_record("Delivery", recipient="ok1@dest.test")
    p.wait_record("Delivery", recipient="ok2@dest.test")
    p.wait_record("Bounce", recipient="bad@dest.test")
    dsn_txn = wait_dsn(sender)[0]
    time.sleep(1.5)
    assert len(dsns(sender)) == 1, "one DSN, for the one failed recipient"
    d = parse_dsn(dsn_txn.data)
    finals = [r.get("final-recipient", "") for r in d["recipients"]]
    assert len(finals) == 1 and "bad@dest.test" in finals[0], finals
    assert not p.records("Bounce", recipient="ok1@dest.test")
    assert not p.records("Bounce", recipient="ok2@dest.test")
    assert len(dest.find(msgid_of(data))) == 1, "the message is not delivered twice"


def test_data_5xx_bounces_every_recipient(world):
    world.mx_domain("dest.test", "127.0.0.2",
                    data_reply=lambda txn: "554 5.6.0 content rejected by sink")
    sender = world.mx_domain("sender.test", "127.0.0.3")
    p = world.petrel()
    rcpts = ["d1@dest.test", "d2@dest.test"]
    p.send("alice@sender.test", rcpts, make_message(to=rcpts))
    for r in rcpts:
        b = p.wait_record("Bounce", recipient=r)
        assert b["code"] == 554 and "content rejected" in b["response"], b
    wait_dsn(sender)
    time.sleep(1.0)
    finals = []
    for t in dsns(sender):
        finals += [r.get("final-recipient", "") for r in parse_dsn(t.data)["recipients"]]
    assert sorted(f.split(";")[-1].strip() for f in finals) == rcpts, finals
    assert all(r.get("status") == "5.6.0"
               for t in dsns(sender) for r in parse_dsn(t.data)["recipients"])


def test_dsn_that_bounces_is_dropped(world):
    world.mx_domain("dest.test", "127.0.0.2", rcpt_reply={"bad@dest.test": "550 5.1.1 nope"})
    sender = world.mx_domain("sender.test", "127.0.0.3",
                             rcpt_reply=lambda a: "550 5.1.1 sender mailbox gone")
    p = world.petrel()
    p.send_message("alice@sender.test", ["bad@dest.test"])
    p.wait_record("Bounce", recipient="bad@dest.test")
    wait_for(lambda: sender.rcpt_attempts, 15, "the DSN delivery attempt at sender.test")
    time.sleep(3.0)
    assert len(sender.rcpt_attempts) == 1, f"a bounced DSN must be dropped: {sender.rcpt_attempts}"
    assert not p.records("TransientFailure", recipient="alice@sender.test")
    world.assert_serving(p)


def test_dsn_for_bounce_after_retries(world):
    """A recipient deferred first (4xx) and then refused (5xx) bounces with the 5xx."""
    n = {"i": 0}

    def reply(addr):
        n["i"] += 1
        return "452 4.2.2 over quota for now" if n["i"] == 1 else "552 5.2.2 mailbox full for good"
    world.mx_domain("dest.test", "127.0.0.2", rcpt_reply=reply)
    sender = world.mx_domain("sender.test", "127.0.0.3")
    p = world.petrel()
    p.send_message("alice@sender.test", ["full@dest.test"])
    b = p.wait_record("Bounce", recipient="full@dest.test", timeout=20)
    assert b["code"] == 552 and b["attempts"] == 2, b
    r = parse_dsn(wait_dsn(sender)[0].data)["recipients"][0]
    assert r.get("status") == "5.2.2" and "mailbox full for good" in r.get("diagnostic-code", ""), r
