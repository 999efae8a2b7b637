"""Tenants (DESIGN §4, §9): meta.tenant from the listener's tenant, else the
X-Tenant header, else the AUTH user, unless a hook calls set_tenant; stored with
the spooled entry (survives a restart); every log record carries a `tenant` key;
smtp_delivery_result sees meta.tenant."""

from harness import make_message, msgid_of


def _tenants_of(p, mid_rcpt, type_):
    return [r["tenant"] for r in p.records(type_) if r["recipient"] == mid_rcpt]


def test_every_record_has_tenant_key_null_when_none(world):
    dest = world.mx_domain("dest.test", "127.0.0.2")
    p = world.petrel()
    mid = p.send_message(to=["bob@dest.test"])
    dest.wait_message(mid)
    p.wait_record("Delivery", recipient="bob@dest.test")
    recs = p.records()
    assert recs
    for r in recs:
        assert "tenant" in r and r["tenant"] is None, r
        assert "egress_source" in r, r


def test_tenant_from_x_tenant_header_and_listener(world):
    dest = world.mx_domain("dest.test", "127.0.0.2")
    p = world.petrel()
    data = make_message(to=["a@dest.test"], headers={"X-Tenant": "blue"})
    p.send("alice@sender.test", ["a@dest.test"], data)
    dest.wait_message(msgid_of(data))
    rec = p.wait_record("Delivery", recipient="a@dest.test")
    assert rec["tenant"] == "blue", rec
    assert p.records("Reception", recipient="a@dest.test")[0]["tenant"] == "blue"
    p.stop()
    q = world.petrel(listener={"tenant": "acme"})
    data = make_message(to=["b@dest.test"], headers={"X-Tenant": "blue"})
    q.send("alice@sender.test", ["b@dest.test"], data)
    dest.wait_message(msgid_of(data))
    assert q.wait_record("Delivery", recipient="b@dest.test")["tenant"] == "acme"
    assert q.records("Reception", recipient="b@dest.test")[0]["tenant"] == "acme"


SET_TENANT = '''
petrel.on("smtp_message_received", function(domain, meta)
  if meta.headers["subject"] == "gold" then petrel.set_tenant("gold-" .. domain) end
end)
petrel.on("smtp_delivery_result", function(result, meta)
  log_warn("DELIVERY-TENANT " .. tostring(meta.tenant) .. " " .. meta.id)
end)
'''


def test_set_tenant_hook_and_delivery_result_meta(world):
    dest = world.mx_domain("dest.test", "127.0.0.2")
    p = world.petrel(extra=SET_TENANT)
    data = make_message(to=["c@dest.test"], subject="gold", headers={"X-Tenant": "blue"})
    p.send("alice@sender.test", ["c@dest.test"], data)
    dest.wait_message(msgid_of(data))
    rec = p.wait_record("Delivery", recipient="c@dest.test")
    assert rec["tenant"] == "gold-dest.test", rec
    assert p.records("Reception", recipient="c@dest.test")[0]["tenant"] == "gold-dest.test"
    import time
    deadline = time.time() + 10
    while time.time() < deadline and f"DELIVERY-TENANT gold-dest.test {rec['id']}" \
            not in p.stderr_tail():
        time.sleep(0.1)
    assert f"DELIVERY-TENANT gold-dest.test {rec['id']}" in p.stderr_tail()


def test_tenant_survives_restart_in_spool(world):
    dest = world.mx_domain("dest.test", "127.0.0.2")
    dest.stop()
    p = world.petrel(extra=SET_TENANT)
    data = make_message(to=["d@dest.test"], subject="gold")
    p.send("alice@sender.test", ["d@dest.test"], data)
    p.wait_record("TransientFailure", recipient="d@dest.test")
    p.stop()
    dest.start()
    p.start()
    dest.wait_message(msgid_of(data), timeout=30)
    rec = p.wait_record("Delivery", recipient="d@dest.test", timeout=30)
    assert rec["tenant"] == "gold-dest.test", rec


PACED = '''
petrel.configure_tenant { name = "slow", max_message_rate = "2/s" }
kumo.configure_tenant { name = "fast" }
'''


def test_tenant_max_message_rate_paces_only_that_tenant(world):
    from harness import free_port
    dest = world.mx_domain("dest.test", "127.0.0.2")
    port = free_port()
    p = world.petrel(extra=PACED + f'petrel.start_http_listener {{ listen = "127.0.0.1:{port}" }}\n')
    n = 10
    s = p.smtp()
    try:
        for i in range(n):
            for tenant in ("slow", "fast"):
                data = make_message(to=["r@dest.test"], subject=f"{tenant} {i}",
                                    headers={"X-Tenant": tenant})
                p.send("alice@sender.test", ["r@dest.test"], data, smtp=s)
    finally:
        s.quit()
    txns = dest.wait_count(2 * n, timeout=40)
    slow = sorted(t.time for t in txns if t.header("Subject").startswith("slow"))
    fast = sorted(t.time for t in txns if t.header("Subject").startswith("fast"))
    assert len(slow) == n and len(fast) == n
    # 2/s with a burst of 2: the 10 slow ones take about 4 s
    assert slow[-1] - slow[0] >= 3.0, slow
    rate = (n - 2) / (slow[-1] - slow[1])
    assert 1.4 <= rate <= 2.6, (rate, slow)
    # the other tenant is not held behind it
    assert fast[-1] - fast[0] < 2.0, fast
    assert fast[-1] < slow[-1] - 1.5, (fast, slow)
    recs = p.wait_records("Delivery", 2 * n)
    assert {r["tenant"] for r in recs} == {"slow", "fast"}
    # the per-tenant metric: configured tenants only
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    assert f'petrel_tenant_messages_delivered_total{{tenant="slow"}} {n}' in text, text[-2000:]
    assert f'petrel_tenant_messages_delivered_total{{tenant="fast"}} {n}' in text


def test_check_refuses_bad_tenant(tmp_path):
    from harness import run_petrel
    for body, want in (
            ('petrel.configure_tenant { name = "a", egress_pool = "nowhere" }',
             "egress_pool 'nowhere' is not defined"),
            ('petrel.configure_tenant { name = "a", max_message_rate = "10/fortnight" }',
             "max_message_rate"),
            ('petrel.configure_tenant { name = "a", colour = "red" }', "unknown option 'colour'"),
            ('petrel.configure_tenant { egress_pool = "x" }', "'name' is required")):
        f = tmp_path / "t.lua"
        f.write_text("-- line 1\n" + body + "\n")
        r = run_petrel("--check", "-c", str(f))
        err = r.stderr.decode()
        assert r.returncode == 1 and f"{f}:2:" in err and want in err, (body, err)


def test_queue_by_tenant_api_and_petrelctl(world):
    import json
    import subprocess
    import urllib.request
    from harness import PETRELCTL_BIN, free_port
    world.mx_domain("down.test", sink=False)          # nothing answers: mail waits
    port = free_port()
    p = world.petrel(extra=f'petrel.start_http_listener {{ listen = "127.0.0.1:{port}" }}')
    for tenant, n in (("blue", 2), ("green", 1), (None, 1)):
        for i in range(n):
            hdrs = {"X-Tenant": tenant} if tenant else {}
            data = make_message(to=["x@down.test"], subject=f"{tenant} {i}", headers=hdrs)
            p.send("alice@sender.test", ["x@down.test"], data)
    url = f"http://127.0.0.1:{port}"
    with urllib.request.urlopen(url + "/api/queue?by=tenant", timeout=10) as r:
        doc = json.load(r)
    got = {t["tenant"]: t["count"] for t in doc["tenants"]}
    assert got == {"blue": 2, "green": 1, None: 1}, doc
    assert doc["total"] == 4
    out = subprocess.run([PETRELCTL_BIN, "--url", url, "queue", "--by", "tenant"],
                         capture_output=True, timeout=30)
    text = out.stdout.decode()
    assert out.returncode == 0, out.stderr
    lines = {l.split()[0]: l.split()[1] for l in text.splitlines()[1:-1]}
    assert lines == {"blue": "2", "green": "1", "(none)": "1"}, text
    assert "4 messages of 3 tenants" in text
    try:
        urllib.request.urlopen(url + "/api/queue?by=colour", timeout=10)
        assert False, "by=colour accepted"
    except urllib.error.HTTPError as e:
        assert e.code == 400


HTTP_HOOK = '''
petrel.on("http_message_received", function(domain, meta)
  if meta.headers["subject"] == "vip" then petrel.set_tenant("vip") end
end)
'''


def test_http_tenant_from_header_and_set_tenant(world):
    from test_http import http_petrel
    from test_http_inject import post
    dest = world.mx_domain("dest.test", "127.0.0.2")
    p, (url,) = http_petrel(world, extra=HTTP_HOOK + SOURCES_FOR_HTTP)
    r = post(url, "/v1/message", {"from": "alice@sender.test", "to": ["h1@dest.test"],
                                  "subject": "plain", "text": "hi",
                                  "headers": {"X-Tenant": "blue"}})
    assert r.status == 200, r
    r = post(url, "/v1/message", {"from": "alice@sender.test", "to": ["h2@dest.test"],
                                  "subject": "vip", "text": "hi",
                                  "headers": {"X-Tenant": "blue"}})
    assert r.status == 200, r
    dest.wait_count(2)
    a = p.wait_record("Delivery", recipient="h1@dest.test")
    b = p.wait_record("Delivery", recipient="h2@dest.test")
    assert a["tenant"] == "blue" and a["protocol"] == "http", a
    assert b["tenant"] == "vip", b
    # the vip tenant's pool: its source address at the sink
    vip = [t for t in dest.messages() if "h2@dest.test" in t.rcpt_tos][0]
    assert vip.peer == "127.0.0.24" and b["egress_source"] == "v1", (vip.peer, b)


SOURCES_FOR_HTTP = '''
petrel.make_egress_source { name = "v1", source_address = "127.0.0.24" }
petrel.make_egress_pool { name = "vp", entries = { { name = "v1" } } }
petrel.configure_tenant { name = "vip", egress_pool = "vp" }
'''


def test_tenant_rate_changed_by_reload_applies_to_queued_mail(world):
    """A SIGHUP that raises a tenant's max_message_rate speeds up its queued mail."""
    import time
    from test_reload import sighup, write_config
    dest = world.mx_domain("dest.test", "127.0.0.2")
    slow = 'petrel.configure_tenant { name = "slow", max_message_rate = "1/min" }\n'
    p = world.petrel(extra=slow)
    n = 12
    s = p.smtp()
    try:
        for i in range(n):
            data = make_message(to=["r@dest.test"], subject=f"slow {i}",
                                headers={"X-Tenant": "slow"})
            p.send("alice@sender.test", ["r@dest.test"], data, smtp=s)
    finally:
        s.quit()
    dest.wait_count(1, timeout=20)
    time.sleep(1.5)
    held = len(dest.messages())
    assert held < n, f"{held} of {n} delivered at 1/min"
    write_config(world, p, extra=slow.replace("1/min", "50/s"))
    sighup(p)
    t0 = time.monotonic()
    dest.wait_count(n, timeout=20)
    took = time.monotonic() - t0
    print(f"{n - held} queued messages in {took:.2f} s after the reload to 50/s")
    assert took < 5, took
    assert len(p.wait_records("Delivery", n)) == n
