"""Every delivery attempt's outcome names the host it actually tried (issue 9,
delivery wing): a refused connection to an MX is a TransientFailure record with
its site and peer_address, and a line in the diagnostic log (DESIGN §6 Log)."""

from harness import check_record_keys, make_message, msgid_of


def test_refused_mx_connection_is_logged_with_site_and_peer(world):
    world.mx_domain("dest.test", "127.0.0.2", sink=False)      # nothing listens there
    p = world.petrel()
    data = make_message("alice@sender.test", ["bob@dest.test"])
    p.send("alice@sender.test", ["bob@dest.test"], data)
    rec = p.wait_record("TransientFailure", recipient="bob@dest.test")
    check_record_keys(rec)
    assert rec["site"] == f"mx.dest.test:{world.mx_port}", rec
    assert rec["peer_address"] == "127.0.0.2", rec
    assert rec["tls"] is None and rec["queue"] == "dest.test", rec
    assert "refused" in (rec["response"] or "").lower(), rec
    lines = [ln for ln in p.stderr_text().splitlines()
             if f"mx.dest.test:{world.mx_port}" in ln and "127.0.0.2" in ln
             and "connection refused" in ln.lower()]
    assert lines, "the diagnostic log should name the refused connection"
    assert msgid_of(data)


import pytest  # noqa: E402

from certs import PKI  # noqa: E402
from tls_sinks import tls_sink  # noqa: E402


def test_failed_auth_over_tls_names_the_tls(world, tmp_path):
    pki = PKI(tmp_path / "pki")
    rp = world.other_port()
    world.dns.add_a("relay.test", "127.0.0.6")
    relay = tls_sink(world, "127.0.0.6", rp, tls_context=pki.server_context(*pki.leaf("relay.test")),
                     users={"u": "right"}, auth_required=True)
    p = world.petrel(delivery={"relayhost": f"[relay.test]:{rp}",
                               "auth": {"username": "u", "password": "wrong"}})
    p.send("alice@sender.test", ["x@any.test"], make_message("alice@sender.test", ["x@any.test"]))
    rec = p.wait_record("TransientFailure", recipient="x@any.test", timeout=20)
    assert not relay.messages()
    assert rec["tls"] is not None, f"the attempt went over TLS, the record says {rec}"
