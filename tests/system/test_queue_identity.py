"""Queue identity (issue 9, delivery wing): a delivery queue is identified by its
whole route (name, TLS policy, CA file, credentials, relay host and port), never by
the relay host string alone; the route is decided once, at reception, and stored
with the entry; the queue a message is in has one name for /api/queue, the log, the
metrics and the admin actions (DESIGN §4 configure_transport, §5, §6).

Next hops are the recording sinks (sinks.Sink, tls_sinks.TLSSink) on loopback.
"""

import time

import pytest

from certs import PKI
from harness import check_record_keys, make_message, msgid_of, wait_for
from tls_sinks import tls_sink


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return PKI(tmp_path_factory.mktemp("pki"))


def send(p, rcpt, sender="alice@sender.test"):
    data = make_message(sender, [rcpt], subject=f"queue identity: {rcpt}")
    p.send(sender, [rcpt], data)
    return msgid_of(data)


def test_two_routes_to_one_relay_keep_their_own_tls_policy(world):
    """Route may.test (tls may) and route enc.test (tls encrypt) name the same
    [127.0.0.1]:PORT relay, which offers no STARTTLS: may.test's mail arrives (in
    clear), enc.test's must never arrive in clear: it is deferred."""
    rp = world.other_port()
    relay = world.sink("127.0.0.1", rp)                     # no STARTTLS offered
    hop = f"[127.0.0.1]:{rp}"
    p = world.petrel(transport={"may.test": {"relayhost": hop, "tls": "may"},
                                "enc.test": {"relayhost": hop, "tls": "encrypt"}})
    for first, second in (("a1@may.test", "b1@enc.test"), ("b2@enc.test", "a2@may.test")):
        m1 = send(p, first)
        m2 = send(p, second)
        may_mid = m1 if first.endswith("may.test") else m2
        relay.wait_message(may_mid)
    recs = p.wait_records("TransientFailure", 2, timeout=20, recipient="b1@enc.test")
    for r in recs:
        check_record_keys(r)
        assert r["queue"] == "enc.test", r
    p.wait_records("TransientFailure", 1, timeout=20, recipient="b2@enc.test")
    time.sleep(1.5)                                          # another retry or two
    for rcpt in ("b1@enc.test", "b2@enc.test"):
        assert not relay.for_rcpt(rcpt), f"encrypt route's mail arrived in clear: {rcpt}"
        assert not p.records("Delivery", recipient=rcpt)
    for rcpt in ("a1@may.test", "a2@may.test"):
        rec = p.wait_record("Delivery", recipient=rcpt)
        assert rec["tls"] is None and rec["queue"] == "may.test", rec


def test_two_routes_to_one_relay_authenticate_as_their_own_user(world, pki):
    """Two tenants' routes to one AUTH-checking relay with different credentials:
    each tenant's mail goes authenticated as its own user, whatever the order."""
    rp = world.other_port()
    world.dns.add_a("relay.test", "127.0.0.6")
    leaf = pki.leaf("relay.test")
    relay = tls_sink(world, "127.0.0.6", rp, tls_context=pki.server_context(*leaf),
                     users={"alpha": "Alpha-pw-1", "beta": "Beta-pw-2"}, auth_required=True)
    hop = f"[relay.test]:{rp}"
    p = world.petrel(transport={
        "alpha.test": {"relayhost": hop, "tls": "encrypt",
                       "auth": {"username": "alpha", "password": "Alpha-pw-1"}},
        "beta.test": {"relayhost": hop, "tls": "encrypt",
                      "auth": {"username": "beta", "password": "Beta-pw-2"}},
    })
    sent = {}
    for rcpt in ("x1@alpha.test", "y1@beta.test", "y2@beta.test", "x2@alpha.test"):
        sent[rcpt] = send(p, rcpt)
    for rcpt, mid in sent.items():
        t = relay.wait_message(mid, timeout=20)
        want = "alpha" if rcpt.endswith("alpha.test") else "beta"
        assert t.auth_user == want, f"{rcpt} went authenticated as {t.auth_user!r}, not {want}"
        assert t.tls is not None
    assert all(a[3] for a in relay.auth_attempts), relay.auth_attempts


def rewrite_config(world, p, **cfg):
    with open(p.cfg_path, "w") as f:
        f.write(world.config(p.workdir, p.port, **cfg))


def test_config_change_does_not_move_queued_mail(world):
    """The route is decided at reception and stored: mail queued for MX delivery
    stays on it after a restart with a catch-all relayhost route; new mail takes the
    new route."""
    world.mx_domain("dest.test", "127.0.0.2", sink=False)   # the MX is down for now
    p = world.petrel()
    mid = send(p, "bob@dest.test")
    p.wait_record("TransientFailure", recipient="bob@dest.test")
    p.stop()
    rp = world.other_port()
    relay = world.sink("127.0.0.7", rp)
    rewrite_config(world, p, transport={"*": {"relayhost": f"[127.0.0.7]:{rp}"}})
    mx = world.sink("127.0.0.2")
    p.restart()
    mx.wait_message(mid, timeout=20)
    mid2 = send(p, "carol@dest.test")
    relay.wait_message(mid2)
    assert not relay.find(mid), "queued mail moved to the new route"
    assert not mx.find(mid2)


def test_removed_route_is_logged_not_silent(world):
    """Mail queued on a transport route that a new config no longer has goes by its
    domain, and the diagnostic log says so, naming the route."""
    rp = world.other_port()
    world.mx_domain("dest.test", "127.0.0.2", sink=False)
    p = world.petrel(transport={"dest.test": {"relayhost": f"[127.0.0.7]:{rp}"}})
    mid = send(p, "bob@dest.test")                          # the relay is down
    p.wait_record("TransientFailure", recipient="bob@dest.test")
    p.stop()
    rewrite_config(world, p)
    mx = world.sink("127.0.0.2")
    p.restart()
    mx.wait_message(mid, timeout=20)
    wait_for(lambda: "route 'dest.test'" in p.stderr_text() and
             "no longer configured" in p.stderr_text(), 5, "the warning about the route")


# ---------------------------------------------------------------- one queue identity

from test_http import http_petrel, request  # noqa: E402
from test_http_inject import post  # noqa: E402


def act(url, action, doc, want=None):
    r = post(url, f"/api/queue/{action}", doc)
    assert r.status == 200, r
    if want is not None:
        assert r.json() == {"affected": want}, (action, doc, r.json())
    return r.json()["affected"]


def queues(url):
    return request(url, "/api/queue").json()["queues"]


@pytest.mark.parametrize("by", ["domain", "route", "relayhost"])
def test_suspend_a_relayed_destination(world, by):
    """Mail routed by a transport route to a relayhost: suspending its recipient
    domain, its route's name or its relay host really holds it (it used to answer
    affected:1 and deliver anyway); /api/queue names the queue by the recipient
    domain, as the log does, with the route beside it; resume delivers."""
    rp = world.other_port()
    relay = world.sink("127.0.0.7", rp)
    hop = f"[127.0.0.7]:{rp}"
    other = world.mx_domain("other.test", "127.0.0.2")
    p, (url,) = http_petrel(world, transport={"routed.test": {"relayhost": hop},
                                              "side.test": {"relayhost": hop}})
    what = {"domain": "routed.test", "route": "routed.test", "relayhost": hop}[by]
    act(url, "suspend", {"domain": what, "duration": "10m"}, 0)
    mid = send(p, "bob@routed.test")
    mid_other = send(p, "carol@other.test")
    mid_side = send(p, "dan@side.test")
    other.wait_message(mid_other)
    if by != "relayhost":                 # the same relay by another route still goes
        relay.wait_message(mid_side)
    time.sleep(1.5)
    assert not relay.find(mid), f"suspended by {by} and delivered anyway"
    rows = [q for q in queues(url) if q["domain"] == "routed.test"]
    assert len(rows) == 1, queues(url)
    q = rows[0]
    assert q["suspended"] is True and q["count"] == 1 and q["route"] == "routed.test", q
    rec = p.wait_record("Reception", recipient="bob@routed.test")
    assert rec["queue"] == q["domain"]
    act(url, "resume", {"domain": what}, 2 if by == "relayhost" else 1)
    relay.wait_message(mid)
    if by == "relayhost":
        relay.wait_message(mid_side)
    assert p.wait_record("Delivery", recipient="bob@routed.test")["queue"] == "routed.test"


def admin_records(p, action):
    return [r for r in p.records("Admin") if (r["response"] or "").startswith(action)]


def test_admin_actions_write_admin_records(world):
    """suspend, resume, flush, bounce and delete each write one Admin record per
    affected recipient, with the DESIGN §6 keys."""
    world.mx_domain("dest.test", "127.0.0.2", sink=False)
    world.mx_domain("sender.test", "127.0.0.3")
    p, (url,) = http_petrel(world, queue={"retry_interval": "1h", "max_retry_interval": "1h"})
    send(p, "a1@dest.test")
    a = p.wait_record("Reception", recipient="a1@dest.test")["id"]
    p.send("alice@sender.test", ["a2@dest.test", "a3@dest.test"],
           make_message("alice@sender.test", ["a2@dest.test", "a3@dest.test"]))
    p.wait_records("TransientFailure", 3)
    act(url, "suspend", {"domain": "dest.test", "duration": "10m", "reason": "maint"}, 3)
    recs = wait_for(lambda: admin_records(p, "suspended") if
                    len(admin_records(p, "suspended")) == 3 else None, 5, "3 suspend records")
    assert {r["recipient"] for r in recs} == {"a1@dest.test", "a2@dest.test", "a3@dest.test"}
    for r in recs:
        check_record_keys(r)
        assert r["queue"] == "dest.test" and r["sender"] == "alice@sender.test", r
        assert "until" in r["response"] and "maint" in r["response"], r
        assert r["code"] is None and r["site"] is None, r
    act(url, "flush", {"domain": "dest.test"}, 3)
    act(url, "resume", {"domain": "dest.test"}, 3)
    wait_for(lambda: len(admin_records(p, "flushed")) == 3 and
             len(admin_records(p, "resumed")) == 3, 5, "flush and resume records")
    ids = {r["id"] for r in admin_records(p, "resumed")}
    rest = (ids - {a}).pop()
    act(url, "bounce", {"id": a, "reason": "asked"}, 1)
    act(url, "delete", {"id": rest}, 2)
    wait_for(lambda: len(admin_records(p, "bounced")) == 1 and
             len(admin_records(p, "deleted")) == 2, 5, "bounce and delete records")
    assert admin_records(p, "bounced")[0]["recipient"] == "a1@dest.test"
    assert {r["recipient"] for r in admin_records(p, "deleted")} == {"a2@dest.test",
                                                                      "a3@dest.test"}


def test_suspension_survives_a_restart(world):
    """Suspensions are kept in the spool: after a restart the mail stays held until
    the suspension ends (then it goes), and a resume after the restart lifts it."""
    dest = world.mx_domain("dest.test", "127.0.0.2")
    other = world.mx_domain("other.test", "127.0.0.3")
    p, (url,) = http_petrel(world)
    t0 = time.time()
    act(url, "suspend", {"domain": "dest.test", "duration": "8s"}, 0)
    act(url, "suspend", {"domain": "other.test", "duration": "10m"}, 0)
    mid = send(p, "bob@dest.test")
    mid2 = send(p, "carol@other.test")
    p.stop()
    p.restart()
    time.sleep(1.0)
    rows = {q["domain"]: q for q in queues(url)}
    assert rows["dest.test"]["suspended"] is True and rows["dest.test"]["count"] == 1, rows
    assert rows["other.test"]["suspended"] is True, rows
    assert not dest.find(mid) and not other.find(mid2), "delivered though suspended"
    dest.wait_message(mid, timeout=25)
    assert time.time() >= t0 + 7.5, "delivered before the suspension ended"
    assert not other.find(mid2)
    act(url, "resume", {"domain": "other.test"}, 1)
    other.wait_message(mid2)
    p.stop()
    p.restart()                          # the resumed one is not restored
    mid3 = send(p, "dan@other.test")
    other.wait_message(mid3)


def test_queue_counts_mail_in_flight_on_a_relay_route(world):
    """A message in the middle of its transaction with a relay still counts in its
    domain's row (the route's queue serves several domains)."""
    rp = world.other_port()
    relay = world.sink("127.0.0.7", rp, delay=3.0)        # slow to answer the final dot
    p, (url,) = http_petrel(world, transport={"*": {"relayhost": f"[127.0.0.7]:{rp}"}})
    mid = send(p, "bob@slow.test")
    wait_for(lambda: relay.active > 0, 10, "the transaction to start")
    time.sleep(0.3)
    rows = [q for q in queues(url) if q["domain"] == "slow.test"]
    assert rows and rows[0]["count"] == 1 and rows[0]["route"] == "*", queues(url)
    assert request(url, "/api/queue").json()["total"] == 1
    relay.wait_message(mid)
    wait_for(lambda: request(url, "/api/queue").json()["total"] == 0, 10, "an empty queue")
