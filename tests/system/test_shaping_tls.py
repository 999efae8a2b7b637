"""Traffic shaping rules' `tls` option (issue 12, DESIGN §9): the most specific rule's
level (domain, then site, then default) replaces the route's for MX deliveries; bad
values are `--check` errors at FILE:LINE.

Sinks with STARTTLS are tls_sinks.TLSSink; certificates are made by certs.PKI.
"""

import pytest

from certs import PKI
from harness import run_petrel
from test_http import http_petrel
from test_mta_sts import assert_deferred, policy, sts  # noqa: F401 (sts is a fixture)
from test_outbound_tls import (CERT_WORDS, assert_delivered_over_tls,
                               assert_deferred_not_delivered, send)
from test_shaping import api_queue, shaping
from tls_sinks import tls_mx_domain


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return PKI(tmp_path_factory.mktemp("pki"))


def test_domain_rule_encrypt_defers_plain_hop_other_domain_in_clear(world):
    """A domain rule tls = "encrypt": its hop without STARTTLS is deferred (4xx, never
    in clear); another domain without a rule goes in clear (the route's "may")."""
    strict = world.mx_domain("strict.test")          # plain sinks, no STARTTLS
    loose = world.mx_domain("loose.test")
    world.mx_domain("sender.test", "127.0.0.3")
    p, (url,) = http_petrel(world, extra=shaping({"strict.test": {"tls": "encrypt"}}))
    send(p, "x@strict.test")
    mid = send(p, "y@loose.test")
    loose.wait_message(mid)                          # a sink without STARTTLS: in clear
    assert p.wait_record("Delivery", recipient="y@loose.test")["tls"] is None
    recs = assert_deferred_not_delivered(p, strict, "x@strict.test", n=1)
    assert all(str(r["code"]).startswith("4") for r in recs if r.get("code")), recs
    q = api_queue(url, "strict.test")
    assert q is not None and q["shaping"]["tls"] == "encrypt", q
    q = api_queue(url, "loose.test")
    assert q is None or q["shaping"] is None or q["shaping"]["tls"] is None, q
    p.assert_alive()


def test_domain_rule_may_lowers_route_encrypt(world):
    """configure_delivery tls = "encrypt" with a domain rule tls = "may": that domain
    (no TLS policy published) is delivered in clear, the others still need TLS."""
    lowered = world.mx_domain("lowered.test")
    strict = world.mx_domain("strict.test")
    world.mx_domain("sender.test", "127.0.0.3")
    p = world.petrel(delivery={"tls": "encrypt"},
                     extra=shaping({"lowered.test": {"tls": "may"}}))
    mid = send(p, "a@lowered.test")
    send(p, "b@strict.test")
    lowered.wait_message(mid)                        # a sink without STARTTLS: in clear
    assert p.wait_record("Delivery", recipient="a@lowered.test")["tls"] is None
    assert_deferred_not_delivered(p, strict, "b@strict.test", n=1)


def test_rule_may_never_weakens_mta_sts_enforce(world, pki, sts):  # noqa: F811
    """A rule tls = "may" for a domain whose MTA-STS policy is enforce: its hop
    without STARTTLS is still deferred, never sent in clear."""
    sts("dest.test").serve(policy("enforce", "mx.dest.test"))
    dest = world.mx_domain("dest.test", "127.0.0.2")     # plain sink, no STARTTLS
    world.mx_domain("sender.test", "127.0.0.3")
    p = world.petrel(delivery={"ca_file": pki.ca_file},
                     extra=shaping({"dest.test": {"tls": "may"}}))
    send(p, "plain@dest.test")
    assert_deferred(p, dest, "plain@dest.test", "STARTTLS")


def test_site_rule_verify_trusted_delivers_untrusted_defers(world, pki):
    """A site rule tls = "verify" over *.big.example: a hop whose certificate is
    issued by the CA in configure_delivery's ca_file delivers over TLS; a self-signed
    one defers. The same self-signed hop outside the site is used (the route's
    "may")."""
    good = tls_mx_domain(world, "good.test", mx_name="mx1.big.example",
                         tls_context=pki.server_context(*pki.leaf("mx1.big.example")))
    bad = tls_mx_domain(world, "bad.test", mx_name="mx2.big.example",
                        tls_context=pki.server_context(*pki.self_signed("mx2.big.example")))
    free = tls_mx_domain(world, "free.test", mx_name="mx.free.test",
                         tls_context=pki.server_context(*pki.self_signed("mx.free.test")))
    world.mx_domain("sender.test", "127.0.0.3")
    p = world.petrel(delivery={"ca_file": pki.ca_file},
                     extra=shaping({"site:*.big.example": {"tls": "verify"}}))
    mid = send(p, "g@good.test")
    send(p, "b@bad.test")
    mid_free = send(p, "f@free.test")
    assert_delivered_over_tls(p, good, mid, "g@good.test")
    assert_delivered_over_tls(p, free, mid_free, "f@free.test")
    assert_deferred_not_delivered(p, bad, "b@bad.test", n=1, words=CERT_WORDS)


def test_check_refuses_bad_rule_tls(tmp_path):
    for val, want in (('"sometimes"', "'x.test.tls' must be"), ("3", "'x.test.tls' must be"),
                      ('"none"', "'x.test.tls' must be")):
        f = tmp_path / "bad.lua"
        f.write_text("-- line 1\npetrel.configure_shaping {\n  [\"x.test\"] = { tls = "
                     + val + " },\n}\n")
        r = run_petrel("--check", "-c", str(f))
        err = r.stderr.decode()
        assert r.returncode == 1, (val, r.stdout, err)
        assert err.startswith(f"{f}:") and want in err and '"verify"' in err, (val, err)
    good = tmp_path / "good.lua"
    good.write_text('petrel.configure_shaping { default = { tls = "encrypt" }, '
                    '["site:*.google.com"] = { tls = "verify" }, ["x.test"] = { tls = "may" } }\n')
    r = run_petrel("--check", "-c", str(good))
    assert r.returncode == 0 and b"config ok" in r.stdout, r.stderr
