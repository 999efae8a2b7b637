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
