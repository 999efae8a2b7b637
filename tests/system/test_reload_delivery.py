"""Live reload on the delivery side (issue 9, DESIGN §3, §11): the delivery threads
take each new config generation for new work. After a SIGHUP the next delivery uses
the new routes (configure_transport, configure_delivery relayhost), the new DKIM
keys, the new retry settings and the new settings of configure_delivery; entries
queued under a route the new config no longer has are still delivered the way
their old config defined it; a reload while mail flows loses and duplicates nothing.
"""

import collections
import threading
import time

import pytest

from harness import Lua, make_message, msgid_of, wait_for
from test_dkim import genkey, verify_all
from test_reload import header_of, sighup, write_config


def transient_for(p, rcpt):
    return [r for r in p.records("TransientFailure") if r.get("recipient") == rcpt]


# ---------------------------------------------------------------- routes

def test_route_changed_by_reload_next_message_goes_to_new_sink(world):
    world.mx_domain("sender.test", "127.0.0.3")
    old_port, new_port = world.other_port(), world.other_port()
    old_hop = world.sink("127.0.0.6", old_port, start=False)    # down for now
    new_hop = world.sink("127.0.0.7", new_port)
    relay_a = world.sink("127.0.0.8", world.other_port())
    relay_b = world.sink("127.0.0.9", world.other_port())
    first = {"gone.test": {"relayhost": f"[127.0.0.6]:{old_port}"},
             "moved.test": {"relayhost": f"[127.0.0.6]:{old_port}"}}
    p = world.petrel(transport=first, delivery={"relayhost": f"[127.0.0.8]:{relay_a.port}"})
    # the relayhost route before the reload
    before = p.send_message(to=["u@other.test"], subject="relayhost before")
    relay_a.wait_message(before)
    # two entries wait for the old hop (down): one under a route the new config
    # drops, one under a route it keeps with another relay host
    stays = p.send_message(to=["x@gone.test"], subject="route dropped by the reload")
    moves = p.send_message(to=["x@moved.test"], subject="route changed by the reload")
    wait_for(lambda: transient_for(p, "x@gone.test") and transient_for(p, "x@moved.test"),
             20, "both deferred while the old hop is down")
    write_config(world, p, transport={"moved.test": {"relayhost": f"[127.0.0.7]:{new_port}"}},
                 delivery={"relayhost": f"[127.0.0.9]:{relay_b.port}"})
    sighup(p)
    # at once (an idle connection to the old relay host must not be reused)
    after = p.send_message(to=["u@other.test"], subject="relayhost after")
    relay_b.wait_message(after, 20)
    assert not relay_a.find(after)
    nxt = p.send_message(to=["y@moved.test"], subject="next message on the changed route")
    new_hop.wait_message(nxt, 20)
    # the queued entry of the kept route follows its new definition
    new_hop.wait_message(moves, 20)
    # the entry of the dropped route still goes where its old config sent it
    old_hop.start()
    old_hop.wait_message(stays, 30)
    assert not new_hop.find(stays) and not old_hop.find(moves)
    p.assert_alive()


# ---------------------------------------------------------------- DKIM

@pytest.fixture(scope="module")
def two_keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("dkim-reload")
    k1, k2 = str(d / "k1.pem"), str(d / "k2.pem")
    return {"k1": k1, "k2": k2,
            "dns": {b"s1._domainkey.sender.test.": genkey(k1, "rsa"),
                    b"s9._domainkey.sender.test.": genkey(k2, "rsa")}}


def dkim_cfg(selector, key_file):
    return Lua(f'petrel.configure_dkim_signing {{ domain = "sender.test", '
               f'selector = "{selector}", key_file = "{key_file}" }}\n')


def test_dkim_key_changed_by_reload_signs_next_message(world, two_keys):
    dest = world.mx_domain("dest.test", "127.0.0.2")
    world.mx_domain("sender.test", "127.0.0.3")
    p = world.petrel(extra=dkim_cfg("s1", two_keys["k1"]))
    m1 = p.send_message(subject="before")
    got = dest.wait_message(m1).data
    ok, sigs = verify_all(got, two_keys)
    assert ok == [True] and b"s=s1;" in sigs[0].replace(b" ", b""), sigs
    write_config(world, p, extra=dkim_cfg("s9", two_keys["k2"]))
    sighup(p)
    m2 = p.send_message(subject="after")
    got = dest.wait_message(m2).data
    ok, sigs = verify_all(got, two_keys)
    assert ok == [True] and b"s=s9;" in sigs[0].replace(b" ", b""), sigs


# ---------------------------------------------------------------- retries

def test_retry_interval_changed_by_reload_applies_to_next_deferral(world):
    dest = world.mx_domain("dest.test", "127.0.0.2", rcpt_reply=lambda a: "451 4.3.0 later")
    world.mx_domain("sender.test", "127.0.0.3")
    p = world.petrel(queue={"retry_interval": "1s", "max_retry_interval": "1s"})
    p.send_message(to=["r@dest.test"], subject="deferred")
    wait_for(lambda: len(dest.rcpt_attempts) >= 3, 20, "retries every second")
    write_config(world, p, queue={"retry_interval": "1h", "max_retry_interval": "1h"})
    sighup(p)
    n = len(dest.rcpt_attempts)
    # the retry already scheduled runs (at most ~1 s away); the deferral it ends in
    # waits an hour under the new settings
    wait_for(lambda: len(dest.rcpt_attempts) > n, 15, "the attempt already scheduled")
    time.sleep(1.0)
    settled = len(dest.rcpt_attempts)
    time.sleep(6.0)
    assert len(dest.rcpt_attempts) == settled, (n, settled, len(dest.rcpt_attempts))
    assert settled <= n + 2


# ---------------------------------------------------------------- delivery hooks

def dr_hook(tag):
    return ('petrel.on("smtp_delivery_result", function(result, meta)\n'
            f'  log_warn("DRGEN {tag} " .. meta.id .. " " .. result.code)\n'
            'end)\n')


def test_delivery_result_handler_changed_by_reload(world):
    dest = world.mx_domain("dest.test", "127.0.0.2")
    world.mx_domain("sender.test", "127.0.0.3")
    p = world.petrel(extra=dr_hook("one"))
    dest.wait_message(p.send_message(subject="first"))
    first = p.wait_records("Delivery", 1)[-1]["id"]
    wait_for(lambda: f"DRGEN one {first} 250" in p.stderr_text(), 10, "the first handler")
    # the new file has another handler, and one more: both run, the old one never
    write_config(world, p, extra=dr_hook("two") + dr_hook("three"))
    sighup(p)
    dest.wait_message(p.send_message(subject="second"))
    second = p.wait_records("Delivery", 2)[-1]["id"]
    wait_for(lambda: f"DRGEN three {second} 250" in p.stderr_text(), 10, "the new handlers")
    assert f"DRGEN two {second} 250" in p.stderr_text()
    assert f"DRGEN one {second}" not in p.stderr_text()
    # and a reload that drops every handler runs none
    write_config(world, p)
    sighup(p)
    dest.wait_message(p.send_message(subject="third"))
    third = p.wait_records("Delivery", 3)[-1]["id"]
    time.sleep(1.0)
    assert f" {third} 250" not in p.stderr_text()


# ---------------------------------------------------------------- under load

def test_reload_with_deliveries_in_flight_loses_and_duplicates_nothing(world):
    dest = world.mx_domain("dest.test", "127.0.0.2", delay=0.02)   # attempts in flight
    world.mx_domain("sender.test", "127.0.0.3")
    procs = "petrel.configure_process { smtp_threads = 2 }\n"
    hook = ('petrel.on("smtp_message_received", function(domain, meta)\n'
            '  petrel.add_header("X-Gen", "{gen}")\n'
            'end)\n')
    p = world.petrel(extra=procs + hook.format(gen=0),
                     delivery={"max_connections_per_domain": 4})
    stop = threading.Event()
    sent, errors, probes = [], [], {}
    lock = threading.Lock()

    def generator(n):
        while not stop.is_set():
            try:
                s = p.smtp(timeout=30)
                for _ in range(5):
                    if stop.is_set():
                        break
                    data = make_message("alice@sender.test", ["bob@dest.test"],
                                        subject=f"load {n}")
                    p.send("alice@sender.test", ["bob@dest.test"], data, smtp=s)
                    with lock:
                        sent.append(msgid_of(data))
                    time.sleep(0.02)   # below the sink's pace: no growing backlog
                s.quit()
            except Exception as e:
                with lock:
                    errors.append(repr(e))
                return

    threads = [threading.Thread(target=generator, args=(i,), daemon=True) for i in range(3)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: len(sent) >= 20, 30, "the generator to get going")
        for gen in range(1, 7):
            # delivery-side settings change every time: the delivery threads take a
            # new generation while attempts of the old one are in flight
            write_config(world, p, extra=procs + hook.format(gen=gen),
                         delivery={"max_connections_per_domain": 2 + gen % 3,
                                   "helo_name": f"gen{gen}.petrel.test",
                                   "connect_timeout": f"{2 + gen}s"},
                         queue={"retry_interval": f"{1 + gen % 2}s"})
            sighup(p)
            mid = p.send_message(subject=f"probe {gen}")
            probes[mid] = str(gen)
            with lock:
                sent.append(mid)
            time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert not errors, errors
    assert len(sent) > 40, len(sent)
    dest.wait_count(len(sent), 60)
    time.sleep(1.5)   # a duplicate would arrive late
    got = collections.Counter((t.message_id or "").strip("<>") for t in dest.messages())
    missing = [m for m in sent if got[m.strip("<>")] == 0]
    dups = {m: n for m, n in got.items() if n > 1}
    assert not missing and not dups, (len(missing), dups)
    assert sum(got.values()) == len(sent)
    for mid, gen in probes.items():
        assert header_of(dest.wait_message(mid), "X-Gen") == gen
    assert "reload failed" not in p.stderr_text()
    p.assert_alive()
