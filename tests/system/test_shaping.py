"""Traffic shaping (issue 12, DESIGN §9): configure_shaping rules by site and domain,
the automation rules reacting to replies, priorities under a rate limit. Rates and
durations are scaled down; arrival times are taken at the sinks.
"""

import subprocess
import threading
import time

from harness import (PETRELCTL_BIN, check_record_keys, free_port, lua_value, make_message,
                     run_petrel, wait_for)
from test_http import http_petrel, request
from test_http_inject import post
from test_reload import sighup, write_config


def shaping(rules):
    return "petrel.configure_shaping " + lua_value(rules)


def api_queue(url, domain):
    r = request(url, "/api/queue")
    assert r.status == 200
    for q in r.json()["queues"]:
        if q["domain"] == domain:
            return q
    return None


def metric(url, name, **labels):
    text = request(url, "/metrics").body.decode()
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(name + "{" + want + "}") or (not labels and line.startswith(name + " ")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def send_many(p, sender, rcpts, subject="m", headers=None):
    """Sends one message per recipient over one SMTP session (fast injection)."""
    s = p.smtp()
    try:
        for r in rcpts:
            p.send(sender, [r], make_message(sender, [r], subject=subject, headers=headers),
                   smtp=s)
    finally:
        s.quit()


def held(url, domains, send):
    """Runs send() while the domains are suspended by the admin API, then resumes
    them: every message is ready at once, so the pace measured is the shaping's,
    not the injection's."""
    for d in domains:
        assert post(url, "/api/queue/suspend", {"domain": d, "duration": "5m"}).status == 200
    send()
    for d in domains:
        assert post(url, "/api/queue/resume", {"domain": d}).status == 200


def longest_absence(seq, d):
    """The most deliveries in a row in seq that were not to domain d."""
    run = best = 0
    for x in seq:
        run = 0 if x == d else run + 1
        best = max(best, run)
    return best


def site_world(world, ip="127.0.1.50"):
    """a.test and b.test whose MX hosts (mx1/mx2.big.example) match *.big.example,
    both at one sink (so it sees the site's combined traffic); other.test elsewhere."""
    sink = world.sink(ip)
    for d, mx in (("a.test", "mx1.big.example"), ("b.test", "mx2.big.example")):
        world.dns.add_mx(d, mx)
        world.dns.add_a(mx, ip)
    other = world.mx_domain("other.test")
    world.mx_domain("sender.test", "127.0.0.3")
    return sink, other


def test_site_shares_one_budget_rate_and_connections(world):
    """Two domains on one site share its rate (±15% over ~10 s) and connection limit."""
    sink, _ = site_world(world)
    p, (url,) = http_petrel(world, delivery={"threads": 2}, extra=shaping({
        "default": {"connection_limit": 10},
        "site:*.big.example": {"max_message_rate": "10/s", "connection_limit": 2},
    }))
    n = 120
    rcpts = [f"u{i}@{'a' if i % 2 else 'b'}.test" for i in range(n)]

    def send():
        t = threading.Thread(target=send_many, args=(p, "alice@sender.test", rcpts[: n // 2]))
        t.start()
        send_many(p, "alice@sender.test", rcpts[n // 2:])
        t.join()
    held(url, ["a.test", "b.test"], send)
    wait_for(lambda: api_queue(url, "a.test") and api_queue(url, "a.test")["site"], 5,
             "the site of a.test resolved")
    q = api_queue(url, "a.test") or api_queue(url, "b.test")
    assert q is not None and q["site"] == "*.big.example", q
    assert q["shaping"]["connection_limit"] == 2 and abs(q["shaping"]["rate"] - 10) < 0.01, q
    out = subprocess.run([PETRELCTL_BIN, "--url", url, "queue"], capture_output=True, text=True,
                         timeout=30).stdout
    # DESTINATION MESSAGES OLDEST NEXT-ATTEMPT CONNS SITE
    assert any(line.split()[0] in ("a.test", "b.test") and line.split()[5] == "*.big.example"
               for line in out.splitlines() if len(line.split()) > 5), out
    txns = sink.wait_count(n, timeout=40)
    times = sorted(x.time for x in txns)
    # after the first second's burst (10), an even pace: measured over the rest
    span = times[-1] - times[20]
    rate = (len(times) - 1 - 20) / span
    print(f"site rate: configured 10/s, measured {rate:.2f}/s over {span:.1f} s")
    assert 8.5 <= rate <= 11.5, f"site rate {rate:.2f}/s, configured 10/s"
    assert {r for x in txns for r in x.rcpt_tos} == set(rcpts)
    # the site's budget is shared fairly while both domains have mail ready. The
    # domains are resumed one after the other, so the first takes the first burst
    # alone (and more while the second resume is on its way on a loaded machine):
    # measured from the other's first delivery, over the next 40
    seq = [x.rcpt_tos[0].rsplit("@", 1)[1] for x in sorted(txns, key=lambda x: x.time)]
    i0 = max(seq.index("a.test"), seq.index("b.test"))
    window = seq[i0:i0 + 40]
    n_a = window.count("a.test")
    print(f"{seq[0]} alone first: {i0}; then of the next {len(window)}: {n_a} to a.test, "
          f"{len(window) - n_a} to b.test")
    assert i0 <= 40, f"the second domain's first delivery was the {i0 + 1}th: it starved"
    assert len(window) == 40 and 14 <= n_a <= 26, \
        f"{n_a} of {len(window)} to a.test once both were ready: one domain starved"
    # they take turns: neither waits while the other sends a run
    gaps = {d: longest_absence(window, d) for d in ("a.test", "b.test")}
    assert max(gaps.values()) <= 6, f"longest runs without a domain: {gaps}, {window}"
    assert 1 <= sink.max_active <= 2, f"{sink.max_active} concurrent sessions (limit 2)"


def test_three_domains_take_turns_on_two_connections(world):
    """Three domains of one site with connection_limit 2: the site's connections
    rotate, so none waits until the others are done, and the limit holds."""
    sink, _ = site_world(world)
    world.dns.add_mx("c.test", "mx3.big.example")
    world.dns.add_a("mx3.big.example", "127.0.1.50")
    p, (url,) = http_petrel(world, delivery={"threads": 2}, extra=shaping({
        "site:*.big.example": {"max_message_rate": "20/s", "connection_limit": 2},
    }))
    domains = ["a.test", "b.test", "c.test"]
    rcpts = [f"u{i}@{domains[i % 3]}" for i in range(150)]
    held(url, domains, lambda: send_many(p, "alice@sender.test", rcpts))
    txns = sink.wait_count(len(rcpts), timeout=60)
    assert {r for x in txns for r in x.rcpt_tos} == set(rcpts)
    seq = [x.rcpt_tos[0].rsplit("@", 1)[1] for x in sorted(txns, key=lambda x: x.time)]
    # while all three have mail: from the last one's first delivery (the one resumed
    # first takes the first burst alone) to the first one's last
    start = max(seq.index(d) for d in domains)
    end = min(len(seq) - seq[::-1].index(d) for d in domains)
    window = seq[start:end]
    counts = {d: window.count(d) for d in domains}
    print(f"all three with mail from delivery {start + 1} to {end}: {counts}")
    assert start <= 45 and len(window) >= 45, f"a domain waited for the others: {seq}"
    assert min(counts.values()) >= len(window) // 5, f"a domain starved: {counts} {seq}"
    gaps = {d: longest_absence(window, d) for d in domains}
    print(f"longest runs without a domain: {gaps}")
    assert max(gaps.values()) <= 14, f"longest runs without a domain: {gaps}, {seq}"
    assert 1 <= sink.max_active <= 2, f"{sink.max_active} concurrent sessions (limit 2)"


def test_reduce_rate_on_421_then_restored(world):
    """A 421 ... rate limited reply halves the rate for the duration, with a Shaping
    record and the metric; a second one while it is halved extends the duration
    without halving again; then the rule's rate is back."""
    ip = "127.0.1.60"
    state = {"n": 0}

    def rcpt(addr):
        state["n"] += 1
        return ("421 4.7.0 [127.0.1.60] too many messages, rate limited"
                if state["n"] in (3, 8) else None)
    sink = world.sink(ip, rcpt_reply=rcpt)
    world.dns.add_mx("slow.test", "mx.slow.test")
    world.dns.add_a("mx.slow.test", ip)
    world.mx_domain("sender.test", "127.0.0.3")
    p, (url,) = http_petrel(world, extra=shaping({
        "slow.test": {"max_message_rate": "4/s"},
        "automation": [{"match": "^421 4\\.7\\.0 .*rate limited", "action": "reduce_rate",
                        "factor": 0.5, "duration": "5s"}],
    }))
    rcpts = [f"u{i}@slow.test" for i in range(30)]
    send_many(p, "alice@sender.test", rcpts)
    rec = p.wait_record("Shaping", timeout=15)
    t_trigger = time.time()
    assert rec["action"] == "reduce_rate" and rec["queue"] == "slow.test", rec
    assert rec["recipient"] is None and rec["until"] and "rate limited" in rec["response"]
    assert rec["code"] == 421
    check_record_keys(rec)
    assert rec["site"] and rec["peer_address"] == ip, rec
    q = api_queue(url, "slow.test")
    assert abs(q["shaping"]["rate"] - 2.0) < 0.01, q
    assert "rate limited" in (q["shaping"]["reason"] or "")
    assert metric(url, "petrel_shaping_actions_total", action="reduce_rate") >= 1
    p.wait_records("Shaping", 2, timeout=10)
    t_trigger = time.time()                     # the second trigger: extends, no compounding
    recs = p.records("Shaping")
    assert recs[1]["until"] > recs[0]["until"], recs
    assert abs(api_queue(url, "slow.test")["shaping"]["rate"] - 2.0) < 0.01
    assert metric(url, "petrel_shaping_actions_total", action="reduce_rate") == 2
    wait_for(lambda: abs((api_queue(url, "slow.test") or {"shaping": {"rate": 4}})
                         ["shaping"]["rate"] - 4.0) < 0.01, 8, "the rate restored to 4/s")
    t_restored = time.time()
    assert 3.5 <= t_restored - t_trigger <= 7, t_restored - t_trigger
    txns = sink.wait_count(28, timeout=30)      # two of 30 were deferred (retried later)
    times = sorted(x.time for x in txns)

    def rate(lo, hi):
        got = [t for t in times if lo <= t <= hi]
        return (len(got) - 1) / (got[-1] - got[0]) if len(got) > 2 else 0.0
    during = rate(t_trigger + 0.5, t_trigger + 4.0)
    after = rate(t_restored + 0.5, t_restored + 3.0)
    print(f"reduce_rate: configured 4/s, measured {during:.2f}/s while halved, "
          f"{after:.2f}/s after")
    assert 1.6 <= during <= 2.4, f"{during:.2f}/s while halved (2/s)"
    assert 3.2 <= after <= 4.8, f"{after:.2f}/s after the restore (4/s)"
    assert len(p.records("Shaping")) == 2


def test_suspend_on_blocked_other_site_flows_and_resumes_on_time(world):
    """A 5.7.1 ... blocked reply suspends the site for the duration (exactly, not
    extended by the retry backoff); another site keeps flowing meanwhile."""
    ip = "127.0.1.70"
    state = {"n": 0}

    def rcpt(addr):
        state["n"] += 1
        return "451 5.7.1 you are blocked for now" if state["n"] == 1 else None
    sink = world.sink(ip, rcpt_reply=rcpt)
    for d, mx in (("s1.test", "mx1.blk.example"), ("s2.test", "mx2.blk.example")):
        world.dns.add_mx(d, mx)
        world.dns.add_a(mx, ip)
    other = world.mx_domain("other.test")
    world.mx_domain("sender.test", "127.0.0.3")
    p, (url,) = http_petrel(world, queue={"retry_interval": "30s", "max_retry_interval": "30s"},
                            extra=shaping({
                                "site:*.blk.example": {"connection_limit": 1},
                                "automation": [{"match": "5\\.7\\.1 .*blocked",
                                                "action": "suspend", "duration": "4s"}],
                            }))
    p.send_message("alice@sender.test", ["first@s1.test"])
    rec = p.wait_record("Shaping", timeout=15)
    t0 = time.time()
    assert rec["action"] == "suspend" and rec["queue"] == "*.blk.example", rec
    p.send_message("alice@sender.test", ["x@s2.test"])
    p.send_message("alice@sender.test", ["y@s1.test"])
    mid = p.send_message("alice@sender.test", ["z@other.test"])
    other.wait_message(mid, timeout=5)               # another site flows
    q = api_queue(url, "s2.test") or api_queue(url, "s1.test")
    assert q["shaping"]["suspended_until"], q
    assert not sink.messages(), "mail went to a suspended site"
    txns = sink.wait_count(3, timeout=15)
    first = min(x.time for x in txns) - t0
    # the deferred message's backoff is 30 s: it goes at the suspension's end
    last = max(x.time for x in txns) - t0
    print(f"suspension 4 s: first delivery after {first:.2f} s, last after {last:.2f} s")
    assert 3.0 <= first and last <= 7.0, (first, last)


def test_suspended_site_mail_expires_on_time(world):
    ip = "127.0.1.80"
    world.sink(ip, rcpt_reply=lambda a: "550 5.7.1 blocked by policy")
    world.dns.add_mx("gone.test", "mx.gone.test")
    world.dns.add_a("mx.gone.test", ip)
    dsn_sink = world.mx_domain("sender.test", "127.0.0.3")
    p = world.petrel(queue={"max_retry_age": "4s"}, extra=shaping({
        "automation": [{"match": "blocked", "action": "suspend", "duration": "1h"}],
    }))
    p.send_message("alice@sender.test", ["a@gone.test"])
    p.wait_record("Shaping", timeout=10)
    t0 = time.time()
    p.send_message("alice@sender.test", ["b@gone.test"])
    rec = p.wait_record("Expiration", timeout=10, recipient="b@gone.test")
    waited = time.time() - t0
    assert 3.0 <= waited <= 6.5, f"expired {waited:.1f} s after reception (max_retry_age 4s)"
    assert rec["code"] is None or rec["code"] != 250
    dsn_sink.wait_count(2, timeout=10)   # the bounce of a@ and the expiry of b@


def test_bounce_rule_makes_a_4xx_permanent(world):
    ip = "127.0.1.90"
    world.sink(ip, rcpt_reply=lambda a: "452 4.2.2 mailbox full")
    world.dns.add_mx("full.test", "mx.full.test")
    world.dns.add_a("mx.full.test", ip)
    dsn_sink = world.mx_domain("sender.test", "127.0.0.3")
    p = world.petrel(extra=shaping({
        "automation": [{"match": "mailbox full", "action": "bounce"}],
    }))
    p.send_message("alice@sender.test", ["x@full.test"])
    rec = p.wait_record("Bounce", timeout=10, recipient="x@full.test")
    assert rec["code"] // 100 == 5 and rec["attempts"] == 1, rec
    assert not p.records("TransientFailure", recipient="x@full.test")
    sh = p.records("Shaping")
    assert sh and sh[0]["action"] == "bounce" and sh[0]["until"] is None
    dsn_sink.wait_count(1, timeout=10)


def test_priorities_high_before_bulk_with_bulk_progressing(world):
    """Under a 10/s limit, ready high mail goes before waiting bulk mail, and bulk
    keeps at least 1/8 of the sends meanwhile."""
    sink = world.mx_domain("prio.test")
    world.mx_domain("sender.test", "127.0.0.3")
    hook = ('petrel.on("smtp_message_received", function(domain, meta)\n'
            '  petrel.set_queue_priority(meta.headers["X-Prio"] or "normal")\nend)')
    p, (url,) = http_petrel(world, extra=shaping({"prio.test": {"max_message_rate": "10/s"}})
                            + "\n" + hook)

    def send():     # bulk first: the high mail comes later and still goes first
        send_many(p, "alice@sender.test", [f"b{i}@prio.test" for i in range(60)],
                  subject="bulk", headers={"X-Prio": "bulk"})
        send_many(p, "alice@sender.test", [f"h{i}@prio.test" for i in range(30)],
                  subject="high", headers={"X-Prio": "high"})
    held(url, ["prio.test"], send)
    txns = sink.wait_count(90, timeout=30)
    order = [("h" if x.rcpt_tos[0].startswith("h") else "b") for x in
             sorted(txns, key=lambda x: x.time)]
    first_h = order.index("h")
    last_h = len(order) - 1 - order[::-1].index("h")
    window = order[first_h:last_h + 1]
    share_bulk = window.count("b") / len(window)
    print(f"while high waited: {window.count('h')} high, {window.count('b')} bulk "
          f"({share_bulk:.0%} bulk)")
    assert window.count("h") == 30
    assert share_bulk >= 1 / 8 - 0.03, f"bulk starved: {share_bulk:.0%} of sends"
    assert share_bulk <= 0.35, f"high did not go first: {share_bulk:.0%} bulk"
    assert order[last_h + 1:] and set(order[last_h + 1:]) == {"b"}


def test_check_refuses_bad_shaping_input(world, tmp_path):
    cases = {
        '["x.test"] = { max_message_rate = "10/fortnight" }': "invalid rate '10/fortnight'",
        '["site:*.exa mple.com"] = {}': "invalid character",
        '["site:*"] = {}': "matches every host",
        '["x.test"] = { bogus = 1 }': "unknown option 'x.test.bogus'",
        'nodot = {}': "unknown key 'nodot'",
        'automation = { { match = "(", action = "suspend", duration = "1h" } }':
            "invalid regex",
        'automation = { { match = "x", action = "explode", duration = "1h" } }':
            "unknown action 'explode'",
        'automation = { { match = "x", action = "suspend" } }': "'duration' is required",
        'automation = { { match = "x", action = "reduce_rate", duration = "1h" } }':
            "needs 'factor'",
    }
    for body, want in cases.items():
        f = tmp_path / "bad.lua"
        f.write_text("-- line 1\npetrel.configure_shaping {\n  " + body + ",\n}\n")
        r = run_petrel("--check", "-c", str(f))
        err = r.stderr.decode()
        assert r.returncode == 1, (body, r.stdout, err)
        assert err.startswith(f"{f}:") and want in err, (body, err)
    good = tmp_path / "good.lua"
    good.write_text('kumo.configure_shaping { default = { max_connection_rate = "5/s", '
                    'connect_timeout = "10s" }, ["site:*.google.com"] = { max_message_rate = 600 } }\n')
    r = run_petrel("--check", "-c", str(good))
    assert r.returncode == 0 and b"config ok" in r.stdout, r.stderr


def test_connection_rate_and_deliveries_per_connection(world):
    """max_deliveries_per_connection = 1 makes every message a new connection, and
    max_connection_rate = 4/s paces those connections."""
    sink = world.mx_domain("conn.test")
    world.mx_domain("sender.test", "127.0.0.3")
    p, (url,) = http_petrel(world, extra=shaping({"conn.test": {
        "max_connection_rate": "4/s", "max_deliveries_per_connection": 1}}))
    held(url, ["conn.test"],
         lambda: send_many(p, "alice@sender.test", [f"u{i}@conn.test" for i in range(24)]))
    txns = sink.wait_count(24, timeout=30)
    assert len({x.conn for x in txns}) == 24, "a connection carried more than one message"
    times = sorted(x.time for x in txns)
    rate = (len(times) - 1 - 4) / (times[-1] - times[4])
    print(f"connection rate: configured 4/s, measured {rate:.2f}/s")
    assert 3.4 <= rate <= 4.6, f"{rate:.2f} connections/s, configured 4/s"


def test_rule_connect_timeout(world):
    """A rule's connect_timeout replaces configure_delivery's for its destination."""
    world.raw_sink("127.0.1.95", "hang")
    world.dns.add_mx("hang.test", "mx.hang.test")
    world.dns.add_a("mx.hang.test", "127.0.1.95")
    world.mx_domain("sender.test", "127.0.0.3")
    p = world.petrel(delivery={"connect_timeout": "20s"},
                     extra=shaping({"hang.test": {"connect_timeout": "1s"}}))
    t0 = time.time()
    p.send_message("alice@sender.test", ["x@hang.test"])
    p.wait_record("TransientFailure", timeout=10, recipient="x@hang.test")
    assert time.time() - t0 < 8, "the rule's connect_timeout (1s) was not used (20s)"


def test_site_dns_failure_holds_nobody_else(world):
    """A domain whose MX lookup fails (here: never answered) keeps its own queue and
    budget; mail for a domain of the configured site flows meanwhile."""
    sink, _ = site_world(world)
    world.dns.set_mode("broken.test", "drop")
    p, (url,) = http_petrel(world, extra=shaping({
        "site:*.big.example": {"max_message_rate": "5/s", "connection_limit": 1},
    }))
    p.send_message("alice@sender.test", ["x@broken.test"])
    mid = p.send_message("alice@sender.test", ["y@a.test"])
    sink.wait_message(mid, timeout=10)
    rec = p.wait_record("TransientFailure", timeout=30, recipient="x@broken.test")
    assert "DNS" in rec["response"], rec
    q = api_queue(url, "broken.test")
    assert q is not None and q["site"] is None, q
    assert api_queue(url, "a.test") is None or api_queue(url, "a.test")["site"] == "*.big.example"


def test_rules_changed_by_reload_apply_to_queued_mail(world):
    """A SIGHUP that changes configure_shaping applies to mail already queued: the
    queue is rebound to the new rule (rate 2/s -> 25/s, connection_limit 1 -> 3),
    without a restart and without losing or repeating a message."""
    ip = "127.0.1.70"
    sink = world.sink(ip)
    world.dns.add_mx("paced.test", "mx.paced.test")
    world.dns.add_a("mx.paced.test", ip)
    world.mx_domain("sender.test", "127.0.0.3")
    url = f"http://127.0.0.1:{free_port()}"
    listener = "petrel.start_http_listener " + lua_value({"listen": url[len("http://"):]})

    def extra(rate, conns):
        return listener + "\n" + shaping({"paced.test": {"max_message_rate": rate,
                                                          "connection_limit": conns}})
    p = world.petrel(extra=extra("2/s", 1))
    n = 60
    rcpts = [f"u{i}@paced.test" for i in range(n)]
    held(url, ["paced.test"], lambda: send_many(p, "alice@sender.test", rcpts))
    wait_for(lambda: len(sink.transactions) >= 4, 10, "the first messages at 2/s")
    q = api_queue(url, "paced.test")
    assert q and abs(q["shaping"]["rate"] - 2) < 0.01 and q["shaping"]["connection_limit"] == 1, q
    before = len(sink.transactions)
    assert before < 15, f"{before} delivered already: the 2/s rule is not applied"
    write_config(world, p, extra=extra("25/s", 3))
    sighup(p)
    t0 = time.monotonic()
    txns = sink.wait_count(n, timeout=30)
    took = time.monotonic() - t0
    left = n - before
    print(f"after the reload: {left} messages in {took:.1f} s (2/s would take {left / 2:.0f} s)")
    assert took < left / 2 / 3, f"{left} messages took {took:.1f} s: still paced at the old rate"
    assert sorted(r for x in txns for r in x.rcpt_tos) == sorted(rcpts)
    q = api_queue(url, "paced.test")
    assert q is None or (q["shaping"]["connection_limit"] == 3 and
                         abs(q["shaping"]["rate"] - 25) < 0.01), q
    assert "restart only: configure_shaping" not in p.stderr_text()
    assert "shaping rules changed by a reload: rebinding" in p.stderr_text()
    time.sleep(0.5)
    assert len(sink.transactions) == n, "a message delivered twice"
