"""Connection floods (issue 10, "Hostile network"): 10,000 idle connections, half-open
TLS handshakes on an implicit-TLS listener, and connection churn. petrel's memory per
idle connection stays bounded, and a legitimate client is still greeted promptly
(the issue's target is 100 ms; the assertion leaves room for a loaded test machine and
the measured figures are printed).
"""

import os
import resource
import socket
import statistics
import threading
import time

import pytest

from certs import PKI, listener_tls

N_IDLE = 10000


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return PKI(tmp_path_factory.mktemp("pki"))


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for ln in f:
            if ln.startswith("VmRSS:"):
                return int(ln.split()[1])
    return 0


def legit_latency(host, port, n=20):
    """Seconds from connect to the 220 greeting, n times, one after the other."""
    out = []
    for _ in range(n):
        t0 = time.monotonic()
        s = socket.create_connection((host, port), timeout=10)
        try:
            data = b""
            while b"\n" not in data:
                chunk = s.recv(512)
                if not chunk:
                    break
                data += chunk
            out.append(time.monotonic() - t0)
            assert data.startswith(b"220"), data
            s.sendall(b"QUIT\r\n")
        finally:
            s.close()
    return out


def need_fds(n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n:
        if hard != resource.RLIM_INFINITY and hard < n:
            pytest.skip(f"needs {n} file descriptors, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, hard))


def test_ten_thousand_idle_connections(world, capsys):
    need_fds(N_IDLE + 500)
    p = world.petrel(listener={"max_connections": N_IDLE + 100,
                               "max_connections_per_ip": N_IDLE + 100,
                               "greeting_timeout": "60s"})
    base = legit_latency(p.host, p.port, 10)
    rss0 = rss_kb(p.pid)
    socks = []
    t0 = time.monotonic()
    try:
        for i in range(N_IDLE):
            socks.append(socket.create_connection((p.host, p.port), timeout=10))
        t_open = time.monotonic() - t0
        time.sleep(2)                                   # every greeting sent
        p.assert_alive()
        rss1 = rss_kb(p.pid)
        lat = legit_latency(p.host, p.port, 20)
        per_conn = (rss1 - rss0) * 1024 / N_IDLE
        with capsys.disabled():
            print(f"\n  {N_IDLE} idle connections opened in {t_open:.1f} s; petrel RSS "
                  f"{rss0 / 1024:.1f} -> {rss1 / 1024:.1f} MB ({per_conn:.0f} bytes each); "
                  f"legit greeting median {1000 * statistics.median(lat):.1f} ms, max "
                  f"{1000 * max(lat):.1f} ms (idle: {1000 * statistics.median(base):.1f} ms)")
        assert per_conn < 16 * 1024, f"{per_conn:.0f} bytes per idle connection"
        assert statistics.median(lat) < 0.5, lat
    finally:
        for s in socks:
            s.close()
    time.sleep(1)
    world.assert_serving(p)


def test_half_open_tls_handshakes(world, pki, capsys):
    """500 connections to an implicit-TLS port that send half a ClientHello (or
    nothing) and stall: the plain listener and later TLS clients are still served."""
    from harness import free_port
    tport = free_port()
    p = world.petrel(listeners=[{"listen": f"127.0.0.1:{tport}", "name": "smtps",
                                 "hostname": "petrel.test",
                                 "tls": listener_tls(pki, implicit=True),
                                 "greeting_timeout": "60s",
                                 "max_connections_per_ip": 5000}])
    hello = bytes.fromhex("16030100f4010000f00303") + os.urandom(32)   # a truncated ClientHello
    socks = []
    try:
        for i in range(500):
            s = socket.create_connection(("127.0.0.1", tport), timeout=10)
            if i % 2:
                s.sendall(hello)
            socks.append(s)
        time.sleep(1)
        p.assert_alive()
        lat = legit_latency(p.host, p.port, 20)
        # A TLS client still completes its handshake and gets the greeting.
        import ssl
        ctx = pki.client_context(verify=True)
        t0 = time.monotonic()
        with ctx.wrap_socket(socket.create_connection(("127.0.0.1", tport), timeout=10),
                             server_hostname="127.0.0.1") as t:
            data = t.recv(512)
        tls_lat = time.monotonic() - t0
        assert data.startswith(b"220"), data
        with capsys.disabled():
            print(f"\n  500 half-open TLS handshakes: plain greeting median "
                  f"{1000 * statistics.median(lat):.1f} ms; a TLS client greeted after "
                  f"{1000 * tls_lat:.1f} ms")
        assert statistics.median(lat) < 0.5 and tls_lat < 2.0
    finally:
        for s in socks:
            s.close()
    world.assert_serving(p)


def test_connection_churn(world, capsys):
    """About 1,000 connections a second opened and closed at once (some after reading
    the greeting) for 5 s; legitimate clients are greeted meanwhile."""
    p = world.petrel(listener={"max_connections_per_ip": 5000})
    stop = threading.Event()
    made = [0]

    def churn():
        while not stop.is_set():
            t0 = time.monotonic()
            for _ in range(50):
                try:
                    s = socket.create_connection((p.host, p.port), timeout=5)
                    if made[0] % 3 == 0:
                        s.recv(64)
                    s.close()
                    made[0] += 1
                except OSError:
                    pass
            left = 0.05 - (time.monotonic() - t0)
            if left > 0:
                time.sleep(left)

    threads = [threading.Thread(target=churn, daemon=True) for _ in range(2)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    try:
        time.sleep(1)
        lat = legit_latency(p.host, p.port, 30)
    finally:
        time.sleep(max(0, 5 - (time.monotonic() - t0)))
        stop.set()
        for t in threads:
            t.join(10)
    rate = made[0] / (time.monotonic() - t0)
    with capsys.disabled():
        print(f"\n  churn {rate:.0f} connections/s: legit greeting median "
              f"{1000 * statistics.median(lat):.1f} ms, max {1000 * max(lat):.1f} ms")
    p.assert_alive()
    assert statistics.median(lat) < 0.5, lat
    world.assert_serving(p)
