"""The JSON event log: one object per line, one record per recipient per event,
every DESIGN §6 key on every record, and the values tests rely on."""

import json
import time

from harness import LOG_KEYS, check_record_keys, make_message, msgid_of, site_host


def test_reception_and_delivery_records(world):
    p, dest, _ = world.basic()
    data = make_message("alice@sender.test", ["bob@dest.test"], subject="logged")
    t0 = time.time()
    p.send("alice@sender.test", ["bob@dest.test"], data)
    dest.wait_message(msgid_of(data))
    rc = p.wait_record("Reception", recipient="bob@dest.test")
    dl = p.wait_record("Delivery", recipient="bob@dest.test")
    for r in (rc, dl):
        check_record_keys(r)
        assert r["sender"] == "alice@sender.test"
        assert r["recipient"] == "bob@dest.test"
        assert r["queue"] == "dest.test", r
        assert r["protocol"] == "smtp", r
        assert isinstance(r["size"], int) and r["size"] >= len(data) - 10, r
        assert r["tls"] is None, "plain SMTP: tls is null"
    assert rc["id"] == dl["id"]
    # Reception
    assert rc["code"] == 250 and rc["site"] is None and rc["attempts"] == 0, rc
    assert rc["peer_address"] == "127.0.0.1", rc
    # Delivery
    assert site_host(dl["site"]) == ("mx.dest.test", world.mx_port), dl["site"]
    assert dl["peer_address"] == "127.0.0.2", dl
    assert dl["code"] == 250 and dl["attempts"] == 1, dl
    assert isinstance(dl["response"], str) and dl["response"], dl
    assert isinstance(dl["delay"], (int, float)) and 0 <= dl["delay"] < time.time() - t0 + 1, dl
    assert dl["timestamp"] >= rc["timestamp"]


def test_one_record_per_recipient(world):
    p, dest, _ = world.basic()
    rcpts = ["a@dest.test", "b@dest.test", "c@dest.test"]
    data = make_message(to=rcpts)
    p.send("alice@sender.test", rcpts, data)
    dest.wait_message(msgid_of(data))
    rcs = p.wait_records("Reception", 3)
    dls = p.wait_records("Delivery", 3)
    time.sleep(0.5)
    assert sorted(r["recipient"] for r in p.records("Reception")) == rcpts
    assert sorted(r["recipient"] for r in p.records("Delivery")) == rcpts
    assert len({r["id"] for r in rcs + dls}) == 1


def test_ids_unique_per_message(world):
    p, dest, _ = world.basic()
    for i in range(5):
        p.send_message("alice@sender.test", [f"u{i}@dest.test"])
    recs = p.wait_records("Reception", 5)
    assert len({r["id"] for r in recs}) == 5


def test_transient_failure_record(world):
    n = {"i": 0}

    def once(addr):
        n["i"] += 1
        return "450 4.2.1 mailbox temporarily unavailable" if n["i"] == 1 else None
    dest = world.mx_domain("dest.test", "127.0.0.2", rcpt_reply=once)
    p = world.petrel()
    mid = p.send_message("alice@sender.test", ["tf@dest.test"])
    dest.wait_message(mid, timeout=20)
    tf = p.wait_record("TransientFailure", recipient="tf@dest.test")
    check_record_keys(tf)
    assert tf["code"] == 450 and "temporarily unavailable" in tf["response"], tf
    assert tf["attempts"] == 1 and tf["peer_address"] == "127.0.0.2", tf
    assert site_host(tf["site"]) == ("mx.dest.test", world.mx_port)
    assert tf["queue"] == "dest.test" and tf["protocol"] == "smtp"
    dl = p.wait_record("Delivery", recipient="tf@dest.test")
    assert dl["attempts"] == 2 and dl["id"] == tf["id"]


def test_bounce_record(world):
    world.mx_domain("dest.test", "127.0.0.2", rcpt_reply={"gone@dest.test": "550 5.1.1 gone away"})
    world.mx_domain("sender.test", "127.0.0.3")
    p = world.petrel()
    p.send_message("alice@sender.test", ["gone@dest.test"])
    b = p.wait_record("Bounce", recipient="gone@dest.test")
    check_record_keys(b)
    assert b["code"] == 550 and "gone away" in b["response"], b
    assert b["attempts"] == 1 and b["peer_address"] == "127.0.0.2"
    assert site_host(b["site"]) == ("mx.dest.test", world.mx_port)
    assert b["sender"] == "alice@sender.test" and b["queue"] == "dest.test"


def test_expiration_record(world):
    world.mx_domain("dest.test", "127.0.0.2", sink=False)
    world.mx_domain("sender.test", "127.0.0.3")
    p = world.petrel(queue={"max_retry_age": "2s"})
    p.send_message("alice@sender.test", ["exp@dest.test"])
    e = p.wait_record("Expiration", recipient="exp@dest.test", timeout=20)
    check_record_keys(e)
    assert e["sender"] == "alice@sender.test" and e["queue"] == "dest.test"
    assert isinstance(e["delay"], (int, float)) and e["delay"] >= 1.5, e


def test_rejection_record(world):
    p = world.petrel(listener={"relay_hosts": ["192.0.2.0/24"]})
    with p.smtp() as s:
        s.mail("alice@sender.test")
        code, _ = s.rcpt("nope@dest.test")
        assert code in (550, 554)
    r = p.wait_record("Rejection", recipient="nope@dest.test")
    check_record_keys(r)
    assert r["peer_address"] == "127.0.0.1" and r["code"] in (550, 554), r
    assert r["sender"] == "alice@sender.test"
    assert r["protocol"] == "smtp"


def test_log_is_json_lines_with_all_keys(world):
    dest = world.mx_domain("dest.test", "127.0.0.2", rcpt_reply={"bad@dest.test": "550 5.1.1 no"})
    world.mx_domain("sender.test", "127.0.0.3")
    p = world.petrel()
    p.send_message("alice@sender.test", ["ok@dest.test", "bad@dest.test"])
    p.wait_record("Delivery", recipient="ok@dest.test")
    p.wait_record("Bounce", recipient="bad@dest.test")
    p.wait_record("Delivery", recipient="alice@sender.test")   # the DSN
    p.stop()
    lines = p.raw_log_lines()
    assert lines[-1] == b"", "the log ends with a newline"
    types = set()
    for line in lines[:-1]:
        rec = json.loads(line)
        assert isinstance(rec, dict)
        check_record_keys(rec)
        assert set(LOG_KEYS) <= set(rec)
        types.add(rec["type"])
    assert {"Reception", "Delivery", "Bounce"} <= types, types
    assert dest.messages()
