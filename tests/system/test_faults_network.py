"""Slow and stuck peers (issue 10, "Hostile network"): next hops that accept and never
greet, trickle their greeting byte by byte, stall mid-DATA or trickle the reply to the
final dot; DNS that never answers or answers garbage. Each attempt ends at its
configured timeout (connect_timeout for the greeting, 5 x connect_timeout for each
reply, c-ares' ~6 s for DNS), and meanwhile the delivery thread keeps serving other
destinations.
"""

import datetime
import socket
import threading
import time

from harness import wait_for

CONNECT_TIMEOUT = 2.0                    # delivery connect_timeout in these tests
COMMAND_TIMEOUT = 5 * CONNECT_TIMEOUT    # outbound reply deadline (sched.c)


def ts(rec):
    return datetime.datetime.strptime(rec["timestamp"].replace("Z", "+0000"),
                                      "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()


def _sleep_or_stop(sink, secs):
    return sink._stop.wait(secs)


def never_greets(sock, sink):
    sink._hold(sock, 0)


def trickle_greeting(sock, sink):
    """A valid greeting, one byte every 0.25 s (50 s in all)."""
    for ch in b"220 " + b"x" * 196 + b"\r\n":
        if _sleep_or_stop(sink, 0.25):
            return
        try:
            sock.sendall(bytes([ch]))
        except OSError:
            return


def _session_until(sock, sink, on_data):
    """A plain SMTP dialogue until the final dot; then on_data(sock, sink)."""
    buf = b""
    sock.sendall(b"220 slow.test ESMTP\r\n")
    while not sink._stop.is_set():
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        except OSError:
            return
        if not chunk:
            return
        buf += chunk
        while b"\r\n" in buf:
            line, _, buf = buf.partition(b"\r\n")
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                sock.sendall(b"250-slow.test\r\n250 8BITMIME\r\n")
            elif verb in (b"MAIL", b"RCPT"):
                sock.sendall(b"250 ok\r\n")
            elif verb == b"DATA":
                sock.sendall(b"354 go\r\n")
                while b"\r\n.\r\n" not in buf:
                    try:
                        chunk = sock.recv(65536)
                    except socket.timeout:
                        continue
                    if not chunk:
                        return
                    buf += chunk
                with sink._lock:
                    sink.dot_at = time.time()
                on_data(sock, sink)
                return
            elif verb == b"QUIT":
                sock.sendall(b"221 bye\r\n")
                return


def stall_after_dot(sock, sink):
    _session_until(sock, sink, lambda s, k: k._stop.wait(120))


def trickle_final_reply(sock, sink):
    def trickle(s, k):
        for ch in b"250 " + b"y" * 196 + b"\r\n":
            if k._stop.wait(0.25):
                return
            try:
                s.sendall(bytes([ch]))
            except OSError:
                return
    _session_until(sock, sink, trickle)


def test_stuck_next_hops_time_out_and_others_are_served(world):
    hops = {}
    for name, script in (("nogreet", never_greets), ("trickle", trickle_greeting),
                         ("stall", stall_after_dot), ("slowreply", trickle_final_reply)):
        ip = world.new_ip()
        world.mx_domain(f"{name}.test", ip, sink=False)
        hops[name] = world.raw_sink(ip, script)
        hops[name].dot_at = None
    healthy = world.mx_domain("healthy.test", world.new_ip())
    p = world.petrel(delivery={"connect_timeout": f"{CONNECT_TIMEOUT:g}s"},
                     queue={"retry_interval": "60s", "max_retry_interval": "60s"})
    for name in hops:
        p.send_message("alice@sender.test", [f"x@{name}.test"], subject=name)
    t_sent = time.time()
    # The four stuck hops hold connections; another destination is served at once.
    mid = p.send_message("alice@sender.test", ["ok@healthy.test"], subject="healthy")
    healthy.wait_message(mid, timeout=COMMAND_TIMEOUT - 1)
    assert time.time() - t_sent < COMMAND_TIMEOUT, "a stuck hop delayed another destination"

    recs = {}
    for name in hops:
        recs[name] = p.wait_record("TransientFailure", recipient=f"x@{name}.test",
                                   timeout=COMMAND_TIMEOUT * 3)
        recv = p.wait_record("Reception", recipient=f"x@{name}.test")
        recs[name] = (ts(recs[name]) - ts(recv), recs[name])
    # Greeting: connect_timeout, not the 50 s the trickle would take.
    for name in ("nogreet", "trickle"):
        elapsed, rec = recs[name]
        assert CONNECT_TIMEOUT - 0.2 <= elapsed <= CONNECT_TIMEOUT + 4, (name, elapsed, rec)
    # Reply to the final dot: the command timeout, from the dot.
    for name in ("stall", "slowreply"):
        elapsed, rec = recs[name]
        dot = hops[name].dot_at
        assert dot, f"{name}: the hop never got the final dot"
        waited = ts(rec) - dot
        assert COMMAND_TIMEOUT - 0.5 <= waited <= COMMAND_TIMEOUT + 5, (name, waited, rec)
        assert rec["code"] in (451, None) or 400 <= rec["code"] < 500, rec
    assert not p.records("Bounce")
    world.assert_serving(p)


def test_dns_silence_and_garbage_time_out_others_served(world):
    world.dns.set_mode("silent.test", "drop")
    world.dns.set_mode("garbled.test", "garbage")
    world.dns.set_mode("truncated.test", "malformed")
    healthy = world.mx_domain("healthy.test", world.new_ip())
    p = world.petrel(queue={"retry_interval": "60s", "max_retry_interval": "60s"})
    for d in ("silent", "garbled", "truncated"):
        p.send_message("alice@sender.test", [f"x@{d}.test"])
    t0 = time.time()
    mid = p.send_message("alice@sender.test", ["ok@healthy.test"])
    healthy.wait_message(mid, timeout=5)
    assert time.time() - t0 < 5, "waiting on DNS delayed another destination"
    for d in ("silent", "garbled", "truncated"):
        tf = p.wait_record("TransientFailure", recipient=f"x@{d}.test", timeout=30)
        recv = p.wait_record("Reception", recipient=f"x@{d}.test")
        elapsed = ts(tf) - ts(recv)
        # c-ares: 2 s then 4 s against the one server (DNS_TRY_TIMEOUT_MS, DNS_TRIES)
        limit = 15 if d == "silent" else 8
        assert elapsed <= limit, (d, elapsed, tf)
        if d == "silent":
            assert elapsed >= 1.5, f"a silent server gave up after {elapsed:.1f}s"
    assert not p.records("Bounce")
    world.assert_serving(p)


def test_many_stuck_connections_do_not_block_delivery(world):
    """20 destinations whose hops never greet at once; a healthy one still delivers."""
    for i in range(20):
        ip = world.new_ip()
        world.mx_domain(f"stuck{i}.test", ip, sink=False)
        world.raw_sink(ip, "hang")
    healthy = world.mx_domain("healthy.test", world.new_ip())
    p = world.petrel(delivery={"connect_timeout": "10s"})
    threads = [threading.Thread(target=p.send_message,
                                args=("alice@sender.test", [f"x@stuck{i}.test"]))
               for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    t0 = time.time()
    mid = p.send_message("alice@sender.test", ["ok@healthy.test"])
    healthy.wait_message(mid, timeout=5)
    assert time.time() - t0 < 5
    wait_for(lambda: len(p.records("TransientFailure")) >= 20, 40, "20 greeting timeouts")
