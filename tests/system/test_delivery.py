"""Outbound delivery: MX lookup through the fake DNS, content fidelity, queues per
destination, MX fallback, smarthost and transport routes, connection reuse and
limits (DESIGN §4 configure_delivery/configure_transport, §6 Outbound)."""

import re
import threading
import time

from harness import make_message, msgid_of, site_host, split_first_header, wait_for


def test_delivered_via_mx_content_identical_but_received(world):
    p, dest, _ = world.basic()
    data = make_message("alice@sender.test", ["bob@dest.test"], subject="fidelity",
                        body="First line.\r\n\r\n  indented\r\n\ttabbed\r\ntrailing space \r\nend\r\n",
                        headers={"X-Custom": "kept as is", "X-Folded": "one\r\n two"})
    p.send("alice@sender.test", ["bob@dest.test"], data)
    t = dest.wait_message(msgid_of(data))
    assert t.mail_from == "alice@sender.test"
    assert t.rcpt_tos == ["bob@dest.test"]
    first, rest = split_first_header(t.data)
    assert first.lower().startswith(b"received:"), f"first header is not Received: {first!r}"
    assert re.search(rb"\bby\s+petrel\.test\b", first, re.I), \
        f"Received: should name petrel's hostname after 'by': {first!r}"
    assert rest == data, ("content changed beyond the added Received: header:\n"
                          f"sent: {data!r}\ngot:  {rest!r}")


def test_dot_stuffing_end_to_end(world):
    p, dest, _ = world.basic()
    body = (b".leading dot\r\n..two dots\r\n...\r\n. space after dot\r\n"
            b"middle . dot\r\n.\tdot tab\r\n..\r\nlast\r\n")
    data = make_message(to=["dots@dest.test"], subject="dots", body=body)
    p.send("alice@sender.test", ["dots@dest.test"], data)   # smtplib stuffs on the way in
    t = dest.wait_message(msgid_of(data))
    _, rest = split_first_header(t.data)
    assert rest == data, f"dot-stuffing broke the body:\nsent: {data!r}\ngot:  {rest!r}"


def test_dot_only_body_line_at_end(world):
    """A message whose last line is a single dot (stuffed as "..") survives."""
    p, dest, _ = world.basic()
    data = make_message(to=["dotend@dest.test"], body=b"text\r\n.\r\n")
    p.send("alice@sender.test", ["dotend@dest.test"], data)
    t = dest.wait_message(msgid_of(data))
    assert split_first_header(t.data)[1] == data


def test_8bit_body_intact(world):
    p, dest, _ = world.basic()
    body = ("UTF-8: café, naïve, Ωμέγα, 漢字, emoji 🐦\r\n".encode("utf-8")
            + b"latin-1 bytes: \xe9\xe8\xe0\xff\xfe\r\n" + bytes(range(0x80, 0x100)) + b"\r\n")
    data = make_message(to=["eight@dest.test"], subject="8bit", body=body,
                        headers={"Content-Type": "text/plain; charset=utf-8",
                                 "Content-Transfer-Encoding": "8bit"})
    p.send("alice@sender.test", ["eight@dest.test"], data, mail_options=["BODY=8BITMIME"])
    t = dest.wait_message(msgid_of(data))
    assert split_first_header(t.data)[1] == data


def test_two_domains_two_queue_entries(world):
    p = None
    one = world.mx_domain("one.test", "127.0.0.2")
    two = world.mx_domain("two.test", "127.0.0.3")
    p = world.petrel()
    rcpts = ["a@one.test", "b@one.test", "c@two.test"]
    data = make_message(to=rcpts, subject="two domains")
    p.send("alice@sender.test", rcpts, data)
    mid = msgid_of(data)
    t1 = one.wait_message(mid)
    t2 = two.wait_message(mid)
    assert sorted(t1.rcpt_tos) == ["a@one.test", "b@one.test"], t1
    assert t2.rcpt_tos == ["c@two.test"], t2
    assert len(one.find(mid)) == 1, "both one.test recipients belong in ONE transaction"
    assert len(two.find(mid)) == 1
    dl = {r: p.wait_record("Delivery", recipient=r) for r in rcpts}
    assert len({d["id"] for d in dl.values()}) == 1, "one message, one id"
    assert dl["a@one.test"]["queue"] == dl["b@one.test"]["queue"] == "one.test"
    assert dl["c@two.test"]["queue"] == "two.test"
    rc = [p.wait_record("Reception", recipient=r) for r in rcpts]
    assert {r["id"] for r in rc} == {dl["a@one.test"]["id"]}


def test_several_recipients_one_transaction(world):
    p, dest, _ = world.basic()
    rcpts = [f"r{i}@dest.test" for i in range(5)]
    data = make_message(to=rcpts)
    p.send("alice@sender.test", rcpts, data)
    t = dest.wait_message(msgid_of(data))
    time.sleep(0.5)
    assert len(dest.find(msgid_of(data))) == 1
    assert sorted(t.rcpt_tos) == sorted(rcpts)


def test_mx_preference_order(world):
    world.dns.set_mx("dest.test", [(20, "mx-b.dest.test"), (5, "mx-a.dest.test"),
                                   (30, "mx-c.dest.test")])
    world.dns.add_a("mx-a.dest.test", "127.0.0.2")
    world.dns.add_a("mx-b.dest.test", "127.0.0.3")
    world.dns.add_a("mx-c.dest.test", "127.0.0.4")
    best = world.sink("127.0.0.2")
    worse = world.sink("127.0.0.3")
    worst = world.sink("127.0.0.4")
    p = world.petrel()
    ids = [p.send_message("alice@sender.test", [f"pref{i}@dest.test"]) for i in range(4)]
    for mid in ids:
        best.wait_message(mid)
    assert not worse.messages() and not worst.messages()
    assert worse.connections == 0 and worst.connections == 0
    d = p.wait_record("Delivery", recipient="pref0@dest.test")
    assert d["peer_address"] == "127.0.0.2"
    assert site_host(d["site"]) == ("mx-a.dest.test", world.mx_port), d["site"]


def test_first_mx_down_next_mx_same_attempt(world):
    world.dns.set_mx("dest.test", [(10, "mx1.dest.test"), (20, "mx2.dest.test")])
    world.dns.add_a("mx1.dest.test", "127.0.0.4")       # nothing listens there
    world.dns.add_a("mx2.dest.test", "127.0.0.2")
    backup = world.sink("127.0.0.2")
    p = world.petrel()
    mid = p.send_message("alice@sender.test", ["fallback@dest.test"])
    backup.wait_message(mid)
    d = p.wait_record("Delivery", recipient="fallback@dest.test")
    assert d["attempts"] == 1, f"the next MX belongs to the same attempt: {d}"
    assert d["peer_address"] == "127.0.0.2"
    assert site_host(d["site"])[0] == "mx2.dest.test"
    assert not p.records("TransientFailure", recipient="fallback@dest.test")


def test_first_mx_421_greeting_next_mx(world):
    world.dns.set_mx("dest.test", [(10, "mx1.dest.test"), (20, "mx2.dest.test")])
    world.dns.add_a("mx1.dest.test", "127.0.0.2")
    world.dns.add_a("mx2.dest.test", "127.0.0.3")
    busy = world.raw_sink("127.0.0.2", "greet421")
    backup = world.sink("127.0.0.3")
    p = world.petrel()
    mid = p.send_message("alice@sender.test", ["busy@dest.test"])
    backup.wait_message(mid)
    assert busy.connections >= 1, "the first MX should have been tried"
    d = p.wait_record("Delivery", recipient="busy@dest.test")
    assert d["attempts"] == 1 and d["peer_address"] == "127.0.0.3", d


def test_no_mx_falls_back_to_a_record(world):
    world.dns.add_a("amx.test", "127.0.0.2")
    sink = world.sink("127.0.0.2")
    p = world.petrel()
    mid = p.send_message("alice@sender.test", ["user@amx.test"])
    sink.wait_message(mid)
    d = p.wait_record("Delivery", recipient="user@amx.test")
    assert d["peer_address"] == "127.0.0.2"
    assert site_host(d["site"]) == ("amx.test", world.mx_port), d["site"]
    assert world.dns.queried("amx.test", "MX"), "an MX lookup comes first"


def test_null_mx_bounces_immediately(world):
    world.dns.set_null_mx("nullmx.test")
    world.dns.add_a("nullmx.test", "127.0.0.4")          # must not be used
    trap = world.sink("127.0.0.4")
    sender = world.mx_domain("sender.test", "127.0.0.3")
    p = world.petrel()
    t0 = time.monotonic()
    mid = p.send_message("alice@sender.test", ["nobody@nullmx.test"])
    b = p.wait_record("Bounce", recipient="nobody@nullmx.test", timeout=10)
    assert time.monotonic() - t0 < 5, "null MX is a bounce at the first attempt, not after retries"
    assert not p.records("TransientFailure", recipient="nobody@nullmx.test")
    assert b["sender"] == "alice@sender.test"
    dsn = wait_for(lambda: [t for t in sender.messages() if t.mail_from == ""], 15,
                   "a DSN at sender.test")[0]
    assert dsn.rcpt_tos == ["alice@sender.test"]
    assert b"nobody@nullmx.test" in dsn.data and mid.strip("<>").encode() in dsn.data
    assert trap.connections == 0 and not trap.messages()


def test_nxdomain_bounces(world):
    world.dns.set_nxdomain("nowhere.test")
    sender = world.mx_domain("sender.test", "127.0.0.3")
    p = world.petrel()
    p.send_message("alice@sender.test", ["someone@nowhere.test"])
    b = p.wait_record("Bounce", recipient="someone@nowhere.test", timeout=10)
    assert b["code"] is None or 500 <= b["code"] <= 599, b
    dsn = wait_for(lambda: [t for t in sender.messages() if t.mail_from == ""], 15,
                   "a DSN at sender.test")[0]
    assert b"someone@nowhere.test" in dsn.data


def test_servfail_defers_then_delivers(world):
    world.dns.set_mode("flaky.test", "servfail")
    p = world.petrel()
    mid = p.send_message("alice@sender.test", ["x@flaky.test"])
    tf = p.wait_record("TransientFailure", recipient="x@flaky.test", timeout=10)
    assert tf["attempts"] == 1, tf
    assert not p.records("Bounce", recipient="x@flaky.test")
    world.dns.clear_mode("flaky.test")
    sink = world.mx_domain("flaky.test", "127.0.0.2")
    sink.wait_message(mid, timeout=15)
    d = p.wait_record("Delivery", recipient="x@flaky.test")
    assert d["attempts"] >= 2


def test_mx_down_deferred_then_delivered_when_up(world):
    world.mx_domain("dest.test", "127.0.0.2", sink=False)
    p = world.petrel()
    mid = p.send_message("alice@sender.test", ["later@dest.test"])
    tf = p.wait_record("TransientFailure", recipient="later@dest.test", timeout=10)
    assert site_host(tf["site"]) == ("mx.dest.test", world.mx_port), tf
    sink = world.sink("127.0.0.2")
    sink.wait_message(mid, timeout=15)
    d = p.wait_record("Delivery", recipient="later@dest.test")
    assert d["attempts"] >= 2


def test_relayhost_brackets_no_mx_lookup(world):
    relay_port = world.other_port()
    relay = world.sink("127.0.0.6", port=relay_port)
    dest = world.mx_domain("dest.test", "127.0.0.2")       # must not be used
    p = world.petrel(delivery={"relayhost": f"[127.0.0.6]:{relay_port}"})
    ids = [p.send_message("alice@sender.test", ["a@dest.test"]),
           p.send_message("alice@sender.test", ["b@unknown-domain.test"])]
    for mid in ids:
        relay.wait_message(mid)
    assert not dest.messages()
    assert not world.dns.queried("dest.test", "MX") and not world.dns.queried("unknown-domain.test")
    d = p.wait_record("Delivery", recipient="a@dest.test")
    assert d["peer_address"] == "127.0.0.6"
    assert site_host(d["site"]) == ("127.0.0.6", relay_port), d["site"]


def test_transport_domain_route(world):
    rp = world.other_port()
    relay = world.sink("127.0.0.7", port=rp)
    routed_mx = world.mx_domain("routed.test", "127.0.0.4")  # must not be used
    dest = world.mx_domain("dest.test", "127.0.0.2")
    p = world.petrel(transport={"routed.test": {"relayhost": f"[127.0.0.7]:{rp}"}})
    m1 = p.send_message("alice@sender.test", ["x@routed.test"])
    m2 = p.send_message("alice@sender.test", ["y@dest.test"])
    relay.wait_message(m1)
    dest.wait_message(m2)
    assert not relay.find(m2) and not dest.find(m1)
    assert not routed_mx.messages()


def test_transport_subdomain_route(world):
    rp = world.other_port()
    relay = world.sink("127.0.0.7", port=rp)
    corp = world.mx_domain("corp.test", "127.0.0.2")
    world.mx_domain("a.corp.test", "127.0.0.4", sink=False)
    p = world.petrel(transport={".corp.test": {"relayhost": f"[127.0.0.7]:{rp}"}})
    m1 = p.send_message("alice@sender.test", ["u@a.corp.test"])
    m2 = p.send_message("alice@sender.test", ["v@b.x.corp.test"])
    m3 = p.send_message("alice@sender.test", ["w@corp.test"])
    relay.wait_message(m1)
    relay.wait_message(m2)
    corp.wait_message(m3)       # ".corp.test" covers subdomains, not corp.test itself
    assert not relay.find(m3)


def test_transport_wildcard_route(world):
    rp = world.other_port()
    relay = world.sink("127.0.0.7", port=rp)
    dest = world.mx_domain("dest.test", "127.0.0.2")
    p = world.petrel(transport={"*": {"relayhost": f"[127.0.0.7]:{rp}"},
                                "dest.test": "discard"})
    m1 = p.send_message("alice@sender.test", ["x@anything.test"])
    relay.wait_message(m1)
    p.send_message("alice@sender.test", ["y@dest.test"])
    p.wait_record("Delivery", recipient="y@dest.test")
    time.sleep(0.5)
    assert not dest.messages() and len(relay.messages()) == 1


def test_transport_discard(world):
    trap = world.mx_domain("discard.test", "127.0.0.2")
    p = world.petrel(transport={"discard.test": "discard"})
    code, _ = p.send("alice@sender.test", ["gone@discard.test"],
                     make_message(to=["gone@discard.test"], subject="discard me"))
    assert code == 250
    d = p.wait_record("Delivery", recipient="gone@discard.test")
    assert "discard" in (d["response"] or "").lower(), d
    time.sleep(1.0)
    assert not trap.messages() and trap.connections == 0


def test_transport_error_route(world):
    dest = world.mx_domain("dest.test", "127.0.0.2")
    p = world.petrel(transport={"blocked.test": "error:550 5.1.1 local delivery disabled"})
    data = make_message(to=["x@blocked.test", "ok@dest.test"])
    with p.smtp() as s:
        assert s.mail("alice@sender.test")[0] == 250
        code, resp = s.rcpt("x@blocked.test")
        assert code == 550, (code, resp)
        assert resp.startswith(b"5.1.1") and b"local delivery disabled" in resp, resp
        code, resp = s.rcpt("ok@dest.test")
        assert code == 250, "other recipients of the transaction are unaffected"
        code, resp = s.data(data)
        assert code == 250
    t = dest.wait_message(msgid_of(data))
    assert t.rcpt_tos == ["ok@dest.test"]


def test_connection_reuse(world):
    dest = world.mx_domain("dest.test", "127.0.0.2", delay=0.15)
    p = world.petrel(delivery={"max_deliveries_per_connection": 100,
                               "max_connections_per_domain": 2})
    ids = []
    with p.smtp() as s:
        for i in range(20):
            data = make_message(to=[f"reuse{i}@dest.test"], subject=f"reuse {i}")
            p.send("alice@sender.test", [f"reuse{i}@dest.test"], data, smtp=s)
            ids.append(msgid_of(data))
    for mid in ids:
        dest.wait_message(mid, timeout=30)
    per_conn = {}
    for t in dest.messages():
        per_conn[t.conn] = per_conn.get(t.conn, 0) + 1
    assert dest.connections < 20, f"no connection reuse: {dest.connections} connections for 20 messages"
    assert max(per_conn.values()) > 1, per_conn


def test_max_deliveries_per_connection(world):
    dest = world.mx_domain("dest.test", "127.0.0.2", delay=0.1)
    p = world.petrel(delivery={"max_deliveries_per_connection": 3,
                               "max_connections_per_domain": 1})
    ids = []
    with p.smtp() as s:
        for i in range(9):
            data = make_message(to=[f"cap{i}@dest.test"])
            p.send("alice@sender.test", [f"cap{i}@dest.test"], data, smtp=s)
            ids.append(msgid_of(data))
    for mid in ids:
        dest.wait_message(mid, timeout=30)
    per_conn = {}
    for t in dest.messages():
        per_conn[t.conn] = per_conn.get(t.conn, 0) + 1
    assert max(per_conn.values()) <= 3, f"more than 3 messages on one connection: {per_conn}"
    assert dest.connections >= 3


def test_max_connections_per_domain_1(world):
    dest = world.mx_domain("dest.test", "127.0.0.2", delay=0.3)
    p = world.petrel(delivery={"max_connections_per_domain": 1})
    ids, errors = [], []

    def client(i):
        try:
            ids.append(p.send_message("alice@sender.test", [f"c{i}@dest.test"]))
        except Exception as e:  # reported below
            errors.append(e)
    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    for mid in ids:
        dest.wait_message(mid, timeout=30)
    assert dest.max_active == 1, f"{dest.max_active} concurrent connections to one domain"


def test_parallel_connections_allowed_by_default(world):
    """With the default limit (10) a slow MX gets more than one connection."""
    dest = world.mx_domain("dest.test", "127.0.0.2", delay=0.5)
    p = world.petrel()
    ids = []

    def client(i):
        ids.append(p.send_message("alice@sender.test", [f"par{i}@dest.test"]))
    threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for mid in ids:
        dest.wait_message(mid, timeout=30)
    assert dest.max_active > 1
    assert dest.max_active <= 10


def test_no_pipelining_next_hop(world):
    dest = world.mx_domain("dest.test", "127.0.0.2", pipelining=False)
    p = world.petrel()
    rcpts = ["np1@dest.test", "np2@dest.test"]
    data = make_message(to=rcpts)
    p.send("alice@sender.test", rcpts, data)
    t = dest.wait_message(msgid_of(data))
    assert sorted(t.rcpt_tos) == rcpts


def test_max_message_rate_paces_each_destination(world):
    """max_message_rate = 120 (per minute per destination): 2 messages a second with a
    burst of 2; another destination is not held back by the first one's pace."""
    slow = world.mx_domain("slow.test", "127.0.0.2")
    other = world.mx_domain("other.test", "127.0.0.4")
    p = world.petrel(delivery={"max_message_rate": 120})
    s = p.smtp()
    t0 = time.monotonic()
    try:
        slow_ids = []
        for i in range(6):
            d = make_message(to=["a@slow.test"], subject=f"paced {i}")
            p.send("alice@sender.test", ["a@slow.test"], d, smtp=s)
            slow_ids.append(msgid_of(d))
        d = make_message(to=["b@other.test"], subject="not paced")
        p.send("alice@sender.test", ["b@other.test"], d, smtp=s)
    finally:
        s.quit()
    other.wait_message(msgid_of(d), timeout=10)
    assert time.monotonic() - t0 < 1.5, "other.test waited behind slow.test's pace"
    for mid in slow_ids:
        slow.wait_message(mid, timeout=15)
    times = sorted(t.time for t in slow.messages())
    assert len(times) == 6
    # burst of 2 at once, then one every 0.5 s: the 6th arrives 2 s after the 1st
    span = times[-1] - times[0]
    assert span >= 1.7, f"6 messages at 120/min arrived within {span:.2f} s: not paced"
    gaps = [b - a for a, b in zip(times[2:], times[3:])]
    assert min(gaps) >= 0.35, f"gaps after the burst {gaps}: faster than 2 per second"
    assert span < 6, f"pacing far slower than configured: {span:.2f} s"
