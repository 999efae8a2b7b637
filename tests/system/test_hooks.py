"""Lua hooks at run time (DESIGN §4): smtp_server_greeting and smtp_message_received
with their meta, the header actions per destination domain, queue priority, errors
(451 4.3.0, nothing queued), the instruction budget, and header edits that survive a
kill -9 in the spool."""

import smtplib
import time

from harness import make_message, msgid_of, run_petrel

PER_DOMAIN = '''
petrel.on("smtp_message_received", function(domain, meta)
  petrel.add_header("X-Dest", domain .. " " .. #meta.recipients .. " " .. meta.recipients[1])
  petrel.add_header("X-Meta", table.concat({meta.sender, meta.client_ip, meta.listener,
    tostring(meta.auth_user), tostring(meta.tenant), meta.headers["subject"]}, "|"))
  petrel.remove_header("X-Secret")
  if domain == "two.test" then kumo.remove_header("Subject") end
end)
'''


def test_header_actions_apply_per_destination_domain(world):
    one = world.mx_domain("one.test", "127.0.0.2")
    two = world.mx_domain("two.test", "127.0.0.4")
    p = world.petrel(extra=PER_DOMAIN)
    rcpts = ["a@one.test", "b@two.test", "c@two.test"]
    data = make_message(to=rcpts, subject="per domain", headers={"X-Secret": "hunter2"},
                        body="X-Secret: stays in the body\r\n")
    p.send("alice@sender.test", rcpts, data)
    mid = msgid_of(data)
    t1 = one.wait_message(mid)
    t2 = two.wait_message(mid)
    assert t1.header("X-Dest") == "one.test 1 a@one.test", t1.data[:600]
    assert t2.header("X-Dest") == "two.test 2 b@two.test", t2.data[:600]
    assert t1.header("X-Meta") == "alice@sender.test|127.0.0.1|test-in|nil|nil|per domain"
    for t in (t1, t2):
        assert t.header("X-Secret") is None, t.data[:600]
        assert t.data.endswith(b"\r\n\r\nX-Secret: stays in the body\r\n"), t.data[-200:]
        assert t.header("Received") and "petrel" in t.header("Received")
    assert t1.header("Subject") == "per domain"
    assert t2.header("Subject") is None, "the two.test copy had Subject removed"
    assert not p.records("Rejection")


def test_tenant_from_listener_then_x_tenant(world):
    dest = world.mx_domain("dest.test", "127.0.0.2")
    hook = ('petrel.on("smtp_message_received", function(d, meta)\n'
            '  petrel.add_header("X-Got-Tenant", tostring(meta.tenant))\nend)')
    p = world.petrel(extra=hook)
    data = make_message(headers={"X-Tenant": "blue"})
    p.send("alice@sender.test", ["bob@dest.test"], data)
    assert dest.wait_message(msgid_of(data)).header("X-Got-Tenant") == "blue"
    p.stop()
    q = world.petrel(extra=hook, listener={"tenant": "acme"})
    data = make_message(headers={"X-Tenant": "blue"})
    q.send("alice@sender.test", ["bob@dest.test"], data)
    assert dest.wait_message(msgid_of(data)).header("X-Got-Tenant") == "acme"


def test_greeting_hook_acts_on_every_message_of_the_session(world):
    dest = world.mx_domain("dest.test", "127.0.0.2")
    hook = '''
petrel.on("smtp_server_greeting", function(ehlo, meta)
  if ehlo == "refuse.test" then error("not this one") end
  petrel.add_header("X-Helo", ehlo .. " " .. meta.client_ip .. " " .. meta.listener)
end)
'''
    p = world.petrel(extra=hook)
    s = smtplib.SMTP(p.host, p.port, local_hostname="refuse.test", timeout=10)
    try:
        code, msg = s.ehlo()
        assert code == 451 and b"4.3.0" in msg, (code, msg)
        code, msg = s.ehlo("fine.test")
        assert code == 250, (code, msg)
        datas = [make_message(subject=f"m{i}") for i in range(2)]
        for d in datas:
            p.send("alice@sender.test", ["bob@dest.test"], d, smtp=s)
    finally:
        s.quit()
    for d in datas:
        t = dest.wait_message(msgid_of(d))
        assert t.header("X-Helo") == "fine.test 127.0.0.1 test-in", t.data[:400]
        assert t.data.count(b"X-Helo:") == 1
    assert "not this one" in p.stderr_text()


def test_hook_error_is_451_and_nothing_is_queued(world):
    dest = world.mx_domain("dest.test", "127.0.0.2")
    hook = '''
petrel.on("smtp_message_received", function(domain, meta)
  if meta.headers.Subject == "refuse me" then error("policy says no") end
  if meta.headers.Subject == "spin" then while true do end end
  if meta.headers.Subject == "bad header" then petrel.add_header("X-A", "v\\r\\nBcc: x@evil.test") end
  log_warn("hook saw " .. meta.id)
end)
'''
    p = world.petrel(extra=hook)
    s = p.smtp()
    try:
        for subject in ("refuse me", "spin", "bad header"):
            data = make_message(subject=subject)
            s.mail("alice@sender.test")
            s.rcpt("bob@dest.test")
            t0 = time.monotonic()
            code, msg = s.data(data)
            assert code == 451 and msg.startswith(b"4.3.0"), (subject, code, msg)
            assert time.monotonic() - t0 < 10, "the instruction budget should stop a spinning hook"
        ok = make_message(subject="fine")
        p.send("alice@sender.test", ["bob@dest.test"], ok, smtp=s)
    finally:
        s.quit()
    t = dest.wait_message(msgid_of(ok))
    assert t.header("Subject") == "fine"
    time.sleep(0.5)
    assert [x.header("Subject") for x in dest.messages()] == ["fine"], "a refused message was delivered"
    rej = p.records("Rejection")
    assert len(rej) == 3 and all(r["code"] == 451 for r in rej), rej
    assert len(p.records("Reception")) == 1
    err = p.stderr_text()
    assert "policy says no" in err and "budget" in err and "not a valid header name" in err
    assert "hook saw " in err, "log_warn inside a hook writes to the diagnostic log"


def test_header_edits_survive_kill9_in_the_spool(world):
    world.mx_domain("dest.test", "127.0.0.2", sink=False)
    hook = ('petrel.on("smtp_message_received", function(d, meta)\n'
            '  petrel.add_header("X-Kept", "yes " .. d)\n'
            '  petrel.remove_header("X-Drop")\nend)')
    p = world.petrel(extra=hook)
    data = make_message(headers={"X-Drop": "1"})
    p.send("alice@sender.test", ["bob@dest.test"], data)
    p.kill()
    p.restart()
    dest = world.sink("127.0.0.2")
    t = dest.wait_message(msgid_of(data), timeout=30)
    assert t.header("X-Kept") == "yes dest.test"
    assert t.header("X-Drop") is None


def test_queue_priority_high_goes_before_bulk(world):
    world.mx_domain("dest.test", "127.0.0.2", sink=False)
    hook = ('petrel.on("smtp_message_received", function(d, meta)\n'
            '  petrel.set_queue_priority(meta.headers.Subject)\nend)')
    p = world.petrel(extra=hook, delivery={"max_connections_per_domain": 1},
                     queue={"retry_interval": "3s", "max_retry_interval": "3s"})
    sent = []
    s = p.smtp()
    try:
        for prio in ["bulk"] * 5 + ["high"] * 5:
            d = make_message(subject=prio)
            p.send("alice@sender.test", ["bob@dest.test"], d, smtp=s)
            sent.append(d)
    finally:
        s.quit()
    # every message has failed its first attempt (sink down) and waits for its retry
    p.wait_records("TransientFailure", 10, timeout=20)
    dest = world.sink("127.0.0.2", delay=0.3)  # slow: the others are ready meanwhile
    for d in sent:
        dest.wait_message(msgid_of(d), timeout=30)
    # Without priorities the retries would go in arrival order: 5 bulk, then 5 high.
    # The first bulk may go alone (it is due first, and nothing else is ready yet).
    order = [t.header("Subject") for t in dest.messages()]
    rank = {c: sum(i for i, x in enumerate(order) if x == c) for c in ("high", "bulk")}
    assert order.count("high") == 5 and rank["high"] < rank["bulk"], order


def test_action_outside_a_hook_is_a_config_error(world):
    p = world.petrel(start=False, extra='petrel.add_header("X-A", "b")')
    r = run_petrel("-c", p.cfg_path, "--check")
    err = r.stderr.decode()
    assert r.returncode == 1 and f"{p.cfg_path}:" in err, err
    assert "add_header can only be called inside a hook" in err, err


def test_route_to_a_transport_key_or_a_relay_host(world):
    mx = world.mx_domain("dest.test", "127.0.0.2")
    mx2 = world.mx_domain("dest2.test", "127.0.0.4")
    cport, lport = world.other_port(), world.other_port()
    cluster = world.sink("127.0.0.6", port=cport)
    literal = world.sink("127.0.0.7", port=lport)
    hook = f'''
petrel.on("smtp_message_received", function(domain, meta)
  if domain == "dest.test" then petrel.route_to("relay-cluster", {{ priority = "high" }}) end
  if domain == "dest2.test" then petrel.route_to("[127.0.0.7]:{lport}") end
end)
'''
    p = world.petrel(extra=hook,
                     transport={"relay-cluster": {"relayhost": f"[127.0.0.6]:{cport}"}})
    rcpts = ["a@dest.test", "b@dest2.test"]
    data = make_message(to=rcpts)
    p.send("alice@sender.test", rcpts, data)
    mid = msgid_of(data)
    assert cluster.wait_message(mid).rcpt_tos == ["a@dest.test"]
    assert literal.wait_message(mid).rcpt_tos == ["b@dest2.test"]
    recs = {r["recipient"]: r for r in p.wait_records("Delivery", 2)}
    assert recs["a@dest.test"]["site"] == f"127.0.0.6:{cport}", recs
    assert recs["b@dest2.test"]["site"] == f"127.0.0.7:{lport}", recs
    assert recs["a@dest.test"]["queue"] == "dest.test"
    assert not mx.find(mid) and not mx2.find(mid), "route_to was ignored: mail went by MX"
