"""The shared Redis queue (configure_queue { backend = "redis" }, DESIGN §10) with
real redis-server processes started here (temp dir, loopback, free port, AOF with
appendfsync always, stopped by PID): durability check at start, 451 while Redis is
unreachable, delivery and retries through the shared queue, a Redis restart that
loses nothing acknowledged."""

import json
import smtplib
import subprocess
import time

import pytest

from harness import PETRELCTL_BIN, free_port, make_message, msgid_of, run_petrel, wait_for
from redisproc import RedisServer, require_redis


@pytest.fixture
def redis(tmp_path):
    require_redis()
    r = RedisServer(str(tmp_path / "redis")).start()
    yield r
    r.stop()


def redis_queue(r, **kw):
    q = {"backend": "redis", "redis_url": r.url, "lease": "6s"}
    q.update(kw)
    return q


def shared_keys(r, prefix="petrel:"):
    """The queue's keys (not the node leases "l:", nor the cluster limits' "lim:":
    their node heartbeat lives as long as a node runs)."""
    return sorted(k for k in r.cmd("KEYS", prefix + "*")
                  if not k.startswith(prefix + "l:") and not k.startswith(prefix + "lim:"))


def http_extra(port):
    return f'petrel.start_http_listener {{ listen = "127.0.0.1:{port}" }}'


def test_delivers_through_redis_and_cleans_up(world, redis):
    p, dest, _ = world.basic(queue=redis_queue(redis))
    mid = p.send_message(to=["bob@dest.test", "carol@dest.test"])
    t = dest.wait_message(mid)
    assert sorted(t.rcpt_tos) == ["bob@dest.test", "carol@dest.test"]
    p.wait_record("Delivery", recipient="carol@dest.test")
    # entry, content, indexes: all gone once delivered
    wait_for(lambda: shared_keys(redis) == [], 10,
             lambda: f"redis keys to go, still {shared_keys(redis)}")
    assert "appendfsync always" in p.stderr_text()


def test_multi_domain_message_content_freed_after_last_entry(world, redis):
    p, dest, sender = world.basic(queue=redis_queue(redis))
    other = world.mx_domain("other.test")
    mid = p.send_message(to=["bob@dest.test", "x@other.test"])
    dest.wait_message(mid)
    other.wait_message(mid)
    wait_for(lambda: shared_keys(redis) == [], 10,
             lambda: f"redis keys to go, still {shared_keys(redis)}")


def test_acknowledged_message_is_in_redis_before_delivery(world, redis):
    """250 means the entry and content are in Redis (AOF always): with the next hop
    down the message waits in the shared queue, not in the node's memory."""
    world.mx_domain("dest.test", "127.0.0.2", sink=False)
    p = world.petrel(queue=redis_queue(redis))
    mid = p.send_message()
    ids = [k.split(":", 2)[2] for k in redis.cmd("KEYS", "petrel:c:*")]
    assert len(ids) == 1
    content = redis.cmd("GET", f"petrel:c:{ids[0]}")
    assert mid.strip("<>") in content
    assert redis.cmd("HKEYS", f"petrel:m:{ids[0]}") == ["dest.test"]
    assert redis.cmd("ZCARD", "petrel:due") == 1
    # deferred: back in the due index with its retry time, no longer leased
    p.wait_record("TransientFailure")
    wait_for(lambda: redis.cmd("HLEN", "petrel:own") == 0, 10, "the lease to be released")
    sink = world.sink("127.0.0.2")
    sink.wait_message(mid, 20)


def test_not_durable_redis_is_refused_at_start(world, tmp_path):
    require_redis()
    r = RedisServer(str(tmp_path / "r2"), appendonly=False).start()
    try:
        p = world.petrel(start=False, queue=redis_queue(r))
        with pytest.raises(AssertionError) as ei:
            p.start()
        p.expected_exit = True
        assert "redis is not durable" in str(ei.value)
        assert "appendonly=no" in str(ei.value)
    finally:
        r.stop()


def test_everysec_is_refused_but_wait_replicas_is_accepted(world, tmp_path):
    require_redis()
    r = RedisServer(str(tmp_path / "r3"), appendfsync="everysec").start()
    try:
        p = world.petrel(start=False, queue=redis_queue(r))
        with pytest.raises(AssertionError) as ei:
            p.start()
        p.expected_exit = True
        assert "redis is not durable: appendonly=yes appendfsync=everysec" in str(ei.value)
        # wait_replicas: accepted, and with no replica connected WAIT times out: 451
        world.mx_domain("dest.test", "127.0.0.2")
        p2 = world.petrel(queue=redis_queue(r, wait_replicas=1))
        assert "WAIT 1 replica(s)" in p2.stderr_text()
        data = make_message("alice@sender.test", ["bob@dest.test"])
        with p2.smtp(timeout=30) as s:
            s.mail("alice@sender.test")
            s.rcpt("bob@dest.test")
            code, resp = s.data(data)
        assert code == 451, (code, resp)
    finally:
        r.stop()


def check(cfg):
    r = run_petrel("--check", "-c", str(cfg))
    r.stderr = r.stderr.decode() if isinstance(r.stderr, bytes) else r.stderr
    return r


def test_check_validates_redis_options(world, tmp_path):
    cfg = tmp_path / "c.lua"
    cfg.write_text('petrel.configure_queue { backend = "redis" }\n')
    r = check(cfg)
    assert r.returncode == 1 and "c.lua:1:" in r.stderr and "needs redis_url" in r.stderr
    cfg.write_text('\npetrel.configure_queue { backend = "redis", redis_url = "http://x" }\n')
    r = check(cfg)
    assert r.returncode == 1 and "c.lua:2:" in r.stderr and "redis_url" in r.stderr
    cfg.write_text('petrel.configure_queue { backend = "redis", '
                   'redis_url = "rediss://u:p%40ss@[::1]:6380/3" }\n')
    r = check(cfg)
    assert r.returncode == 0, r.stderr
    # configure_redis (cluster-wide limits, test_cluster_limits.py) checks its url alike
    cfg.write_text('petrel.configure_redis { url = "redis://127.0.0.1:6379/0" }\n')
    assert check(cfg).returncode == 0
    cfg.write_text('petrel.configure_redis { url = "http://x" }\n')
    r = check(cfg)
    assert r.returncode == 1 and "c.lua:1:" in r.stderr and "configure_redis" in r.stderr


def test_unreachable_redis_gets_451_never_250(world, redis):
    p, dest, _ = world.basic(queue=redis_queue(redis))
    redis.stop()
    data = make_message("alice@sender.test", ["bob@dest.test"])
    with p.smtp(timeout=30) as s:
        s.mail("alice@sender.test")
        s.rcpt("bob@dest.test")
        code, resp = s.data(data)
    assert code == 451 and b"4.3.0" in resp, (code, resp)
    redis.start()

    def accepted():
        try:
            p.send("alice@sender.test", ["bob@dest.test"], data)
            return True
        except AssertionError:
            return False
    wait_for(accepted, 15, "mail to be accepted again once Redis is back")
    dest.wait_message(msgid_of(data), 20)
    p.assert_alive()


def test_redis_restart_mid_load_loses_no_acknowledged_message(world, redis):
    world.mx_domain("dest.test", "127.0.0.2", sink=False)   # hop down: mail waits
    p = world.petrel(queue=redis_queue(redis))
    acked = []
    refused = 0
    for i in range(60):
        if i == 30:
            redis.kill()          # kill -9: only what AOF always synced survives
            redis.start()
        data = make_message("alice@sender.test", [f"r{i}@dest.test"], subject=f"m{i}")
        try:
            p.send("alice@sender.test", [f"r{i}@dest.test"], data)
            acked.append(msgid_of(data))
        except (AssertionError, smtplib.SMTPException, OSError):
            refused += 1
    assert len(acked) >= 50, f"only {len(acked)} accepted ({refused} refused)"
    sink = world.sink("127.0.0.2")
    wait_for(lambda: all(sink.find(m) for m in acked), 60,
             lambda: f"every acknowledged message; missing "
                     f"{[m for m in acked if not sink.find(m)][:5]}")


def test_admin_api_reads_the_shared_queue(world, redis):
    world.mx_domain("dest.test", "127.0.0.2", sink=False)
    port = free_port()
    p = world.petrel(queue=redis_queue(redis, retry_interval="1h"), extra=http_extra(port))
    ids = []
    for i in range(3):
        p.send_message(to=[f"u{i}@dest.test"])
    p.wait_records("TransientFailure", 3)
    r = subprocess.run([PETRELCTL_BIN, "--url", f"http://127.0.0.1:{port}", "queue"],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    assert "dest.test" in r.stdout
    import urllib.request
    doc = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/queue", timeout=10))
    assert doc["total"] == 3, doc
    q = [x for x in doc["queues"] if x["domain"] == "dest.test"][0]
    assert q["count"] == 3
    for k in redis.cmd("KEYS", "petrel:m:*"):
        ids.append(k.split(":")[-1])
    doc = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/message/{ids[0]}",
                                           timeout=10))
    assert doc and "dest.test" in json.dumps(doc)


def mail_reply(p):
    with p.smtp() as s:
        code, resp = s.mail("alice@sender.test")
        return code, resp


def test_max_queue_depth_counts_the_whole_cluster(world, redis):
    world.mx_domain("dest.test", "127.0.0.2", sink=False)
    p = world.petrel(queue=redis_queue(redis, max_queue_depth=3, retry_interval="1h"))
    for i in range(3):
        p.send_message(to=[f"q{i}@dest.test"])
    wait_for(lambda: mail_reply(p)[0] == 452, 10, "452 once the shared queue is full")
    code, resp = mail_reply(p)
    assert b"4.3.1" in resp and b"queue is full" in resp, resp
    # the queue drains (hop back): mail is accepted again
    sink = world.sink("127.0.0.2")
    redis.cmd("DEL", "petrel:susp")
    for m in redis.cmd("ZRANGE", "petrel:due", 0, -1):
        redis.cmd("ZADD", "petrel:due", 0, m)     # due now for any node
    sink.wait_count(3, 20)
    wait_for(lambda: mail_reply(p)[0] == 250, 10, "250 again once the queue drained")


def test_max_redis_bytes_guard_gives_452_before_maxmemory(world, tmp_path):
    require_redis()
    # Redis with a maxmemory: the default guard is 90% of it
    r = RedisServer(str(tmp_path / "rm"), extra={"maxmemory": "8mb",
                                                 "maxmemory-policy": "noeviction"}).start()
    try:
        world.mx_domain("dest.test", "127.0.0.2", sink=False)
        p = world.petrel(queue=redis_queue(r, retry_interval="1h"))
        big = ("x" * 900 + "\r\n") * 66
        refused = None
        for i in range(200):
            data = make_message("alice@sender.test", [f"m{i}@dest.test"], body=big)
            try:
                p.send("alice@sender.test", [f"m{i}@dest.test"], data)
            except AssertionError as e:
                refused = str(e)
                break
            time.sleep(0.1)     # the guard polls Redis twice a second
        assert refused and "452" in refused and "4.3.1" in refused, refused
        used = int([ln for ln in r.cmd("INFO", "memory").splitlines()
                    if ln.startswith("used_memory:")][0].split(":")[1])
        assert used < 8 * 1024 * 1024, "Redis reached maxmemory before petrel said 452"
        assert "redis queue full" in p.stderr_text()
    finally:
        r.stop()


def test_redis_that_stops_answering_gets_451_then_recovers(world, redis):
    """A Redis that hangs (SIGSTOP: connections open, no replies, like a network cut)
    costs at most the command timeout and a 451, never a 250; after SIGCONT mail is
    accepted and delivered again."""
    import os
    import signal as sig
    p, dest, _ = world.basic(queue=redis_queue(redis))
    os.kill(redis.proc.pid, sig.SIGSTOP)
    try:
        data = make_message("alice@sender.test", ["bob@dest.test"])
        t0 = time.monotonic()
        with p.smtp(timeout=40) as s:
            s.mail("alice@sender.test")
            s.rcpt("bob@dest.test")
            code, resp = s.data(data)
        print("reply while stopped:", code, resp, f"after {time.monotonic() - t0:.1f}s")
        assert code == 451, (code, resp)
        assert time.monotonic() - t0 < 30
    finally:
        os.kill(redis.proc.pid, sig.SIGCONT)

    def accepted():
        try:
            p.send("alice@sender.test", ["bob@dest.test"], data)
            return True
        except (AssertionError, smtplib.SMTPException, OSError):
            return False
    wait_for(accepted, 30, "mail to be accepted again after SIGCONT")
    dest.wait_message(msgid_of(data), 30)
    p.assert_alive()
