"""DANE for SMTP (RFC 7672) outbound: `configure_delivery { dane = true }`, TLSA
`_PORT._tcp.MXHOST` from the fake DNS (the configured resolver) with the AD bit on or
off, TLS sinks presenting a matching or non-matching certificate. Issue 11 "Outbound
policy", "Bad input"; DESIGN §12.
"""

import re
import subprocess

import pytest

from certs import PKI
from harness import make_message, msgid_of
from tls_sinks import tls_mx_domain


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return PKI(tmp_path_factory.mktemp("pki-dane"))


def spki_sha256(cert):
    pub = subprocess.run(["openssl", "x509", "-in", cert, "-noout", "-pubkey"],
                         check=True, capture_output=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=pub,
                         check=True, capture_output=True).stdout
    import hashlib
    return hashlib.sha256(der).digest()


def send(p, rcpt):
    data = make_message("alice@sender.test", [rcpt], subject=f"dane to {rcpt}")
    p.send("alice@sender.test", [rcpt], data)
    return msgid_of(data)


def dane_world(world, pki, tlsa=None, ad=True, plain=False):
    """dest.test MX mx.dest.test -> a TLS sink with a self-signed cert (or a plain
    sink); tlsa: list of (usage, selector, mtype, data) or a callable(cert)."""
    cert, key = pki.self_signed("mx.dest.test")
    if plain:
        dest = world.mx_domain("dest.test", "127.0.0.2")
    else:
        dest = tls_mx_domain(world, "dest.test", tls_context=pki.server_context(cert, key))
    name = f"_{world.mx_port}._tcp.mx.dest.test"
    for rec in (tlsa(cert) if callable(tlsa) else tlsa or []):
        world.dns.add_tlsa(name, *rec)
    world.dns.ad = ad
    world.mx_domain("sender.test", "127.0.0.3")
    p = world.petrel(delivery={"dane": True, "mta_sts": False})
    return p, dest


def assert_deferred(p, sink, rcpt, word=None, n=2):
    recs = p.wait_records("TransientFailure", n, timeout=30, recipient=rcpt)
    if word:
        assert any(re.search(word, r["response"] or "", re.I) for r in recs), \
            [r["response"] for r in recs]
    assert not p.records("Delivery", recipient=rcpt)
    assert not sink.for_rcpt(rcpt), "delivered despite DANE"
    return recs


def test_matching_dane_ee_delivers_over_tls(world, pki):
    p, dest = dane_world(world, pki, lambda cert: [(3, 1, 1, spki_sha256(cert))])
    mid = send(p, "ok@dest.test")
    t = dest.wait_message(mid, timeout=20)
    assert t.tls is not None
    assert world.dns.queried(f"_{world.mx_port}._tcp.mx.dest.test", "TLSA")


def test_non_matching_tlsa_defers_never_plaintext(world, pki):
    p, dest = dane_world(world, pki, [(3, 1, 1, b"\x01" * 32)])
    send(p, "mismatch@dest.test")
    assert_deferred(p, dest, "mismatch@dest.test", r"verif|DANE|TLSA")


def test_without_ad_dane_does_not_apply(world, pki):
    """The same wrong TLSA, but the answer is not authenticated: opportunistic TLS."""
    p, dest = dane_world(world, pki, [(3, 1, 1, b"\x01" * 32)], ad=False)
    mid = send(p, "insecure@dest.test")
    dest.wait_message(mid, timeout=20)


def test_unusable_tlsa_means_mandatory_tls(world, pki):
    """RFC 7672 §2.2: a secure TLSA RRset with only unusable records (PKIX-EE, an
    unknown usage): TLS is still required, so a hop without STARTTLS defers."""
    p, dest = dane_world(world, pki, [(1, 1, 1, b"\x02" * 32), (7, 0, 0, b"\x03" * 8)], plain=True)
    send(p, "unusable@dest.test")
    assert_deferred(p, dest, "unusable@dest.test", r"STARTTLS")


def test_unusable_tlsa_tls_without_authentication_delivers(world, pki):
    p, dest = dane_world(world, pki, [(1, 1, 1, b"\x02" * 32)])
    mid = send(p, "unusable-tls@dest.test")
    t = dest.wait_message(mid, timeout=20)
    assert t.tls is not None


def test_tlsa_lookup_failure_defers(world, pki):
    p, dest = dane_world(world, pki, [(3, 1, 1, b"\x01" * 32)])
    world.dns.set_mode(f"_{world.mx_port}._tcp.mx.dest.test", "servfail", "TLSA")
    send(p, "servfail@dest.test")
    assert_deferred(p, dest, "servfail@dest.test", r"DANE")


def test_insecure_mx_answer_means_no_dane(world, pki):
    """RFC 7672 §2.2.1: the TLSA answer is authenticated (AD) but the MX RRset is
    not: DANE does not apply to that MX, so a non-matching TLSA does not defer and
    the TLSA record is not even asked; delivery goes on with opportunistic TLS."""
    p, dest = dane_world(world, pki, [(3, 1, 1, b"\x01" * 32)])
    world.dns.set_insecure("MX", "dest.test")
    mid = send(p, "insecure-mx@dest.test")
    t = dest.wait_message(mid, timeout=20)
    assert t.tls is not None          # opportunistic TLS still used
    assert not world.dns.queried(f"_{world.mx_port}._tcp.mx.dest.test", "TLSA")


def test_insecure_mx_plain_hop_delivers_in_clear(world, pki):
    """The same with a hop that has no STARTTLS and an unusable-but-secure TLSA set
    (which under DANE would mean mandatory TLS): without an authenticated MX answer
    the message is delivered in clear, as under the route's tls = "may"; with the
    MX answer authenticated it would defer (test_unusable_tlsa_means_mandatory_tls)."""
    p, dest = dane_world(world, pki, [(1, 1, 1, b"\x02" * 32)], plain=True)
    world.dns.set_insecure("MX")
    mid = send(p, "insecure-plain@dest.test")
    dest.wait_message(mid, timeout=20)
    rec = p.wait_record("Delivery", recipient="insecure-plain@dest.test")
    assert "tls" in rec and rec["tls"] is None, rec
