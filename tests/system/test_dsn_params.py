"""DSN parameters both ways (RFC 3461, issue 11): EHLO advertises DSN; MAIL takes
RET and ENVID, RCPT takes NOTIFY and ORCPT, and every malformed one gets 501 5.5.4.
The values are stored with the message and passed to a next hop that offers DSN
(standards_sinks.CapsSink records the raw commands); to a hop that does not, they are
not sent and petrel itself reports NOTIFY=SUCCESS recipients as "relayed" (RFC 3461
5.2.2). A hop that offers DSN takes the reporting over: no DSN from petrel then.
REQUIRETLS (RFC 8689) is refused outside TLS (530).
"""

import time

from harness import raw_send, make_message, msgid_of, parse_dsn, wait_for
from standards_sinks import CapsSink


def caps_hop(world, domain, exts):
    ip = world.new_ip()
    world.dns.add_mx(domain, f"mx.{domain}", 10)
    world.dns.add_a(f"mx.{domain}", ip)
    s = CapsSink(ip, world.mx_port, exts=exts, name=f"mx.{domain}")
    world.sinks.append(s)
    return s.start()


def lines(sink, verb):
    return [c.decode() for c in sink.command_lines() if c.upper().startswith(verb + b" ")]


def dsns(sink):
    return [t for t in sink.messages() if t.mail_from == ""]


def test_ehlo_advertises_dsn_and_not_requiretls_in_clear(world):
    p = world.petrel()
    s = p.smtp()
    try:
        assert s.has_extn("dsn"), s.esmtp_features
        assert not s.has_extn("requiretls"), "REQUIRETLS is only offered inside TLS"
    finally:
        s.quit()


def test_bad_dsn_parameters_get_501(world):
    p = world.petrel()
    with p.raw() as c:
        assert c.cmd("EHLO client.test")[0] == 250
        for bad in ["RET=ALL", "RET=FULL RET=HDRS", "ENVID=a+2", "ENVID=a+zz", "ENVID=a+0A",
                    "ENVID=" + "x" * 101, "ENVID=a ENVID=b", "REQUIRETLS=yes"]:
            code, text = c.cmd(f"MAIL FROM:<a@sender.test> {bad}".encode())
            assert (code, text[:5]) == (501, "5.5.4"), (bad, code, text)
        code, text = c.cmd(b"MAIL FROM:<a@sender.test> REQUIRETLS")
        assert code == 530 and text.startswith("5.7."), (code, text)
        code, text = c.cmd(b"MAIL FROM:<a@sender.test> RET=HDRS ENVID=Q+2BQ")
        assert code == 250, (code, text)
        for bad in ["NOTIFY=NEVER,SUCCESS", "NOTIFY=SOMETIMES", "NOTIFY=SUCCESS,SUCCESS",
                    "NOTIFY=", "NOTIFY=DELAY NOTIFY=DELAY", "ORCPT=rfc822", "ORCPT=;a@b",
                    "ORCPT=rfc822;a+", "ORCPT=rfc822;a+7F", "ORCPT=rfc822;a ORCPT=rfc822;b"]:
            code, text = c.cmd(f"RCPT TO:<bob@dest.test> {bad}".encode())
            assert code == 501 and text.startswith("5.5.4"), (bad, code, text)
        code, text = c.cmd(b"RCPT TO:<bob@dest.test> RET=FULL")
        assert code == 555, (code, text)
        code, text = c.cmd(b"RCPT TO:<bob@dest.test> NOTIFY=success,failure ORCPT=rfc822;b+2Bx@y")
        assert code == 250, (code, text)
        assert c.cmd("RSET")[0] == 250
    world.assert_serving(p)


def test_params_relayed_verbatim_to_a_dsn_hop(world):
    sender = world.mx_domain("sender.test", "127.0.0.3")
    hop = caps_hop(world, "dest.test", ["PIPELINING", "8BITMIME", "DSN"])
    p = world.petrel()
    rcpts = ["bob@dest.test", "carol@dest.test", "dave@dest.test"]
    data = make_message(to=rcpts, subject="dsn params out")
    raw_send(p, "alice@sender.test", rcpts, data, " RET=HDRS ENVID=env+2B1+3D",
              rcpt_params={
                  "bob@dest.test": " NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;Bob+2Bx@Orig.test",
                  "carol@dest.test": " NOTIFY=NEVER"})
    hop.wait_message(msgid_of(data))
    mail = lines(hop, b"MAIL")
    assert len(mail) == 1 and mail[0].endswith(" RET=HDRS ENVID=env+2B1+3D"), mail
    rcpt = {ln.split("<", 1)[1].split(">", 1)[0]: ln for ln in lines(hop, b"RCPT")}
    assert rcpt["bob@dest.test"].endswith(
        "> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;Bob+2Bx@Orig.test"), rcpt
    assert rcpt["carol@dest.test"].endswith("> NOTIFY=NEVER"), rcpt
    assert rcpt["dave@dest.test"].endswith("<dave@dest.test>"), "nothing invented for dave"
    # the hop offered DSN: success reports are its job, petrel sends none
    time.sleep(2)
    assert not dsns(sender), dsns(sender)


def test_hop_without_dsn_gets_no_params_and_petrel_reports_relayed(world):
    sender = world.mx_domain("sender.test", "127.0.0.3")
    hop = caps_hop(world, "dest.test", ["PIPELINING", "8BITMIME"])
    p = world.petrel()
    rcpts = ["bob@dest.test", "carol@dest.test"]
    data = make_message(to=rcpts, subject="relayed report")
    raw_send(p, "alice@sender.test", rcpts, data, " RET=FULL ENVID=QQ314159",
              rcpt_params={"bob@dest.test": " NOTIFY=SUCCESS ORCPT=rfc822;bob@orig.test"})
    hop.wait_message(msgid_of(data))
    mail = lines(hop, b"MAIL")
    assert "RET=" not in mail[0] and "ENVID=" not in mail[0], mail
    assert all("NOTIFY" not in ln and "ORCPT" not in ln for ln in lines(hop, b"RCPT"))
    got = wait_for(lambda: dsns(sender), 20, "the relayed DSN")
    time.sleep(1.5)
    assert len(dsns(sender)) == 1, "one DSN: only bob asked for SUCCESS"
    t = got[0]
    assert t.rcpt_tos == ["alice@sender.test"]
    d = parse_dsn(t.data)
    assert d["report_type"] == "delivery-status"
    assert d["per_message"].get("original-envelope-id") == "QQ314159", d["per_message"]
    assert len(d["recipients"]) == 1, d["recipients"]
    r = d["recipients"][0]
    assert r["action"] == "relayed", r
    assert r["status"].startswith("2."), r
    assert r["original-recipient"] == "rfc822;bob@orig.test", r
    assert "bob@dest.test" in r["final-recipient"], r
    assert r.get("diagnostic-code", "").startswith("smtp;"), r
    assert b"This is a test." not in t.data, \
        "a success report never returns the body, even with RET=FULL"
    assert d["msg"].get_payload()[2].get_content_type() == "text/rfc822-headers"


def test_real_postfix_as_next_hop_receives_dsn_parameters(world, tmp_path):
    """Debian's Postfix (it offers DSN) as petrel's relayhost, relaying on to a sink
    without DSN: Postfix got NOTIFY=SUCCESS, ORCPT and ENVID from petrel exactly
    when it sends its own "relayed" report carrying them (RFC 3461 5.2.2), while
    petrel, whose hop offered DSN, sends none."""
    from test_standards_outbound import _private_postfix
    sender = world.mx_domain("sender.test", "127.0.0.3")
    final = world.sink("127.0.0.1", world.other_port())
    pf = _private_postfix(tmp_path, final.port)
    try:
        p = world.petrel(transport={"dest.test": {"relayhost": f"[127.0.0.1]:{pf.port}"}})
        data = make_message(to=["bob@dest.test"], subject="dsn through postfix")
        raw_send(p, "alice@sender.test", ["bob@dest.test"], data, " RET=HDRS ENVID=PF+2B7",
                  rcpt_params={"bob@dest.test":
                               " NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;Bob+2BOrig@dest.test"})
        final.wait_message(msgid_of(data), timeout=30)
        rep = wait_for(lambda: [t for t in final.messages() if t.mail_from == ""], 40,
                       lambda: f"Postfix's relayed report at {final}: {final.messages()!r}")[0]
        d = parse_dsn(rep.data)
        assert d["per_message"].get("original-envelope-id") == "PF+7", d["per_message"]
        r = d["recipients"][0]
        assert r["action"] == "relayed", r
        assert r["original-recipient"].replace(" ", "").lower() == "rfc822;bob+orig@dest.test", r
        assert not dsns(sender), "the hop offered DSN: petrel reports nothing itself"
    finally:
        pf.stop()
        import shutil
        shutil.rmtree(pf.workdir, ignore_errors=True)
