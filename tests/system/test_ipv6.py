"""IPv6: outbound delivery to an MX that has only an AAAA record (::1) and a petrel
listener on "[::]" reached over ::1 and over IPv4. Issue 11 "IPv6". Skipped when the
machine has no IPv6 loopback.
"""

import socket
import time

import pytest

from harness import free_port, make_message, msgid_of
from sinks import Sink


def _has_v6_loopback():
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.bind(("::1", 0))
        s.close()
        return True
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not _has_v6_loopback(), reason="no IPv6 loopback")


def test_mx_with_only_aaaa_is_delivered_over_ipv6(world):
    sink = Sink("::1", world.mx_port)
    world.sinks.append(sink)
    sink.start()
    world.dns.add_mx("v6.test", "mx.v6.test", 10)
    world.dns.add_aaaa("mx.v6.test", "::1")
    world.mx_domain("sender.test", "127.0.0.3")
    p = world.petrel()
    data = make_message("alice@sender.test", ["bob@v6.test"], subject="over v6")
    p.send("alice@sender.test", ["bob@v6.test"], data)
    sink.wait_message(msgid_of(data), timeout=20)
    rec = p.wait_record("Delivery", recipient="bob@v6.test")
    assert rec["peer_address"] == "::1", rec


def test_listener_on_all_v6_addresses_accepts_v6_and_v4(world):
    port = free_port()
    dest = world.mx_domain("dest.test", "127.0.0.2")
    world.mx_domain("sender.test", "127.0.0.3")
    p = world.petrel(listener={"listen": f"[::]:{port}"})
    import smtplib
    for host in ("::1", "127.0.0.1"):
        data = make_message("alice@sender.test", ["bob@dest.test"], subject=f"in via {host}")
        with smtplib.SMTP(host, port, timeout=10) as s:
            s.ehlo("client.test")
            s.sendmail("alice@sender.test", ["bob@dest.test"], data)
        dest.wait_message(msgid_of(data), timeout=20)


def _blackhole_v6(port):
    """A socket on [::1]:port whose accept queue is full and never drained: a new
    connect to it gets no answer to its SYN (it hangs), like a host whose IPv6
    path is broken. Returns the sockets to close, or None if the port is taken."""
    ls = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        ls.bind(("::1", port))
    except OSError:
        ls.close()
        return None
    ls.listen(0)
    fillers = []
    for _ in range(8):   # fill the (backlog + 1) queue; later SYNs are dropped
        f = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        f.setblocking(False)
        try:
            f.connect(("::1", port))
        except BlockingIOError:
            pass
        fillers.append(f)
    time.sleep(0.3)
    probe = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    probe.settimeout(0.5)
    try:
        probe.connect(("::1", port))
        hangs = False
    except (socket.timeout, TimeoutError):
        hangs = True
    except OSError:
        hangs = False
    probe.close()
    socks = [ls, *fillers]
    if not hangs:
        for s in socks:
            s.close()
        return None
    return socks


def test_happy_eyeballs_broken_v6_falls_over_to_v4_promptly(world):
    """RFC 8305: the MX has AAAA (tried first) and A; the IPv6 address never answers
    the SYN. The IPv4 attempt starts 250 ms later and wins, long before the
    connect timeout (20 s here) would have moved on."""
    socks = _blackhole_v6(world.mx_port)
    if socks is None:
        pytest.skip("cannot make [::1]:port a blackhole (port taken or SYNs not dropped)")
    try:
        sink = world.sink("127.0.0.2")
        world.dns.add_mx("both.test", "mx.both.test", 10)
        world.dns.add_aaaa("mx.both.test", "::1")
        world.dns.add_a("mx.both.test", "127.0.0.2")
        world.mx_domain("sender.test", "127.0.0.3")
        p = world.petrel(delivery={"connect_timeout": "20s"})
        data = make_message("alice@sender.test", ["bob@both.test"], subject="happy eyeballs")
        t0 = time.monotonic()
        p.send("alice@sender.test", ["bob@both.test"], data)
        sink.wait_message(msgid_of(data), timeout=15)
        took = time.monotonic() - t0
        assert took < 10, f"took {took:.1f} s: waited for the IPv6 connect"
        rec = p.wait_record("Delivery", recipient="bob@both.test")
        assert rec["peer_address"] == "127.0.0.2", rec
    finally:
        for s in socks:
            s.close()


def test_happy_eyeballs_prefers_v6_when_both_work(world):
    v6 = Sink("::1", world.mx_port)
    world.sinks.append(v6)
    v6.start()
    v4 = world.sink("127.0.0.2")
    world.dns.add_mx("both.test", "mx.both.test", 10)
    world.dns.add_a("mx.both.test", "127.0.0.2")
    world.dns.add_aaaa("mx.both.test", "::1")
    world.mx_domain("sender.test", "127.0.0.3")
    p = world.petrel()
    data = make_message("alice@sender.test", ["bob@both.test"], subject="v6 first")
    p.send("alice@sender.test", ["bob@both.test"], data)
    v6.wait_message(msgid_of(data), timeout=20)
    assert not v4.messages()
    rec = p.wait_record("Delivery", recipient="bob@both.test")
    assert rec["peer_address"] == "::1", rec


def test_happy_eyeballs_refused_v6_goes_to_v4(world):
    """Nothing listens on [::1]:port: the refused IPv6 attempt starts IPv4 at once."""
    probe = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        probe.bind(("::1", world.mx_port))
    except OSError:
        pytest.skip("[::1]:port is taken")
    finally:
        probe.close()
    sink = world.sink("127.0.0.2")
    world.dns.add_mx("both.test", "mx.both.test", 10)
    world.dns.add_aaaa("mx.both.test", "::1")
    world.dns.add_a("mx.both.test", "127.0.0.2")
    world.mx_domain("sender.test", "127.0.0.3")
    p = world.petrel()
    data = make_message("alice@sender.test", ["bob@both.test"], subject="refused v6")
    p.send("alice@sender.test", ["bob@both.test"], data)
    sink.wait_message(msgid_of(data), timeout=20)
    assert p.wait_record("Delivery", recipient="bob@both.test")["peer_address"] == "127.0.0.2"
