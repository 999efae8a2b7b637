"""Egress sources and pools (DESIGN §9): make_egress_source / make_egress_pool, a
source per message by smooth weighted round robin from the pool that
set_egress_pool or the tenant's egress_pool names, connections bound to the
source address and EHLO with its ehlo_domain; the sink records the peer address
and the EHLO name of each session. --check refuses bad input at FILE:LINE."""

import collections
from harness import make_message, run_petrel, wait_for

SOURCES = '''
petrel.make_egress_source { name = "ip1", source_address = "127.0.0.21", ehlo_domain = "mta1.example.com" }
petrel.make_egress_source { name = "ip2", source_address = "127.0.0.22", ehlo_domain = "mta2.example.com" }
petrel.make_egress_pool { name = "pool-a", entries = { { name = "ip1", weight = 3 }, { name = "ip2", weight = 1 } } }
petrel.make_egress_pool { name = "pool-b", entries = { { name = "ip2", weight = 1 } } }
petrel.configure_tenant { name = "acme", egress_pool = "pool-a" }
'''

WANT_EHLO = {"127.0.0.21": "mta1.example.com", "127.0.0.22": "mta2.example.com"}


def _send_many(p, n, rcpt, **kw):
    s = p.smtp()
    try:
        for i in range(n):
            data = make_message(to=[rcpt], subject=f"m{i}", **kw)
            p.send("alice@sender.test", [rcpt], data, smtp=s)
    finally:
        s.quit()


def test_pool_weights_bind_and_ehlo(world):
    dest = world.mx_domain("dest.test")
    p = world.petrel(extra=SOURCES, listener={"tenant": "acme"})
    n = 1000   # the figure: weights within ±10% over 1,000 messages
    _send_many(p, n, "bob@dest.test")
    txns = dest.wait_count(n, timeout=60)
    peers = collections.Counter(t.peer for t in txns)
    assert set(peers) == {"127.0.0.21", "127.0.0.22"}, peers
    assert abs(peers["127.0.0.21"] - n * 3 / 4) <= n * 3 / 4 * 0.10, peers
    assert abs(peers["127.0.0.22"] - n / 4) <= n / 4 * 0.10, peers
    for t in txns:
        assert t.helo == WANT_EHLO[t.peer], (t.peer, t.helo)
    recs = p.wait_records("Delivery", n, timeout=30)
    by_src = collections.Counter(r["egress_source"] for r in recs)
    assert by_src == {"ip1": peers["127.0.0.21"], "ip2": peers["127.0.0.22"]}, by_src
    assert all(r["tenant"] == "acme" for r in recs)
    for r in recs:
        assert r["peer_address"] == "127.0.0.1" or r["peer_address"].startswith("127."), r


HOOK = '''
petrel.on("smtp_message_received", function(domain, meta)
  if meta.headers["subject"] == "b" then petrel.set_egress_pool("pool-b") end
  if meta.headers["subject"] == "nope" then petrel.set_egress_pool("no-such-pool") end
end)
'''


def test_set_egress_pool_from_hook_and_default_source(world):
    dest = world.mx_domain("dest.test")
    p = world.petrel(extra=SOURCES + HOOK)
    for i in range(4):
        data = make_message(to=["bob@dest.test"], subject="b")
        p.send("alice@sender.test", ["bob@dest.test"], data)
    plain = make_message(to=["bob@dest.test"], subject="plain")
    p.send("alice@sender.test", ["bob@dest.test"], plain)
    txns = dest.wait_count(5, timeout=30)
    got = collections.Counter((t.header("Subject"), t.peer) for t in txns)
    assert got[("b", "127.0.0.22")] == 4, got
    # no pool: the host's own choice of address, the configured helo_name
    plain_t = [t for t in txns if t.header("Subject") == "plain"]
    assert plain_t and plain_t[0].peer not in ("127.0.0.21", "127.0.0.22"), got
    assert plain_t[0].helo not in WANT_EHLO.values()
    recs = p.wait_records("Delivery", 5)
    assert collections.Counter(r["egress_source"] for r in recs) == {"ip2": 4, None: 1}
    # an unknown pool is the hook's error: 451, nothing queued
    s = p.smtp()
    try:
        assert s.mail("alice@sender.test")[0] == 250
        assert s.rcpt("bob@dest.test")[0] == 250
        code, msg = s.data(make_message(to=["bob@dest.test"], subject="nope"))
        assert code == 451 and b"4.3.0" in msg, (code, msg)
    finally:
        s.quit()
    # the hook's failure is logged by the worker beside the 451, not before it
    wait_for(lambda: "no egress pool named 'no-such-pool'" in p.stderr_text(), 10,
             "the hook failure in the log")


BAD = [
    ('petrel.make_egress_pool { name = "p", entries = { { name = "ghost", weight = 1 } } }',
     "no egress source named 'ghost'"),
    ('petrel.make_egress_source { name = "ip1", source_address = "127.0.0.21" }\n'
     'petrel.make_egress_pool { name = "p", entries = { { name = "ip1", weight = 0 } } }',
     "weight"),
    ('petrel.make_egress_source { name = "ip1", source_address = "127.0.0.21" }\n'
     'kumo.make_egress_pool { name = "p", entries = { { name = "ip1", weight = -2 } } }',
     "weight"),
    ('petrel.make_egress_source { name = "far", source_address = "192.0.2.77" }',
     "not an address of this host"),
    ('petrel.make_egress_source { name = "bad", source_address = "not-an-ip" }',
     "not an IPv4 or IPv6 address"),
    ('petrel.make_egress_source { name = "ip1", source_address = "127.0.0.21", colour = 1 }',
     "unknown option 'colour'"),
    ('kumo.configure_tenant { name = "acme", egress_pool = "nowhere" }',
     "egress_pool 'nowhere' is not defined"),
    ('petrel.make_egress_source { name = "ip1", source_address = "127.0.0.21" }\n'
     'petrel.make_egress_pool { name = "p", entries = {} }',
     "entries"),
]


def test_check_refuses_bad_egress_config(tmp_path):
    for i, (body, want) in enumerate(BAD):
        f = tmp_path / f"bad{i}.lua"
        f.write_text("-- line 1\n" + body + "\n")
        r = run_petrel("--check", "-c", str(f))
        err = r.stderr.decode()
        line = 1 + body.count("\n") + 1
        assert r.returncode == 1, (body, r.stdout, err)
        assert f"{f}:{line}:" in err and want in err, (body, err)
    good = tmp_path / "good.lua"
    good.write_text(SOURCES + HOOK)
    r = run_petrel("--check", "-c", str(good))
    assert r.returncode == 0 and b"config ok" in r.stdout, r.stderr


def _warm_cfg(caps):
    return ('petrel.make_egress_source { name = "warm", source_address = "127.0.0.23", '
            f'ehlo_domain = "warm.example.com", warmup = {{ {", ".join(map(str, caps))} }} }}\n'
            'petrel.make_egress_pool { name = "wp", entries = { { name = "warm", weight = 1 } } }\n'
            'petrel.configure_tenant { name = "acme", egress_pool = "wp" }\n')


def _state_path(p):
    import os
    return os.path.join(p.workdir, "spool", "egress", "STATE.json")


def test_warmup_cap_holds_and_survives_restart(world):
    import json
    import time
    dest = world.mx_domain("dest.test")
    p = world.petrel(extra=_warm_cfg([5, 100]), listener={"tenant": "acme"})
    _send_many(p, 12, "bob@dest.test")
    txns = dest.wait_count(5, timeout=20)
    time.sleep(3)
    assert len(dest.messages()) == 5, dest.messages()
    assert {t.peer for t in dest.messages()} == {"127.0.0.23"}
    st = json.load(open(_state_path(p)))["sources"]["warm"]
    assert st["day"] == st["first_day"] == int(time.time() // 86400), st
    assert sum(st["sent"].values()) == 5, st
    # the rest waits (not moved elsewhere, not bounced)
    assert not p.records("Bounce") and not p.records("Expiration")
    p.stop()
    p.start()
    time.sleep(4)
    assert len(dest.messages()) == 5, "the day's cap held across the restart"
    assert len(p.records("Delivery")) == 5
    assert txns[0].helo == "warm.example.com"


def test_warmup_day_counts_from_the_first_send_kept_in_the_spool(world):
    import json
    import os
    import time
    dest = world.mx_domain("dest.test")
    p = world.petrel(start=False, extra=_warm_cfg([2, 4]), listener={"tenant": "acme"})
    today = int(time.time() // 86400)
    os.makedirs(os.path.dirname(_state_path(p)), exist_ok=True)
    # first send yesterday: today is day 2, cap 4 (yesterday's count does not matter)
    with open(_state_path(p), "w") as f:
        json.dump({"sources": {"warm": {"first_day": today - 1, "day": today - 1,
                                        "sent": {"dest.test": 2}}}}, f)
    p.start()
    _send_many(p, 7, "bob@dest.test")
    dest.wait_count(4, timeout=20)
    time.sleep(3)
    assert len(dest.messages()) == 4, dest.messages()
    p.stop()
    # first send two days ago: past the schedule, no cap
    with open(_state_path(p), "w") as f:
        json.dump({"sources": {"warm": {"first_day": today - 2, "day": today - 2,
                                        "sent": {}}}}, f)
    p.start()
    dest.wait_count(7, timeout=20)


def test_site_budget_is_per_source(world):
    """A site rule's rate is each source's own: two sources at 2/s each deliver a
    site's mail at about 4/s together (one shared budget would give 2/s)."""
    import time
    dest = world.mx_domain("dest.test", mx_name="mx1.site.test")
    cfg = ('petrel.configure_shaping { ["site:*.site.test"] = { max_message_rate = "2/s" } }\n'
           'petrel.make_egress_source { name = "a", source_address = "127.0.0.25" }\n'
           'petrel.make_egress_source { name = "b", source_address = "127.0.0.26" }\n'
           'petrel.make_egress_pool { name = "ab", entries = { { name = "a" }, { name = "b" } } }\n'
           'petrel.configure_tenant { name = "acme", egress_pool = "ab" }\n')
    p = world.petrel(extra=cfg, listener={"tenant": "acme"})
    n = 20
    t0 = time.time()
    _send_many(p, n, "bob@dest.test")
    txns = dest.wait_count(n, timeout=30)
    times = sorted(t.time for t in txns)
    per = collections.Counter(t.peer for t in txns)
    assert per == {"127.0.0.25": n // 2, "127.0.0.26": n // 2}, per
    span = times[-1] - times[0]
    # 10 each at 2/s with a burst of 2: about 4 s; a shared budget: about 9 s
    assert 2.5 <= span <= 6.5, (span, time.time() - t0)
    recs = p.records("Delivery")
    assert {r["egress_source"] for r in recs} == {"a", "b"}


def test_source_never_leaves_from_another_family(world):
    """An IPv4 source and a next hop with only an IPv6 address: the message is
    deferred (it would otherwise leave from the host's own IPv6 address)."""
    world.dns.add_mx("six.test", "mx.six.test", 10)
    world.dns.add_aaaa("mx.six.test", "::1")
    p = world.petrel(extra=SOURCES, listener={"tenant": "acme"})
    p.send_message(to=["x@six.test"])
    rec = p.wait_record("TransientFailure", recipient="x@six.test")
    assert "no address of the egress source's family (IPv4)" in rec["response"], rec
    assert rec["egress_source"] in ("ip1", "ip2"), rec


def test_egress_changed_by_reload(world):
    """A SIGHUP that changes sources, pools and warm-up schedules applies without a
    restart: mail accepted after it leaves from the pool's new source, that source's
    warm-up cap holds, and raising the cap by another reload releases the mail
    already queued behind it."""
    import time
    from test_reload import sighup, write_config
    dest = world.mx_domain("dest.test")
    p = world.petrel(extra=SOURCES, listener={"tenant": "acme"})
    _send_many(p, 8, "bob@dest.test")
    before = dest.wait_count(8, timeout=20)
    assert {t.peer for t in before} == {"127.0.0.21", "127.0.0.22"}

    def cfg(caps):
        return SOURCES.replace(
            'petrel.make_egress_pool { name = "pool-a", entries = { { name = "ip1", weight = 3 }, '
            '{ name = "ip2", weight = 1 } } }',
            'petrel.make_egress_source { name = "ip3", source_address = "127.0.0.23", '
            f'ehlo_domain = "mta3.example.com", warmup = {{ {caps} }} }}\n'
            'petrel.make_egress_pool { name = "pool-a", entries = { { name = "ip3", weight = 1 } } }')
    new = cfg(3)
    assert new != SOURCES
    write_config(world, p, extra=new, listener={"tenant": "acme"})
    sighup(p)
    _send_many(p, 8, "bob@dest.test")
    dest.wait_count(8 + 3, timeout=20)
    time.sleep(2)
    after = dest.messages()[8:]
    assert len(after) == 3, f"{len(after)} sent past the new source's warm-up cap of 3"
    assert {(t.peer, t.helo) for t in after} == {("127.0.0.23", "mta3.example.com")}, after
    write_config(world, p, extra=cfg(100), listener={"tenant": "acme"})
    sighup(p)
    txns = dest.wait_count(16, timeout=20)
    assert {t.peer for t in txns[8:]} == {"127.0.0.23"}
    assert "restart only" not in p.stderr_text()
    # the sink has counted 16; the log writer thread records them a moment later
    assert len(p.wait_records("Delivery", 16)) == 16
