"""Clock jumps (issue 10, "Resource faults: Time"): with libfaketime (Debian's
faketime package) the wall clock jumps while mail waits for its retry (the monotonic
clock is left alone, as NTP does). A jump forward must not fire the waiting retries at
once; a jump back must not freeze them. The same for max_message_rate pacing and admin
suspensions. (A jump forward beyond max_retry_age expires
mail at its next attempt: message age is wall-clock time, as in Postfix.)
"""

import os
import stat
import time

import pytest

import harness
from harness import make_message, msgid_of, wait_for

LIB = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1"


@pytest.fixture
def clock(tmp_path, monkeypatch):
    if not os.path.exists(LIB):
        pytest.skip("libfaketime is not installed")
    spec = tmp_path / "faketime"
    spec.write_text("+0\n")
    wrapper = tmp_path / "petrel-faketime"
    wrapper.write_text(
        f"#!/bin/sh\nexport LD_PRELOAD={LIB} FAKETIME_TIMESTAMP_FILE={spec} "
        f"FAKETIME_NO_CACHE=1 DONT_FAKE_MONOTONIC=1 FAKETIME_FORCE_MONOTONIC_FIX=0\n# libfaketime 0.9.10 otherwise times out a CLOCK_MONOTONIC pthread_cond_timedwait at once\n# (its bug, fixed upstream in 2025): every admin call would answer 503\n# an ASan build wants its runtime first; the shim is preloaded before it\nexport ASAN_OPTIONS=${{ASAN_OPTIONS:+$ASAN_OPTIONS:}}verify_asan_link_order=0\nexec {harness.PETREL_BIN} \"$@\"\n")
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(harness, "PETREL_BIN", str(wrapper))
    return spec


def attempts(p, rcpt):
    return len(p.records("TransientFailure", recipient=rcpt))


def queued_with_one_attempt(world):
    world.mx_domain("dest.test", "127.0.0.2", sink=False)       # down: every try defers
    p = world.petrel(queue={"retry_interval": "6s", "max_retry_interval": "6s",
                            "max_retry_age": "10m"})
    rcpts = [f"r{i}@dest.test" for i in range(5)]
    for r in rcpts:
        p.send_message("alice@sender.test", [r])
    wait_for(lambda: all(attempts(p, r) >= 1 for r in rcpts), 15, "first attempts")
    return p, rcpts, time.monotonic(), {r: attempts(p, r) for r in rcpts}


def test_clock_jump_forward_fires_nothing_early(world, clock):
    p, rcpts, t_first, base = queued_with_one_attempt(world)
    clock.write_text("+5m\n")                 # forward, within max_retry_age
    # New mail for the same destination makes the scheduler look at its timers.
    p.send_message("alice@sender.test", ["new@dest.test"])
    time.sleep(2.5)
    fired = {r: attempts(p, r) - base[r] for r in rcpts}
    assert not any(fired.values()), f"the jump forward fired retries early: {fired}"
    wait_for(lambda: all(attempts(p, r) > base[r] for r in rcpts), 20, "the next retries")
    waited = time.monotonic() - t_first
    assert 4 <= waited <= 20, f"second attempts {waited:.1f} s after the first (interval 6 s)"
    assert not p.records("Bounce") and not p.records("Expiration")
    p.assert_alive()


def test_clock_jump_back_does_not_freeze_retries(world, clock):
    p, rcpts, t_first, base = queued_with_one_attempt(world)
    clock.write_text("-1h\n")
    wait_for(lambda: all(attempts(p, r) > base[r] for r in rcpts), 20,
             "retries after the clock went back (frozen queue)")
    assert not p.records("Bounce") and not p.records("Expiration")
    p.assert_alive()


# ---- the other timers: max_message_rate pacing and admin suspensions -------------

from test_http import http_petrel  # noqa: E402
from test_http_inject import post  # noqa: E402


def suspend(url, domain, duration):
    r = post(url, "/api/queue/suspend", {"domain": domain, "duration": duration})
    assert r.status == 200, r


def test_clock_jump_back_does_not_stall_a_paced_queue(world, clock):
    """max_message_rate = 60/min: one message a second. The wall clock set back 1 h
    while the queue is being paced must not starve it of tokens for an hour."""
    dest = world.mx_domain("dest.test", "127.0.0.2")
    p = world.petrel(delivery={"max_message_rate": 60})
    s = p.smtp()
    mids = []
    try:
        for i in range(4):
            data = make_message("alice@sender.test", [f"r{i}@dest.test"])
            p.send("alice@sender.test", [f"r{i}@dest.test"], data, smtp=s)
            mids.append(msgid_of(data))
    finally:
        s.quit()
    dest.wait_message(mids[0], 10)
    clock.write_text("-1h\n")
    for mid in mids[1:]:
        dest.wait_message(mid, 20)
    times = sorted(t.time for t in dest.messages())
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert min(gaps) >= 0.5, f"no longer paced after the jump: gaps {gaps}"
    p.assert_alive()


def test_clock_jump_forward_does_not_end_a_suspension(world, clock):
    """A destination suspended for 12 s stays held when the wall clock jumps 1 h
    forward (another destination's retries keep the scheduler's timer busy), and
    goes when its 12 s have passed."""
    dest = world.mx_domain("dest.test", "127.0.0.2")
    world.mx_domain("down.test", "127.0.0.3", sink=False)    # retries every second
    p, (url,) = http_petrel(world, queue={"max_retry_age": "1d"})
    t0 = time.monotonic()
    suspend(url, "dest.test", "12s")
    mid = p.send_message("alice@sender.test", ["bob@dest.test"])
    p.send_message("alice@sender.test", ["x@down.test"])
    wait_for(lambda: attempts(p, "x@down.test") >= 1, 15, "a first attempt to down.test")
    clock.write_text("+1h\n")
    n = attempts(p, "x@down.test")
    wait_for(lambda: attempts(p, "x@down.test") >= n + 2, 15, "more retries to down.test")
    assert not dest.find(mid), \
        f"delivered {time.monotonic() - t0:.1f} s into a 12 s suspension after the jump"
    dest.wait_message(mid, 25)
    waited = time.monotonic() - t0
    assert 11 <= waited <= 30, f"suspension of 12 s ended after {waited:.1f} s"
    p.assert_alive()


def test_clock_jump_back_does_not_extend_a_suspension(world, clock):
    """A suspension of 4 s ends after 4 s even though the wall clock went back 1 h."""
    dest = world.mx_domain("dest.test", "127.0.0.2")
    p, (url,) = http_petrel(world)
    t0 = time.monotonic()
    suspend(url, "dest.test", "4s")
    mid = p.send_message("alice@sender.test", ["bob@dest.test"])
    clock.write_text("-1h\n")
    dest.wait_message(mid, 25)
    waited = time.monotonic() - t0
    assert 3.5 <= waited <= 20, f"suspension of 4 s ended after {waited:.1f} s"
    p.assert_alive()
