"""IPv6: outbound delivery to an MX that has only an AAAA record (::1) and a petrel
listener on "[::]" reached over ::1 and over IPv4. Issue 11 "IPv6". Skipped when the
machine has no IPv6 loopback.
"""

import socket

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
