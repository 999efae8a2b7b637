"""Cluster-wide limits (configure_redis) with two petrel nodes on local spools and
one real redis-server (started here, stopped by PID): a destination's
max_message_rate and max_connections_per_domain hold across both nodes, a
limit_sending key used up on one node refuses on the other, an AUTH ban and an
admin suspension made on one node apply on the other, and with Redis stopped
mid-run each node takes 1/N of the rate (metric and log say so), nothing is
lost, and the shared limits resume when Redis is back."""

import datetime
import json
import threading
import time
import urllib.request

import pytest

from harness import free_port, make_message, msgid_of, run_petrel, wait_for
from redisproc import RedisServer, require_redis
from certs import PKI, listener_tls
from test_auth import MECHS, auth_config, plain, tls_raw, users_file  # noqa: F401 (fixture)


@pytest.fixture
def redis(tmp_path):
    require_redis()
    r = RedisServer(str(tmp_path / "redis")).start()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return PKI(tmp_path_factory.mktemp("pki"))


def start_nodes(world, redis, n=2, delivery=None, extra="", listener=None):
    nodes = []
    for i in range(n):
        http = free_port()
        lst = dict(listener or {})
        p = world.petrel(
            delivery=delivery, listener=lst or None,
            extra=(f'petrel.configure_redis {{ url = "{redis.url}" }}\n'
                   f'petrel.start_http_listener {{ listen = "127.0.0.1:{http}" }}\n' + extra))
        p.http = http
        nodes.append(p)
    return nodes


def api(node, path, body=None):
    url = f"http://127.0.0.1:{node.http}{path}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method="POST" if data else "GET",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=20) as r:
        return json.load(r)


def metric(node, name):
    with urllib.request.urlopen(f"http://127.0.0.1:{node.http}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return None


def arrivals(sink):
    """A data_reply that records the arrival time of each message."""
    times = []

    def rec(txn):
        times.append(time.monotonic())
        return None
    return times, rec


def inject(node, tag, n):
    sent = []
    for i in range(n):
        rcpt = f"{tag}{i}@dest.test"
        data = make_message("alice@sender.test", [rcpt], subject=f"{tag}{i}")
        node.send("alice@sender.test", [rcpt], data)
        sent.append(msgid_of(data))
    return sent


def inject_parallel(nodes, n):
    sent, lock = [], threading.Lock()

    def run(k):
        ids = inject(nodes[k], f"n{k}-", n)
        with lock:
            sent.extend(ids)
    th = [threading.Thread(target=run, args=(k,)) for k in range(len(nodes))]
    for t in th:
        t.start()
    for t in th:
        t.join()
    return sent


def test_message_rate_is_shared_by_two_nodes(world, redis):
    """5/s for dest.test across both nodes: over 10 s the sink sees ~50, not ~100."""
    times, rec = arrivals(None)
    dest = world.mx_domain("dest.test", "127.0.0.2", data_reply=rec)
    nodes = start_nodes(world, redis, delivery={"max_message_rate": 300})
    inject_parallel(nodes, 45)
    wait_for(lambda: len(times) >= 1, 20, "the first arrival")
    t0 = times[0]
    time.sleep(11.5 - (time.monotonic() - t0))
    window = [t for t in times if t0 + 1.0 <= t < t0 + 11.0]
    # 10 s at 5/s = 50; one node alone would also do ~50, both unshared ~100
    assert len(window) <= 60, f"{len(window)} messages in 10 s with a shared 5/s limit"
    assert len(window) >= 35, f"only {len(window)} messages in 10 s: the limit starves"
    for p in nodes:
        assert metric(p, "petrel_cluster_limits_degraded") == 0
    assert redis.cmd("EXISTS", "petrel:lim:rate:dest.test") == 1


def script_loads(redis):
    """SCRIPT LOAD calls Redis has seen."""
    info = redis.cmd("INFO", "commandstats")
    info = info.decode() if isinstance(info, bytes) else info
    for line in info.splitlines():
        if line.startswith("cmdstat_script|load:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0


def test_scripts_flushed_from_redis_are_loaded_again(world, redis):
    """SCRIPT FLUSH (a Redis restart without its script cache): EVALSHA gets
    NOSCRIPT, the scripts are loaded again, mail flows, nothing degrades."""
    dest = world.mx_domain("dest.test", "127.0.0.2")
    nodes = start_nodes(world, redis, delivery={"max_message_rate": 600,
                                                "max_connections_per_domain": 2})
    sent = inject(nodes[0], "a", 3)
    wait_for(lambda: all(dest.find(m) for m in sent), 40, "the first messages")
    # flushed while no mail flows: the periodic poll (a pipeline) meets NOSCRIPT
    # first, and must load the scripts after its last reply, not between them
    loads = script_loads(redis)
    assert redis.cmd("SCRIPT", "FLUSH") == "OK"
    wait_for(lambda: script_loads(redis) >= loads + 5, 10,
             "the scripts loaded again by the idle nodes' polls")
    time.sleep(1.5)                       # a heartbeat and a few polls more
    for p in nodes:
        assert "redis unreachable" not in p.stderr_text(), p.stderr_text()[-3000:]
    loads = script_loads(redis)
    assert redis.cmd("SCRIPT", "FLUSH") == "OK"
    sent += inject(nodes[1], "b", 3) + inject(nodes[0], "c", 3)
    wait_for(lambda: all(dest.find(m) for m in sent), 40, "the messages after SCRIPT FLUSH")
    assert script_loads(redis) > loads, "the scripts were not loaded again"
    for p in nodes:
        assert metric(p, "petrel_cluster_limits_degraded") == 0
        assert "redis unreachable" not in p.stderr_text()


def test_connection_limit_one_across_two_nodes(world, redis):
    dest = world.mx_domain("dest.test", "127.0.0.2", delay=0.2)
    nodes = start_nodes(world, redis, delivery={"max_connections_per_domain": 1})
    sent = inject_parallel(nodes, 8)
    wait_for(lambda: all(dest.find(m) for m in sent), 60, "all 16 messages at the sink")
    assert dest.max_active == 1, f"{dest.max_active} concurrent sessions with a limit of 1"
    # both nodes delivered (each took the one slot in turn)
    assert all(len(p.records("Delivery")) > 0 for p in nodes)
    # the slots were given back
    wait_for(lambda: redis.cmd("ZCARD", "petrel:lim:conn:dest.test") == 0, 10,
             "the connection slots to be released")


LIMIT_HOOK = '''
petrel.on("smtp_message_received", function(domain, meta)
  petrel.limit_sending("shared-key", 3, { per = "hour" })
end)
'''


def test_limit_sending_key_is_shared(world, redis):
    dest = world.mx_domain("dest.test", "127.0.0.2")
    a, b = start_nodes(world, redis, extra=LIMIT_HOOK)
    for i in range(3):
        a.send_message(to=[f"l{i}@dest.test"])
    time.sleep(1.0)      # a's charges reach Redis; b polls every 0.2 s
    with b.smtp() as c:
        c.mail("alice@sender.test")
        c.rcpt("z@dest.test")
        code, msg = c.data(make_message("alice@sender.test", ["z@dest.test"]))
    assert code == 451, f"node b accepted over the shared limit: {code} {msg}"
    dest.wait_count(3, 20)


def test_auth_ban_on_one_node_refuses_on_the_other(world, redis, pki, users_file):  # noqa: F811
    lst = {"tls": listener_tls(pki), "auth_mechanisms": MECHS, "relay_hosts": ["10.0.0.0/8"]}
    a, b = start_nodes(world, redis, listener=lst,
                       extra=auth_config(users_file, max_failures=3, ban_time="10m"))
    c, _ = tls_raw(a, pki)
    try:
        for i in range(3):
            code, text = c.cmd("AUTH PLAIN " + plain("mallory", f"guess{i}"))
            if code == 421:
                break
    finally:
        c.close()

    def refused(p):
        try:
            with p.raw(timeout=5, greeting=False) as rc:
                line = rc.read_line(timeout=5)
        except (ConnectionError, OSError):
            return True
        return not line.startswith(b"220")
    assert refused(a), "node a does not ban after 3 failures"
    wait_for(lambda: refused(b), 5, "node b to refuse the address banned on node a")
    assert redis.cmd("ZCARD", "petrel:lim:ban") == 1


def test_suspension_through_one_node_stops_the_other(world, redis):
    dest = world.mx_domain("dest.test", "127.0.0.2")
    a, b = start_nodes(world, redis)
    api(a, "/api/queue/suspend", {"domain": "dest.test", "duration": "1h"})
    time.sleep(1.0)      # b polls the shared suspensions every 0.2 s
    b.send_message(to=["s1@dest.test"])
    a.send_message(to=["s2@dest.test"])
    time.sleep(2.5)
    assert dest.messages() == [], "a node delivered to a suspended domain"
    b.wait_record("Reception", timeout=5)
    api(a, "/api/queue/resume", {"domain": "dest.test"})
    dest.wait_count(2, 20)


def test_node_started_later_honours_an_existing_suspension(world, redis):
    dest = world.mx_domain("dest.test", "127.0.0.2")
    (a,) = start_nodes(world, redis, n=1)
    api(a, "/api/queue/suspend", {"domain": "dest.test", "duration": "1h"})
    (b,) = start_nodes(world, redis, n=1)
    b.send_message(to=["late@dest.test"])
    time.sleep(2.0)
    assert dest.messages() == [], "a node started later ignored the cluster's suspension"
    api(b, "/api/queue/resume", {"domain": "dest.test"})
    dest.wait_count(1, 20)


def delivered_between(p, t_from, t_to):
    n = 0
    for r in p.records("Delivery"):
        ts = datetime.datetime.fromisoformat(r["timestamp"].replace("Z", "+00:00")).timestamp()
        if t_from <= ts < t_to:
            n += 1
    return n


def test_redis_down_means_one_nth_each_and_nothing_lost(world, redis):
    """10/s shared; Redis stopped while mail flows: each of the 2 nodes sends at
    most ~5/s, the metric is 1 and the log says so; Redis back: the metric is 0
    and the log says so; every message delivered once."""
    dest = world.mx_domain("dest.test", "127.0.0.2")
    nodes = start_nodes(world, redis, delivery={"max_message_rate": 600})
    # the heartbeat has seen both nodes
    wait_for(lambda: redis.cmd("ZCARD", "petrel:lim:nodes") == 2, 10, "both nodes' heartbeats")
    time.sleep(1.5)      # ... and each node's next heartbeat has counted the other
    sent = inject_parallel(nodes, 60)
    wait_for(lambda: len(dest.messages()) >= 10, 20, "mail flowing")
    redis.stop()
    for p in nodes:
        wait_for(lambda: metric(p, "petrel_cluster_limits_degraded") == 1, 15,
                 "the degraded metric")
        assert "cluster limits: redis unreachable" in p.stderr_text()
        assert "1/2 of every shared limit" in p.stderr_text()
    t0 = time.time()
    time.sleep(5.5)
    t1 = time.time()
    for p in nodes:
        got = delivered_between(p, t0, t1)
        # 1/2 of 10/s = 5/s over 5.5 s = 27.5 (+20% and a burst of 5)
        assert got <= 38, f"a degraded node sent {got} in {t1 - t0:.1f} s (1/N = 5/s)"
        assert got >= 10, f"a degraded node sent only {got}: mail must still flow"
    redis.start()
    for p in nodes:
        wait_for(lambda: metric(p, "petrel_cluster_limits_degraded") == 0, 15,
                 "the metric back to 0")
        assert "cluster limits: redis reachable again" in p.stderr_text()
    wait_for(lambda: all(dest.find(m) for m in sent), 60, "every message delivered")
    assert len(dest.messages()) == len(sent)


def check(cfg):
    r = run_petrel("--check", "-c", str(cfg))
    r.stderr = r.stderr.decode() if isinstance(r.stderr, bytes) else r.stderr
    return r


@pytest.mark.parametrize("url,why", [
    ("http://127.0.0.1:6379", "must start with redis:// or rediss://"),
    ("redis://127.0.0.1:99999", "bad port"),
    ("redis://127.0.0.1:6379/abc", "database number"),
])
def test_check_refuses_a_bad_url(tmp_path, url, why):
    cfg = tmp_path / "petrel.lua"
    cfg.write_text('petrel.start_smtp_listener { listen = "127.0.0.1:2525" }\n'
                   f'\n\npetrel.configure_redis {{ url = "{url}" }}\n')
    r = check(cfg)
    assert r.returncode == 1
    assert f"{cfg}:4:" in r.stderr and why in r.stderr, r.stderr


def test_check_accepts_good_urls(tmp_path):
    for url in ("redis://127.0.0.1:6379/2", "rediss://user:pw@redis.example:6380/0",
                "redis://:secret@[::1]:6379"):
        cfg = tmp_path / "petrel.lua"
        cfg.write_text('petrel.start_smtp_listener { listen = "127.0.0.1:2525" }\n'
                       f'kumo.configure_redis {{ url = "{url}", key_prefix = "c1:" }}\n')
        r = check(cfg)
        assert r.returncode == 0, (url, r.stderr)
    cfg.write_text('petrel.configure_redis { key_prefix = "x:" }\n')
    r = check(cfg)
    assert r.returncode == 1 and "'url' is required" in r.stderr, r.stderr
