"""Clock jumps (issue 10, "Resource faults: Time"): with libfaketime (Debian's
faketime package) the wall clock jumps while mail waits for its retry (the monotonic
clock is left alone, as NTP does). A jump forward must not fire the waiting retries at
once; a jump back must not freeze them. (A jump forward beyond max_retry_age expires
mail at its next attempt: message age is wall-clock time, as in Postfix.)
"""

import os
import stat
import time

import pytest

import harness
from harness import wait_for

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
        f"FAKETIME_NO_CACHE=1 DONT_FAKE_MONOTONIC=1\n# an ASan build wants its runtime first; the shim is preloaded before it\nexport ASAN_OPTIONS=${{ASAN_OPTIONS:+$ASAN_OPTIONS:}}verify_asan_link_order=0\nexec {harness.PETREL_BIN} \"$@\"\n")
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
