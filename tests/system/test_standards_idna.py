"""IDNA (RFC 6531 §3.2 / RFC 5890): an internationalized recipient domain is looked up
in DNS in its A-label form (libidn2, IDNA2008 with UTS #46 nontransitional
processing) — the fake DNS knows only the A-label names — while the envelope sent to
an SMTPUTF8 next hop keeps the UTF-8 form. A domain that does not convert bounces
with 5.1.2 (bad destination domain). The next hop is standards_sinks.CapsSink.
"""

from harness import make_message, msgid_of, raw_send, wait_for
from standards_sinks import CapsSink

ALABEL = "xn--bcher-kva.test"   # bücher.test


def alabel_hop(world):
    ip = world.new_ip()
    world.dns.add_mx(ALABEL, f"mx.{ALABEL}", 10)
    world.dns.add_a(f"mx.{ALABEL}", ip)
    s = CapsSink(ip, world.mx_port, exts=["PIPELINING", "8BITMIME", "CHUNKING", "SMTPUTF8"],
                 name=f"mx.{ALABEL}")
    world.sinks.append(s)
    return s.start()


def test_utf8_domain_looked_up_as_alabel(world):
    hop = alabel_hop(world)
    p = world.petrel()
    data = make_message(to=["jörg@bücher.test"], subject="idna")
    # mixed case: UTS #46 mapping lowercases, the same A-label is queried
    raw_send(p, "alice@sender.test", ["jörg@bücher.test", "anna@BÜCHER.test"], data, " SMTPUTF8")
    t = hop.wait_message(msgid_of(data), timeout=30)
    assert b" SMTPUTF8" in t.mail_line.upper(), t.mail_line
    # RFC 6531: the envelope keeps the UTF-8 form, as received (the queue domain is
    # the U-label as given, so the two spellings may travel in two transactions)
    wait_for(lambda: sorted(r for m in hop.messages() for r in m.rcpt_tos)
             == ["anna@BÜCHER.test", "jörg@bücher.test"], 30, "both recipients")
    assert world.dns.queried(ALABEL, "MX"), world.dns.queries
    # MTA-STS (on by default) asks for the A-label's policy record
    assert world.dns.queried(f"_mta-sts.{ALABEL}", "TXT"), world.dns.queries
    assert not any(q[0].startswith("b\u00fc") or "ü" in q[0] for q in world.dns.queries), \
        world.dns.queries
    rec = p.wait_record("Delivery", recipient="jörg@bücher.test")
    assert rec["code"] == 250, rec


def test_alabel_domain_passes_unchanged(world):
    hop = alabel_hop(world)
    p = world.petrel()
    data = make_message(to=[f"bob@{ALABEL}"], subject="xn-- as given")
    p.send("alice@sender.test", [f"bob@{ALABEL}"], data)
    t = hop.wait_message(msgid_of(data), timeout=30)
    assert t.rcpt_tos == [f"bob@{ALABEL}"]
    assert world.dns.queried(ALABEL, "MX")


def test_idna_failure_bounces_5_1_2(world):
    sender = world.mx_domain("sender.test", "127.0.0.3")
    alabel_hop(world)
    p = world.petrel()
    data = make_message(to=["jörg@ab--ü.test"], subject="bad idna")
    raw_send(p, "alice@sender.test", ["jörg@ab--ü.test"], data, " SMTPUTF8")
    rec = p.wait_record("Bounce", recipient="jörg@ab--ü.test", timeout=30)
    resp = rec["response"] or ""
    assert "5.1.2" in resp and "IDNA" in resp and "bad destination domain" in resp, rec
    assert rec["code"] == 550, rec
    dsn = wait_for(lambda: next((t for t in sender.messages() if t.mail_from in ("", "<>")),
                                None), 30, "the DSN to alice@sender.test")
    # a UTF-8 recipient: the report may be message/global-delivery-status (RFC 6533)
    assert b"Status: 5.1.2" in dsn.data, dsn.data[:2000]
    # the daemon is still there
    good = make_message(subject="still alive")
    p.send("alice@sender.test", [f"bob@{ALABEL}"], good)
    p.wait_record("Delivery", recipient=f"bob@{ALABEL}", timeout=30)


def test_queue_shows_the_domain_as_received(world):
    """The queue (domain in /api/queue) keeps the U-label the client gave; only DNS
    sees the A-label."""
    import json
    import urllib.request
    from harness import free_port
    ip = world.new_ip()
    world.dns.add_mx(ALABEL, f"mx.{ALABEL}", 10)
    world.dns.add_a(f"mx.{ALABEL}", ip)
    hop = CapsSink(ip, world.mx_port, exts=["PIPELINING", "8BITMIME", "CHUNKING", "SMTPUTF8"],
                   name=f"mx.{ALABEL}", rcpt_reply=lambda a: "451 4.3.0 later")
    world.sinks.append(hop)
    hop.start()
    port = free_port()
    p = world.petrel(queue={"retry_interval": "1h"},
                     extra=f'petrel.start_http_listener {{ listen = "127.0.0.1:{port}" }}')
    data = make_message(to=["jörg@bücher.test"], subject="deferred idna")
    raw_send(p, "alice@sender.test", ["jörg@bücher.test"], data, " SMTPUTF8")
    p.wait_record("TransientFailure", recipient="jörg@bücher.test", timeout=30)
    doc = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/queue", timeout=10))
    domains = [q["domain"] for q in doc["queues"]]
    assert "bücher.test" in domains and ALABEL not in domains, doc
