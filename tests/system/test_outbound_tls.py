"""Outbound TLS and SASL: configure_delivery / configure_transport `tls` = may |
encrypt | verify with `ca_file`, a next hop that offers STARTTLS and then breaks the
handshake, certificates for the wrong name or self-signed under verify, and AUTH to a
relayhost with `auth = { username, password }`. Issue 3 "Outbound", "Bad input";
DESIGN §4 configure_delivery, configure_transport; §6 Log (`tls`).

Next hops are aiosmtpd sinks with STARTTLS/AUTH (tls_sinks.TLSSink); certificates are
made at run time by certs.PKI.
"""

import re
import time

import pytest

from certs import PKI
from harness import check_record_keys, make_message, msgid_of, site_host
from tls_sinks import tls_mx_domain, tls_sink

TLS_FIELD_RE = re.compile(r"^TLSv1\.[23]:[A-Za-z0-9_-]+$")
CERT_WORDS = re.compile(r"certif|verif|x509|hostname|host name|name mismatch|self.signed|"
                        r"issuer|trust", re.I)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return PKI(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def certs_for(pki):
    """Cached (cert, key) per (kind, name): kind "ca" (issued by the test CA) or
    "self" (self-signed)."""
    cache = {}

    def get(name, kind="ca"):
        if (kind, name) not in cache:
            cache[(kind, name)] = pki.leaf(name) if kind == "ca" else pki.self_signed(name)
        return cache[(kind, name)]
    return get


def server_ctx(pki, certs_for, name, kind="ca"):
    return pki.server_context(*certs_for(name, kind))


def send(p, rcpt, sender="alice@sender.test"):
    data = make_message(sender, [rcpt], subject=f"outbound tls to {rcpt}")
    p.send(sender, [rcpt], data)
    return msgid_of(data)


def assert_delivered_over_tls(p, sink, mid, rcpt):
    t = sink.wait_message(mid)
    assert t.tls is not None, f"{sink} received the message in clear"
    rec = p.wait_record("Delivery", recipient=rcpt)
    check_record_keys(rec)
    assert rec["tls"] is not None, f"Delivery over TLS logged tls null: {rec}"
    assert TLS_FIELD_RE.match(rec["tls"]), f"tls should be 'PROTOCOL:CIPHER': {rec['tls']!r}"
    assert rec["tls"] == t.tls, f"Delivery record says {rec['tls']!r}, the sink saw {t.tls!r}"
    return t, rec


def assert_deferred_not_delivered(p, sink, rcpt, n=2, words=None, timeout=20):
    """At least n TransientFailure records for rcpt (it stays queued and is retried),
    no Delivery/Bounce, nothing at the sink. Returns the records."""
    recs = p.wait_records("TransientFailure", n, timeout=timeout, recipient=rcpt)
    for r in recs:
        check_record_keys(r)
    if words is not None:
        assert any(words.search(r["response"] or "") for r in recs), \
            f"TransientFailure responses should say why ({words.pattern}): " \
            f"{[r['response'] for r in recs]}"
    assert not p.records("Delivery", recipient=rcpt), p.records("Delivery", recipient=rcpt)
    assert not p.records("Bounce", recipient=rcpt), p.records("Bounce", recipient=rcpt)
    assert not sink.for_rcpt(rcpt), f"delivered despite the TLS policy: {sink.for_rcpt(rcpt)}"
    return recs


# ---------------------------------------------------------------- tls = "may"

def test_may_uses_starttls_when_offered(world, pki, certs_for):
    dest = tls_mx_domain(world, "dest.test", tls_context=server_ctx(pki, certs_for, "mx.dest.test"))
    world.mx_domain("sender.test", "127.0.0.3")
    p = world.petrel()                                   # tls = "may" is the default
    mid = send(p, "may@dest.test")
    assert_delivered_over_tls(p, dest, mid, "may@dest.test")


def test_may_self_signed_and_wrong_name_still_used(world, pki, certs_for):
    """Opportunistic TLS does not verify: a self-signed cert for another name is fine."""
    dest = tls_mx_domain(world, "dest.test",
                         tls_context=server_ctx(pki, certs_for, "elsewhere.test", "self"))
    p = world.petrel(delivery={"tls": "may"})
    mid = send(p, "may-self@dest.test")
    assert_delivered_over_tls(p, dest, mid, "may-self@dest.test")


def test_may_without_starttls_delivers_in_clear(world):
    dest = world.mx_domain("dest.test", "127.0.0.2")      # plain sink, no STARTTLS
    p = world.petrel()
    mid = send(p, "plain@dest.test")
    dest.wait_message(mid)
    rec = p.wait_record("Delivery", recipient="plain@dest.test")
    check_record_keys(rec)
    assert rec["tls"] is None, f"Delivery in clear should log tls null: {rec}"


@pytest.mark.parametrize("broken", ["garbage", "alert", "close"])
def test_may_broken_starttls_falls_back_to_clear(world, broken):
    """A next hop that offers STARTTLS, says 220 and then breaks the handshake: under
    "may" petrel retries that host without TLS and the message gets through."""
    dest = tls_mx_domain(world, "dest.test", broken_starttls=broken)
    p = world.petrel()
    mid = send(p, f"fallback-{broken}@dest.test")
    t = dest.wait_message(mid, timeout=20)
    assert dest.starttls_attempts >= 1, "petrel never tried STARTTLS although it was offered"
    assert t.tls is None
    rec = p.wait_record("Delivery", recipient=f"fallback-{broken}@dest.test")
    check_record_keys(rec)
    assert rec["tls"] is None, f"fallback delivery in clear must log tls null: {rec}"
    assert len(dest.find(mid)) == 1, f"delivered more than once: {dest.find(mid)}"
    p.assert_alive()


# ---------------------------------------------------------------- tls = "encrypt"

def test_encrypt_without_starttls_defers_then_delivers_when_tls_appears(world, pki, certs_for):
    ip = "127.0.0.2"
    world.dns.add_mx("dest.test", "mx.dest.test", 10)
    world.dns.add_a("mx.dest.test", ip)
    plain = world.sink(ip)                                  # no STARTTLS
    p = world.petrel(delivery={"tls": "encrypt"})
    mid = send(p, "enc@dest.test")
    assert_deferred_not_delivered(p, plain, "enc@dest.test", n=2)
    # The message stayed queued: once the hop offers TLS it is delivered.
    plain.stop()
    tls = tls_sink(world, ip, tls_context=server_ctx(pki, certs_for, "mx.dest.test", "self"))
    assert_delivered_over_tls(p, tls, mid, "enc@dest.test")
    assert not plain.messages()


def test_encrypt_self_signed_delivered(world, pki, certs_for):
    dest = tls_mx_domain(world, "dest.test",
                         tls_context=server_ctx(pki, certs_for, "mx.dest.test", "self"))
    p = world.petrel(delivery={"tls": "encrypt"})
    mid = send(p, "enc-self@dest.test")
    assert_delivered_over_tls(p, dest, mid, "enc-self@dest.test")


@pytest.mark.parametrize("broken", ["garbage", "close"])
def test_encrypt_broken_starttls_never_falls_back(world, broken):
    dest = tls_mx_domain(world, "dest.test", broken_starttls=broken)
    p = world.petrel(delivery={"tls": "encrypt"})
    send(p, "enc-broken@dest.test")
    assert_deferred_not_delivered(p, dest, "enc-broken@dest.test", n=2)
    assert dest.starttls_attempts >= 1


# ---------------------------------------------------------------- tls = "verify"

def verify_delivery(pki, **kw):
    d = {"tls": "verify", "ca_file": pki.ca_file}
    d.update(kw)
    return d


def test_verify_right_name_delivered(world, pki, certs_for):
    dest = tls_mx_domain(world, "dest.test", tls_context=server_ctx(pki, certs_for, "mx.dest.test"))
    p = world.petrel(delivery=verify_delivery(pki))
    mid = send(p, "ver@dest.test")
    _, rec = assert_delivered_over_tls(p, dest, mid, "ver@dest.test")
    assert site_host(rec["site"])[0] == "mx.dest.test", rec


def test_verify_checks_mx_name_not_domain(world, pki, certs_for):
    """The certificate names the MX host (mx1.other-provider.test), not the recipient
    domain: that is what verify checks."""
    dest = tls_mx_domain(world, "dest.test", mx_name="mx1.other-provider.test",
                         tls_context=server_ctx(pki, certs_for, "mx1.other-provider.test"))
    p = world.petrel(delivery=verify_delivery(pki))
    mid = send(p, "vermx@dest.test")
    assert_delivered_over_tls(p, dest, mid, "vermx@dest.test")


def test_verify_wrong_name_defers(world, pki, certs_for):
    dest = tls_mx_domain(world, "dest.test",
                         tls_context=server_ctx(pki, certs_for, "wrong-name.test"))
    p = world.petrel(delivery=verify_delivery(pki))
    send(p, "vername@dest.test")
    assert_deferred_not_delivered(p, dest, "vername@dest.test", n=2, words=CERT_WORDS)
    p.assert_alive()


def test_verify_cert_for_recipient_domain_not_mx_defers(world, pki, certs_for):
    """A cert for dest.test while the MX is mx.dest.test: the MX name is checked."""
    dest = tls_mx_domain(world, "dest.test", tls_context=server_ctx(pki, certs_for, "dest.test"))
    p = world.petrel(delivery=verify_delivery(pki))
    send(p, "verdom@dest.test")
    assert_deferred_not_delivered(p, dest, "verdom@dest.test", n=1, words=CERT_WORDS)


def test_verify_self_signed_defers(world, pki, certs_for):
    dest = tls_mx_domain(world, "dest.test",
                         tls_context=server_ctx(pki, certs_for, "mx.dest.test", "self"))
    p = world.petrel(delivery=verify_delivery(pki))
    send(p, "verself@dest.test")
    assert_deferred_not_delivered(p, dest, "verself@dest.test", n=2, words=CERT_WORDS)


def test_verify_without_ca_file_rejects_private_ca(world, pki, certs_for):
    """Without ca_file the system store is used: our private CA is not in it."""
    dest = tls_mx_domain(world, "dest.test", tls_context=server_ctx(pki, certs_for, "mx.dest.test"))
    p = world.petrel(delivery={"tls": "verify"})
    send(p, "versys@dest.test")
    assert_deferred_not_delivered(p, dest, "versys@dest.test", n=1, words=CERT_WORDS)


def test_verify_without_starttls_defers(world, pki):
    dest = world.mx_domain("dest.test", "127.0.0.2")        # no STARTTLS
    p = world.petrel(delivery=verify_delivery(pki))
    send(p, "vernotls@dest.test")
    assert_deferred_not_delivered(p, dest, "vernotls@dest.test", n=2)


def test_verify_relayhost_name(world, pki, certs_for):
    rp = world.other_port()
    world.dns.add_a("relay.test", "127.0.0.6")
    relay = tls_sink(world, "127.0.0.6", rp, tls_context=server_ctx(pki, certs_for, "relay.test"))
    p = world.petrel(delivery=verify_delivery(pki, relayhost=f"[relay.test]:{rp}"))
    mid = send(p, "someone@anywhere.test")
    _, rec = assert_delivered_over_tls(p, relay, mid, "someone@anywhere.test")
    assert site_host(rec["site"]) == ("relay.test", rp), rec


def test_verify_relayhost_wrong_name_defers(world, pki, certs_for):
    rp = world.other_port()
    world.dns.add_a("relay.test", "127.0.0.6")
    relay = tls_sink(world, "127.0.0.6", rp,
                     tls_context=server_ctx(pki, certs_for, "not-the-relay.test"))
    p = world.petrel(delivery=verify_delivery(pki, relayhost=f"[relay.test]:{rp}"))
    send(p, "someone@anywhere.test")
    assert_deferred_not_delivered(p, relay, "someone@anywhere.test", n=2, words=CERT_WORDS)


# ---------------------------------------------------------------- per-route policy

def test_transport_route_tls_policy(world, pki, certs_for):
    """configure_transport route tables take tls/ca_file: the route's policy applies to
    its domain only; other mail keeps the default ("may")."""
    rp = world.other_port()
    world.dns.add_a("secure-relay.test", "127.0.0.7")
    secure = tls_sink(world, "127.0.0.7", rp,
                      tls_context=server_ctx(pki, certs_for, "secure-relay.test"))
    plain_route_port = world.other_port()
    plain_relay = world.sink("127.0.0.6", plain_route_port)      # no STARTTLS
    other = world.mx_domain("other.test", "127.0.0.2")            # no STARTTLS, default may
    p = world.petrel(transport={
        "secure.test": {"relayhost": f"[secure-relay.test]:{rp}", "tls": "verify",
                        "ca_file": pki.ca_file},
        "strict.test": {"relayhost": f"[127.0.0.6]:{plain_route_port}", "tls": "encrypt"},
    })
    mid = send(p, "a@secure.test")
    assert_delivered_over_tls(p, secure, mid, "a@secure.test")
    send(p, "b@strict.test")
    mid_other = send(p, "c@other.test")
    other.wait_message(mid_other)
    assert p.wait_record("Delivery", recipient="c@other.test")["tls"] is None
    assert_deferred_not_delivered(p, plain_relay, "b@strict.test", n=2)


def test_transport_route_verify_wrong_name_defers(world, pki, certs_for):
    rp = world.other_port()
    world.dns.add_a("secure-relay.test", "127.0.0.7")
    secure = tls_sink(world, "127.0.0.7", rp, tls_context=server_ctx(pki, certs_for, "evil.test"))
    p = world.petrel(transport={
        "secure.test": {"relayhost": f"[secure-relay.test]:{rp}", "tls": "verify",
                        "ca_file": pki.ca_file},
    })
    send(p, "a@secure.test")
    assert_deferred_not_delivered(p, secure, "a@secure.test", n=1, words=CERT_WORDS)


# ---------------------------------------------------------------- SASL to a relayhost

RELAY_USERS = {"relayuser": "Relay-pw-42"}


def auth_relay(world, pki, certs_for, name="relay.test", ip="127.0.0.6", **kw):
    rp = world.other_port()
    world.dns.add_a(name, ip)
    kw.setdefault("tls_context", server_ctx(pki, certs_for, name))
    relay = tls_sink(world, ip, rp, users=RELAY_USERS, auth_required=True, **kw)
    return relay, f"[{name}]:{rp}"


def test_relayhost_auth_success(world, pki, certs_for):
    relay, hop = auth_relay(world, pki, certs_for, require_starttls=True)
    p = world.petrel(delivery={"relayhost": hop,
                               "auth": {"username": "relayuser", "password": "Relay-pw-42"}})
    mid = send(p, "x@anywhere.test")
    t, rec = assert_delivered_over_tls(p, relay, mid, "x@anywhere.test")
    assert t.auth_user == "relayuser", f"the relay saw AUTH user {t.auth_user!r}"
    assert relay.auth_attempts and all(a[3] for a in relay.auth_attempts), relay.auth_attempts


def test_relayhost_auth_with_verify(world, pki, certs_for):
    relay, hop = auth_relay(world, pki, certs_for, require_starttls=True)
    p = world.petrel(delivery={"relayhost": hop, "tls": "verify", "ca_file": pki.ca_file,
                               "auth": {"username": "relayuser", "password": "Relay-pw-42"}})
    mid = send(p, "y@anywhere.test")
    t, _ = assert_delivered_over_tls(p, relay, mid, "y@anywhere.test")
    assert t.auth_user == "relayuser"


def test_relayhost_auth_password_file(world, pki, certs_for, tmp_path):
    pw = tmp_path / "relay.pw"
    pw.write_text("Relay-pw-42\n")
    relay, hop = auth_relay(world, pki, certs_for)
    p = world.petrel(delivery={"relayhost": hop,
                               "auth": {"username": "relayuser", "password_file": str(pw)}})
    mid = send(p, "pf@anywhere.test")
    t, _ = assert_delivered_over_tls(p, relay, mid, "pf@anywhere.test")
    assert t.auth_user == "relayuser"


def test_relayhost_auth_wrong_password_not_delivered(world, pki, certs_for):
    relay, hop = auth_relay(world, pki, certs_for)
    p = world.petrel(delivery={"relayhost": hop,
                               "auth": {"username": "relayuser", "password": "wrong"}})
    send(p, "z@anywhere.test")

    def outcome():
        return (p.records("TransientFailure", recipient="z@anywhere.test")
                or p.records("Bounce", recipient="z@anywhere.test"))
    from harness import wait_for
    recs = wait_for(outcome, 20, "a TransientFailure or Bounce after the relay's 535")
    check_record_keys(recs[0])
    assert recs[0]["code"] in (535, 530) or "535" in (recs[0]["response"] or ""), \
        f"the record should carry the relay's AUTH refusal: {recs[0]}"
    time.sleep(2.5)                                           # a retry or two
    assert not relay.messages(), f"delivered without authenticating: {relay.messages()}"
    assert not p.records("Delivery", recipient="z@anywhere.test")
    assert relay.auth_attempts and not any(a[3] for a in relay.auth_attempts), \
        relay.auth_attempts
    p.assert_alive()


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_auth_credentials_never_sent_in_clear(world, pki, certs_for):
    """The relay offers AUTH without STARTTLS: petrel must not send the password in
    clear (issue 3: SASL only over TLS unless the route says otherwise)."""
    rp = world.other_port()
    relay = tls_sink(world, "127.0.0.6", rp, users=RELAY_USERS, auth_required=True,
                     auth_require_tls=False)                 # no tls_context: no STARTTLS
    p = world.petrel(delivery={"relayhost": f"[127.0.0.6]:{rp}",
                               "auth": {"username": "relayuser", "password": "Relay-pw-42"}})
    send(p, "clear@anywhere.test")

    def outcome():
        return (p.records("TransientFailure", recipient="clear@anywhere.test")
                or p.records("Bounce", recipient="clear@anywhere.test")
                or p.records("Delivery", recipient="clear@anywhere.test"))
    from harness import wait_for
    wait_for(outcome, 20, "an outcome for the delivery to a relay without TLS")
    time.sleep(1.5)
    assert not relay.auth_attempts, f"petrel sent credentials in clear: {relay.auth_attempts}"
    assert not relay.messages()


def test_transport_route_auth(world, pki, certs_for):
    relay, hop = auth_relay(world, pki, certs_for, name="smarthost.test", ip="127.0.0.7",
                            require_starttls=True)
    other = world.mx_domain("other.test", "127.0.0.2")
    p = world.petrel(transport={
        "routed.test": {"relayhost": hop, "tls": "encrypt",
                        "auth": {"username": "relayuser", "password": "Relay-pw-42"}},
    })
    mid = send(p, "r@routed.test")
    t, _ = assert_delivered_over_tls(p, relay, mid, "r@routed.test")
    assert t.auth_user == "relayuser"
    # Mail for other domains does not go there nor carry the credentials.
    mid2 = send(p, "o@other.test")
    other.wait_message(mid2)
    assert len(relay.auth_attempts) == 1, relay.auth_attempts
