"""Memory (issue 10, "Resource faults: Memory"): petrel in a cgroup v2 memory limit of
twice its measured working set (swap off), fed a backlog for a destination that is
down, applies back-pressure (452 4.3.1 "queue is full" once max_queue_depth is
reached) instead of being OOM-killed; every message that got 250 is delivered when
the destination comes back, and petrel still serves.

Needs a writable cgroup v2 directory with the memory controller delegated (the test
makes a child of its own cgroup and moves petrel into it); skipped with the reason
otherwise (cgroup v1 hosts, containers without delegation).
"""

import os
import smtplib
import stat
import threading
import time

import pytest

import harness
from harness import make_message, msgid_of, wait_for

DEPTH = 3000          # max_queue_depth: the back-pressure point
EXTRA = 500           # sent beyond it: each must get 452, never 250


def cgroup_v2_parent():
    """(directory, None) where a child cgroup with a memory limit can be made, or
    (None, why not)."""
    mnt = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            pre, _, post = line.partition(" - ")
            if post.split()[:1] == ["cgroup2"]:
                mnt = pre.split()[4]
                break
    if mnt is None:
        return None, "no cgroup2 filesystem is mounted (a cgroup v1 host)"
    rel = ""
    with open("/proc/self/cgroup") as f:
        for line in f:
            if line.startswith("0::"):
                rel = line[3:].strip()
    parent = os.path.join(mnt, rel.lstrip("/"))
    try:
        with open(os.path.join(parent, "cgroup.subtree_control")) as f:
            controllers = f.read().split()
    except OSError as e:
        return None, f"cgroup v2 {parent} is not readable: {e}"
    if "memory" not in controllers:
        return None, f"the memory controller is not delegated to children of {parent}"
    return parent, None


@pytest.fixture
def memcg(tmp_path, monkeypatch):
    parent, why = cgroup_v2_parent()
    if parent is None:
        pytest.skip(f"needs a writable cgroup v2 with the memory controller: {why}")
    cg = os.path.join(parent, f"petrel-test-{os.getpid()}-{time.monotonic_ns()}")
    try:
        os.mkdir(cg)
    except OSError as e:
        pytest.skip(f"cgroup v2 {parent} is not writable: {e}")
    if not os.path.exists(os.path.join(cg, "memory.max")):
        os.rmdir(cg)
        pytest.skip(f"{cg} has no memory.max")
    wrapper = tmp_path / "petrel-memcg"
    wrapper.write_text(f"#!/bin/sh\necho $$ > {cg}/cgroup.procs || exit 98\n"
                       f"exec {harness.PETREL_BIN} \"$@\"\n")
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(harness, "PETREL_BIN", str(wrapper))
    yield cg
    # petrel is stopped by the world's teardown first (fixtures end in reverse order)
    for _ in range(50):
        try:
            os.rmdir(cg)
            break
        except OSError:
            time.sleep(0.1)


def cg_read(cg, name):
    with open(os.path.join(cg, name)) as f:
        return f.read()


def cg_events(cg):
    return {k: int(v) for k, v in (line.split() for line in cg_read(cg, "memory.events").splitlines())}


def sender(p, n, tag, counts, lock):
    """n messages on one SMTP session; counts the replies by code."""
    s = smtplib.SMTP(p.host, p.port, timeout=30)
    s.ehlo("load.test")
    try:
        for i in range(n):
            rcpt = f"{tag}-{i}@down.test"
            data = make_message("alice@sender.test", [rcpt], subject=f"backlog {tag} {i}")
            try:
                s.sendmail("alice@sender.test", [rcpt], data)
                code, mid = 250, msgid_of(data)
            except smtplib.SMTPSenderRefused as e:
                code, mid = e.smtp_code, None
            except smtplib.SMTPResponseException as e:
                code, mid = e.smtp_code, None
            with lock:
                counts.setdefault(code, []).append(mid)
            if code != 250:
                s.rset()
    finally:
        try:
            s.quit()
        except smtplib.SMTPException:
            pass


def test_memory_limit_backlog_gets_backpressure_not_oom(world, memcg):
    world.dns.add_mx("down.test", "mx.down.test", 10)
    world.dns.add_a("mx.down.test", "127.0.0.2")              # no sink yet: down
    p = world.petrel(queue={"max_queue_depth": DEPTH, "retry_interval": "30s",
                            "max_retry_interval": "30s"})
    assert str(p.pid) in cg_read(memcg, "cgroup.procs").split(), "petrel is not in the cgroup"
    # the working set with some mail in the queue
    for i in range(100):
        p.send_message("alice@sender.test", [f"warm{i}@down.test"])
    time.sleep(1)
    working = int(cg_read(memcg, "memory.current"))
    limit = 2 * working
    with open(os.path.join(memcg, "memory.max"), "w") as f:
        f.write(str(limit))
    if os.path.exists(os.path.join(memcg, "memory.swap.max")):
        with open(os.path.join(memcg, "memory.swap.max"), "w") as f:
            f.write("0")
    before = cg_events(memcg)

    counts, lock = {}, threading.Lock()
    total = DEPTH - 100 + EXTRA
    per = total // 4
    threads = [threading.Thread(target=sender, args=(p, per, f"t{k}", counts, lock))
               for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    p.assert_alive()
    after = cg_events(memcg)
    assert after.get("oom_kill", 0) == before.get("oom_kill", 0), \
        f"OOM kill in the cgroup (limit {limit} bytes, 2x {working}): {after}"
    accepted = [m for m in counts.get(250, []) if m]
    refused = {c: len(v) for c, v in counts.items() if c != 250}
    peak = os.path.join(memcg, "memory.peak")
    print(f"\n  memory.max {limit / 2**20:.1f} MiB (2x the working set): {len(accepted)} "
          f"accepted, refused {refused}"
          + (f", peak {int(cg_read(memcg, 'memory.peak')) / 2**20:.1f} MiB"
             if os.path.exists(peak) else ""))
    # the depth is checked at MAIL FROM: each of the 4 sessions may pass it once more
    assert len(accepted) + 100 <= DEPTH + 4, f"{len(accepted)} accepted beyond max_queue_depth"
    assert set(refused) <= {451, 452}, f"refusals other than 451/452: {refused}"
    assert refused.get(452, 0) >= EXTRA - 50, f"no back-pressure: {refused}"

    # the destination comes back: everything acknowledged arrives (next retry <= 30 s)
    sink = world.sink("127.0.0.2")
    wait_for(lambda: len(sink.messages()) >= len(accepted) + 100, 300,
             f"{len(accepted) + 100} deliveries after the destination came back")
    got = {t.message_id for t in sink.messages()}
    missing = [m for m in accepted if m not in got]
    assert not missing, f"{len(missing)} acknowledged messages not delivered"
    p.assert_alive()
    world.assert_serving(p)
