"""smtp_delivery_result on the delivery threads (issue 9, DESIGN §4): the handlers
run after every attempt with result.code/enhanced/response and
meta.domain/id/site/attempts, and adjust_domain_rate(domain, fraction) slows that
destination measurably (the seed's snippet, verbatim, against a sink answering 421).
"""

import re
import threading
import time

from harness import make_message, msgid_of, wait_for

SEED = '''
petrel.on("smtp_delivery_result", function(result, meta)
  if result.code == 421 or result.code == 429 then
    adjust_domain_rate(meta.domain, -0.3)  -- 30% slower, recovering over time
    log_warn("throttled by " .. meta.domain)
  end
end)
'''


def test_handler_sees_result_and_meta(world):
    tries = {"n": 0}

    def flaky(addr):
        tries["n"] += 1
        return "451 4.3.0 try again later (sink)" if tries["n"] == 1 else None
    dest = world.mx_domain("dest.test", "127.0.0.2", rcpt_reply=flaky)
    hook = ('petrel.on("smtp_delivery_result", function(result, meta)\n'
            '  log_warn(string.format("DR code=%d enh=%s domain=%s id=%s site=%s att=%d resp=%s",\n'
            '    result.code, tostring(result.enhanced), meta.domain, meta.id,\n'
            '    tostring(meta.site), meta.attempts, result.response))\n'
            'end)\n'
            'petrel.on("smtp_delivery_result", function(result, meta)\n'
            '  log_warn("second handler " .. meta.attempts)\n'
            'end)\n')
    p = world.petrel(extra=hook)
    data = make_message("alice@sender.test", ["bob@dest.test"])
    p.send("alice@sender.test", ["bob@dest.test"], data)
    dest.wait_message(msgid_of(data))
    rid = p.wait_record("Delivery", recipient="bob@dest.test")["id"]
    site = f"mx.dest.test:{world.mx_port}"

    def lines():
        return [ln for ln in p.stderr_text().splitlines() if "DR code=" in ln]
    got = wait_for(lambda: lines() if len(lines()) >= 2 else None, 10, "two DR lines")
    assert re.search(rf"DR code=451 enh=4\.3\.0 domain=dest\.test id={rid} site={site} att=1 "
                     r"resp=451 4\.3\.0 try again later", got[0]), got
    assert re.search(rf"DR code=250 enh=\S+ domain=dest\.test id={rid} site={site} att=2", got[1]), got
    assert "second handler 1" in p.stderr_text() and "second handler 2" in p.stderr_text()


def test_a_failing_handler_is_logged_and_mail_still_goes(world):
    dest = world.mx_domain("dest.test", "127.0.0.2")
    hook = ('petrel.on("smtp_delivery_result", function(result, meta)\n'
            '  error("boom in the hook")\nend)\n'
            'petrel.on("smtp_delivery_result", function(result, meta)\n'
            '  while true do end\nend)\n')
    p = world.petrel(extra=hook)
    data = make_message("alice@sender.test", ["bob@dest.test"])
    p.send("alice@sender.test", ["bob@dest.test"], data)
    dest.wait_message(msgid_of(data))
    wait_for(lambda: "smtp_delivery_result hook failed" in p.stderr_text()
             and "boom in the hook" in p.stderr_text(), 10, "the hook's error in the log")
    world.assert_serving(p)


def test_seed_snippet_slows_a_destination_answering_421(world):
    """The seed's handler verbatim: after three 421s the arrival rate at the sink
    is well below what it was before them."""
    lock = threading.Lock()
    seen = []                                  # RCPT arrival times
    throttled = {16, 17, 18}

    def reply(addr):
        with lock:
            seen.append(time.monotonic())
            n = len(seen)
        return "421 4.7.0 rate limited, slow down (sink)" if n in throttled else None
    dest = world.mx_domain("dest.test", "127.0.0.2", rcpt_reply=reply, delay=0.04)
    p = world.petrel(extra=SEED, delivery={"max_connections_per_domain": 1},
                     queue={"retry_interval": "30s", "max_retry_interval": "30s"})
    s = p.smtp()
    try:
        for i in range(70):
            d = make_message("alice@sender.test", [f"u{i}@dest.test"], subject=f"m{i}")
            p.send("alice@sender.test", [f"u{i}@dest.test"], d, smtp=s)
    finally:
        s.quit()
    wait_for(lambda: len(seen) >= 18, 30, "the three 421s")
    wait_for(lambda: "throttled by dest.test" in p.stderr_text(), 10, "the hook's log line")
    time.sleep(4.5)
    with lock:
        before = (15 - 1) / (seen[14] - seen[0])
        t421 = seen[17]
        after_n = sum(1 for t in seen if t421 + 0.5 < t <= t421 + 4.5)
    after = after_n / 4.0
    print(f"seed 421: before {before:.1f}/s after {after:.1f}/s")
    assert after < 0.7 * before, f"before {before:.1f}/s, after {after:.1f}/s"
    assert "rate -30% by a hook" in p.stderr_text()
