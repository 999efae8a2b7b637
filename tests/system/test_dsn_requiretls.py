"""REQUIRETLS (RFC 8689, issue 11): `MAIL FROM ... REQUIRETLS` is accepted only over
TLS (530 in clear) and advertised only after STARTTLS; such a message goes out only
over TLS with a verified certificate to a hop that offers REQUIRETLS (the parameter
is passed on), whatever the route's tls says; otherwise it bounces with 5.7.30. A
`TLS-Required: No` header (RFC 8689 5) lets a message through a route whose TLS
cannot be verified.

The next hops are aiosmtpd TLS sinks (tls_sinks.TLSSink) that may also offer
REQUIRETLS; certificates come from certs.PKI.
"""

import smtplib

import pytest

from certs import PKI, listener_tls
from harness import make_message, msgid_of, parse_dsn, wait_for
from sinks import _Controller  # noqa: F401  (the base the controller below extends)
from tls_sinks import TLSSink, _TLSController, _TLSHandler, _TLSRecordingSMTP


class _RTLSSMTP(_TLSRecordingSMTP):
    def _getparams(self, params):
        d = super()._getparams(params)
        if d is not None and self._sink.offer_requiretls:
            d.pop("REQUIRETLS", None)      # accepted; kept in envelope.mail_options
        return d


class _RTLSHandler(_TLSHandler):
    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        responses = await super().handle_EHLO(server, session, envelope, hostname, responses)
        if self.sink.offer_requiretls and getattr(session, "ssl", None):
            responses.insert(len(responses) - 1, "250-REQUIRETLS")
        return responses


class _RTLSController(_TLSController):
    def factory(self):
        return _RTLSSMTP(self._sink, self.handler, **self.SMTP_kwargs)


class RequireTLSSink(TLSSink):
    """A TLSSink that offers REQUIRETLS after STARTTLS (offer_requiretls)."""

    def __init__(self, ip, port, offer_requiretls=True, **kw):
        super().__init__(ip, port, **kw)
        self.offer_requiretls = offer_requiretls

    def start(self):
        kw = dict(hostname=self.ip, port=self.port, server_hostname=self.name,
                  ready_timeout=5, enable_SMTPUTF8=True, tls_context=self.tls_context)
        self._ctl = _RTLSController(self, _RTLSHandler(self), **kw)
        self._ctl.start()
        return self


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return PKI(tmp_path_factory.mktemp("pki"))


def hop(world, pki, domain, self_signed=False, **kw):
    ip = world.new_ip()
    name = f"mx.{domain}"
    world.dns.add_mx(domain, name, 10)
    world.dns.add_a(name, ip)
    cert = pki.self_signed(name) if self_signed else pki.leaf(name)
    s = RequireTLSSink(ip, world.mx_port, tls_context=pki.server_context(*cert), **kw)
    world.sinks.append(s)
    return s.start()


def tls_petrel(world, pki, **cfg):
    delivery = {"ca_file": pki.ca_file}
    delivery.update(cfg.pop("delivery", {}))
    return world.petrel(listener={"tls": listener_tls(pki)}, delivery=delivery, **cfg)


def send_requiretls(p, pki, rcpt, data, sender="alice@sender.test"):
    s = p.smtp()
    try:
        s.starttls(context=pki.client_context())
        s.ehlo()
        assert s.has_extn("requiretls"), s.esmtp_features
        code, resp = s.mail(sender, ["REQUIRETLS"])
        assert code == 250, (code, resp)
        code, resp = s.rcpt(rcpt)
        assert code == 250, (code, resp)
        code, resp = s.data(data)
        assert code == 250, (code, resp)
    finally:
        s.quit()


def dsns(sink):
    return [t for t in sink.messages() if t.mail_from == ""]


def test_requiretls_refused_in_clear_and_offered_only_in_tls(world, pki):
    p = tls_petrel(world, pki)
    s = p.smtp()
    try:
        assert not s.has_extn("requiretls")
        code, resp = s.mail("alice@sender.test", ["REQUIRETLS"])
        assert code == 530 and resp.startswith(b"5.7."), (code, resp)
        s.rset()
    finally:
        s.quit()


def test_requiretls_delivered_over_verified_tls_and_passed_on(world, pki):
    world.mx_domain("sender.test", "127.0.0.3")
    dest = hop(world, pki, "dest.test")
    p = tls_petrel(world, pki)     # the route's tls is the default "may"
    data = make_message(to=["bob@dest.test"], subject="requiretls ok")
    send_requiretls(p, pki, "bob@dest.test", data)
    t = dest.wait_message(msgid_of(data))
    assert t.tls, "delivered in clear"
    assert "REQUIRETLS" in t.mail_options, t.mail_options


@pytest.mark.parametrize("case", ["unverified", "no-requiretls"])
def test_requiretls_bounces_with_5_7_30(world, pki, case):
    sender = world.mx_domain("sender.test", "127.0.0.3")
    dest = hop(world, pki, "dest.test", self_signed=(case == "unverified"),
               offer_requiretls=(case != "no-requiretls"))
    p = tls_petrel(world, pki)
    data = make_message(to=["bob@dest.test"], subject=f"requiretls {case}")
    send_requiretls(p, pki, "bob@dest.test", data)
    rec = p.wait_record("Bounce", recipient="bob@dest.test", timeout=20)
    assert rec["code"] == 550 and "5.7.30" in rec["response"], rec
    t = wait_for(lambda: dsns(sender), 20, "the 5.7.30 DSN")[0]
    r = parse_dsn(t.data)["recipients"][0]
    assert r["action"] == "failed" and r["status"] == "5.7.30", r
    assert not dest.messages(), "a REQUIRETLS message reached a hop it must not"


def test_tls_required_no_header_relaxes_a_verify_route(world, pki):
    world.mx_domain("sender.test", "127.0.0.3")
    dest = hop(world, pki, "dest.test", self_signed=True)
    p = tls_petrel(world, pki, delivery={"tls": "verify"})
    relaxed = make_message(to=["bob@dest.test"], subject="tls optional",
                           headers={"TLS-Required": "No"})
    strict = make_message(to=["carol@dest.test"], subject="tls per route")
    p.send("alice@sender.test", ["bob@dest.test"], relaxed)
    p.send("alice@sender.test", ["carol@dest.test"], strict)
    dest.wait_message(msgid_of(relaxed))
    p.wait_records("TransientFailure", 2, recipient="carol@dest.test", timeout=20)
    assert all(t.message_id != msgid_of(strict) for t in dest.messages()), \
        "the route says verify: without the header the unverifiable hop gets nothing"
