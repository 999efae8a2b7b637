"""TLS reporting (RFC 8460) sending: `configure_delivery { tls_rpt = true,
tls_rpt_interval = "3s" }`. A DANE destination (TLSA through the fake DNS with AD)
gets a few deliveries, one host failing; at the end of the interval petrel looks up
`_smtp._tls.dest.test` TXT and mails the gzip'ed JSON report to the rua address,
where a sink receives it. Issue 11 "TLS reporting"; DESIGN §12.
"""

import email
import email.policy
import gzip
import json
import os
import time

import pytest

from certs import PKI
from harness import make_message, msgid_of, run_petrel, wait_for
from test_dane import spki_sha256
from tls_sinks import tls_mx_domain


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return PKI(tmp_path_factory.mktemp("pki-tlsrpt"))


def send(p, rcpt):
    data = make_message("alice@sender.test", [rcpt], subject=f"tlsrpt to {rcpt}")
    p.send("alice@sender.test", [rcpt], data)
    return msgid_of(data)


def rpt_world(world, pki, txt="v=TLSRPTv1; rua=mailto:tlsrpt@reports.test",
              interval="4s", **delivery):
    """dest.test: mx1 (TLS sink, matching TLSA) and, with lower preference,
    nothing else; bad.test: a TLS sink whose TLSA does not match (failures).
    reports.test: the sink where reports land."""
    cert, key = pki.self_signed("mx.dest.test")
    dest = tls_mx_domain(world, "dest.test", mx_name="mx.dest.test",
                         tls_context=pki.server_context(cert, key))
    world.dns.add_tlsa(f"_{world.mx_port}._tcp.mx.dest.test", 3, 1, 1, spki_sha256(cert))
    bcert, bkey = pki.self_signed("mx.bad.test")
    bad = tls_mx_domain(world, "bad.test", mx_name="mx.bad.test",
                        tls_context=pki.server_context(bcert, bkey))
    world.dns.add_tlsa(f"_{world.mx_port}._tcp.mx.bad.test", 3, 1, 1, b"\x01" * 32)
    world.dns.ad = True
    if txt is not None:
        world.dns.set_txt("_smtp._tls.dest.test", txt)
        world.dns.set_txt("_smtp._tls.bad.test", txt)
    reports = world.mx_domain("reports.test")
    world.mx_domain("sender.test", "127.0.0.3")
    d = {"dane": True, "mta_sts": False, "tls_rpt": True, "tls_rpt_interval": interval,
         "tls_rpt_org": "Petrel Test Org", "tls_rpt_from": "tlsrpt-sender@sender.test"}
    d.update(delivery)
    p = world.petrel(delivery=d)
    return p, dest, bad, reports


def reports_for(sink, domain):
    out = []
    for m in sink.messages():
        msg = email.message_from_bytes(m.data, policy=email.policy.default)
        if msg["TLS-Report-Domain"] == domain:
            out.append(msg)
    return out


def report_json(msg):
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "tlsrpt"
    parts = [p for p in msg.iter_parts() if p.get_content_type() == "application/tlsrpt+gzip"]
    assert len(parts) == 1
    fn = parts[0].get_filename()
    return json.loads(gzip.decompress(parts[0].get_content())), fn


def wait_report(sink, domain, timeout=40):
    wait_for(lambda: reports_for(sink, domain), timeout=timeout, what=f"TLS report for {domain}")
    return reports_for(sink, domain)[0]


def test_report_counts_success_and_failure(world, pki):
    p, dest, bad, reports = rpt_world(world, pki)
    mids = [send(p, f"u{i}@dest.test") for i in range(3)]
    for mid in mids:
        dest.wait_message(mid, timeout=30)
    send(p, "x@bad.test")
    p.wait_record("TransientFailure", timeout=30, recipient="x@bad.test")
    msg = wait_report(reports, "dest.test")
    assert msg["TLS-Report-Submitter"] == "Petrel Test Org"
    assert "tlsrpt-sender@sender.test" in msg["From"]
    rep, fn = report_json(msg)
    # §5.3: sender!policy-domain!begin!end!id.json.gz
    f = fn.split("!")
    assert f[0] == "sender.test" and f[1] == "dest.test" and fn.endswith(".json.gz"), fn
    assert rep["organization-name"] == "Petrel Test Org"
    assert rep["contact-info"] == "mailto:tlsrpt-sender@sender.test"
    assert rep["report-id"]
    assert rep["date-range"]["start-datetime"] < rep["date-range"]["end-datetime"]
    [pol] = rep["policies"]
    assert pol["policy"]["policy-type"] == "tlsa"
    assert pol["policy"]["policy-domain"] == "dest.test"
    assert pol["policy"]["policy-string"][0].startswith("3 1 1 ")
    assert pol["summary"]["total-successful-session-count"] >= 1
    assert pol["summary"]["total-failure-session-count"] == 0
    # the failing domain's report: failures with tlsa-invalid details
    bmsg = wait_report(reports, "bad.test")
    brep, _ = report_json(bmsg)
    [bpol] = brep["policies"]
    assert bpol["policy"]["policy-type"] == "tlsa"
    assert bpol["summary"]["total-successful-session-count"] == 0
    assert bpol["summary"]["total-failure-session-count"] >= 1
    types = {d["result-type"] for d in bpol["failure-details"]}
    assert types == {"tlsa-invalid"}, bpol["failure-details"]
    assert sum(d["failed-session-count"] for d in bpol["failure-details"]) == \
        bpol["summary"]["total-failure-session-count"]
    assert any(d.get("receiving-mx-hostname") == "mx.bad.test" for d in bpol["failure-details"])
    # the session's two ends (§4.3: sending-mta-ip, receiving-ip)
    assert any(d.get("receiving-ip") == bad.ip and d.get("sending-mta-ip", "").startswith("127.")
               for d in bpol["failure-details"]), bpol["failure-details"]
    assert reports.for_rcpt("tlsrpt@reports.test")


def test_counters_survive_restart(world, pki):
    p, dest, bad, reports = rpt_world(world, pki, interval="1h")
    for i in range(2):
        dest.wait_message(send(p, f"r{i}@dest.test"), timeout=30)
    state = os.path.join(p.workdir, "spool", "tls-rpt", "state.json")

    def saved():
        try:
            with open(state) as f:
                s = json.load(f)
        except (OSError, ValueError):
            return None
        pol = s["policies"].get("dest.test tlsa")
        return s if pol and pol["success"] >= 1 else None
    wait_for(saved, timeout=15, what="counters saved")
    before = saved()["policies"]["dest.test tlsa"]["success"]
    start = saved()["start"]
    p.stop()
    # the next start: a short interval that is over at once (start is kept)
    with open(p.cfg_path) as f:
        text = f.read()
    assert '"1h"' in text
    with open(p.cfg_path, "w") as f:
        f.write(text.replace('"1h"', '"2s"'))
    p.start()
    msg = wait_report(reports, "dest.test")
    rep, _ = report_json(msg)
    assert rep["policies"][0]["summary"]["total-successful-session-count"] == before
    assert rep["date-range"]["start-datetime"] == \
        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start))


def test_txt_without_rua_sends_no_report(world, pki):
    p, dest, bad, reports = rpt_world(world, pki, txt="v=TLSRPTv1; ruf=mailto:x@reports.test",
                                      interval="3s")
    dest.wait_message(send(p, "n@dest.test"), timeout=30)
    wait_for(lambda: "no report sent" in p.stderr_text() + open(p.log_path).read(),
             timeout=30, what="a log line saying no report is sent")
    time.sleep(1)
    assert not reports_for(reports, "dest.test")


@pytest.mark.parametrize("opt,value,word", [
    ("tls_rpt_interval", '"0s"', "tls_rpt_interval"),
    ("tls_rpt_interval", '"soon"', "tls_rpt_interval"),
    ("tls_rpt_from", '"not an address"', "tls_rpt_from"),
    ("tls_rpt_from", '"<a@b.test>"', "tls_rpt_from"),
    ("tls_rpt_org", '""', "tls_rpt_org"),
    ("tls_rpt", '"yes"', "tls_rpt"),
])
def test_check_refuses_bad_values(tmp_path, opt, value, word):
    path = tmp_path / "petrel.lua"
    path.write_text("-- tls-rpt\n"
                    f'petrel.configure_queue {{ spool_dir = "{tmp_path}/spool" }}\n'
                    f"petrel.configure_delivery {{ tls_rpt = true, {opt} = {value} }}\n")
    res = run_petrel("-c", str(path), "--check", cwd=str(tmp_path))
    err = res.stderr.decode()
    assert res.returncode == 1, err
    assert f"{path}:3:" in err and word in err, err


def test_check_accepts_good_values(tmp_path):
    path = tmp_path / "petrel.lua"
    path.write_text(f'petrel.configure_queue {{ spool_dir = "{tmp_path}/spool" }}\n'
                    'petrel.configure_delivery { tls_rpt = true, tls_rpt_interval = "24h", '
                    'tls_rpt_org = "Example Org", tls_rpt_from = "tlsrpt@example.com" }\n')
    res = run_petrel("-c", str(path), "--check", cwd=str(tmp_path))
    assert res.returncode == 0, res.stderr.decode()


class PostServer:
    """An HTTPS server recording every POST (path, headers, body)."""

    def __init__(self, ip, ctx, fail_first=0):
        import http.server
        import threading
        self.posts = []
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                outer.posts.append((self.path, dict(self.headers), self.rfile.read(n)))
                self.send_response(503 if len(outer.posts) <= fail_first else 201)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer((ip, 0), H)
        self.port = self.httpd.server_address[1]
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_https_rua_gets_the_report_posted(world, pki):
    """RFC 8460 §5.4: an https: rua gets a POST of the gzip'ed JSON with
    Content-Type application/tlsrpt+gzip; the host is resolved through petrel's
    resolver (the fake DNS) and verified against configure_delivery.ca_file."""
    cert, key = pki.leaf("rpt.reports.test")
    srv = PostServer("127.0.2.9", pki.server_context(cert, key))
    try:
        world.dns.add_a("rpt.reports.test", "127.0.2.9")
        p, dest, bad, reports = rpt_world(
            world, pki, txt=f"v=TLSRPTv1; rua=https://rpt.reports.test:{srv.port}/v1/tlsrpt",
            interval="3s", ca_file=pki.ca_file)
        dest.wait_message(send(p, "h@dest.test"), timeout=30)
        def dest_post():
            return next((x for x in list(srv.posts) if json.loads(gzip.decompress(x[2]))
                         ["policies"][0]["policy"]["policy-domain"] == "dest.test"), None)
        path, headers, body = wait_for(dest_post, timeout=40, what="the POST of the report")
        assert path == "/v1/tlsrpt"
        assert headers.get("Content-Type") == "application/tlsrpt+gzip"
        rep = json.loads(gzip.decompress(body))
        [pol] = rep["policies"]
        assert pol["policy"]["policy-type"] == "tlsa"
        assert pol["summary"]["total-successful-session-count"] >= 1
        assert not reports.messages()
    finally:
        srv.stop()


def test_failed_post_is_tried_again(world, pki):
    """A POST answered 503 is tried again (after a tenth of the interval); the mailto:
    rua next to it is not mailed twice."""
    cert, key = pki.leaf("rpt.reports.test")
    srv = PostServer("127.0.2.10", pki.server_context(cert, key), fail_first=1)
    try:
        world.dns.add_a("rpt.reports.test", "127.0.2.10")
        p, dest, bad, reports = rpt_world(
            world, pki, txt=f"v=TLSRPTv1; rua=https://rpt.reports.test:{srv.port}/r,"
                            "mailto:tlsrpt@reports.test",
            interval="3s", ca_file=pki.ca_file)
        dest.wait_message(send(p, "h@dest.test"), timeout=30)

        def report_id(body):
            return json.loads(gzip.decompress(body))["report-id"]

        def dest_posts():
            got = [x for x in list(srv.posts) if json.loads(gzip.decompress(x[2]))
                   ["policies"][0]["policy"]["policy-domain"] == "dest.test"]
            return got if len(got) >= 2 else None
        first, second = wait_for(dest_posts, timeout=40, what="a second POST")[:2]
        assert report_id(first[2]) == report_id(second[2]), "not the same report again"
        wait_for(lambda: "POST tried again" in p.stderr_text(), what="the retry logged")
        wait_for(lambda: "posted to" in p.stderr_text(), what="the accepted POST logged")
        rid = report_id(first[2])

        def mails():
            return [m for m in reports.messages() if rid in m.data.decode("latin-1")]
        wait_for(mails, timeout=20, what=f"report {rid} mailed to the mailto: rua")
        time.sleep(1)
        assert len(mails()) == 1, f"the mailto: rua got report {rid} {len(mails())} times"
    finally:
        srv.stop()


def test_sts_policy_report(world, pki):
    """An MTA-STS (enforce) destination: policy-type sts with the policy lines and the
    mx patterns; a good host counts successes; a host whose certificate is not from
    the trusted CA counts certificate-not-trusted failures."""
    from test_mta_sts import PolicyServer, policy
    servers = []
    try:
        for i, (dom, good) in enumerate((("stsok.test", True), ("stsbad.test", False))):
            ip = f"127.0.2.{30 + i}"
            cert, key = pki.leaf(f"mta-sts.{dom}")
            srv = PolicyServer(ip, pki.server_context(cert, key))
            servers.append(srv)
            srv.serve(policy("enforce", f"*.{dom}"))
            world.dns.set_txt(f"_mta-sts.{dom}", "v=STSv1; id=r1;")
            world.dns.add_a(f"mta-sts.{dom}", ip)
            world.dns.set_txt(f"_smtp._tls.{dom}", "v=TLSRPTv1; rua=mailto:tlsrpt@reports.test")
            c, k = pki.leaf(f"mx.{dom}") if good else pki.self_signed(f"mx.{dom}")
            tls_mx_domain(world, dom, tls_context=pki.server_context(c, k))
        reports = world.mx_domain("reports.test")
        world.mx_domain("sender.test", "127.0.0.3")
        p = world.petrel(delivery={"ca_file": pki.ca_file, "tls_rpt": True,
                                   "tls_rpt_interval": "4s", "tls_rpt_org": "Org"})
        send(p, "a@stsok.test")
        send(p, "b@stsbad.test")
        p.wait_record("Delivery", recipient="a@stsok.test", timeout=30)
        p.wait_record("TransientFailure", recipient="b@stsbad.test", timeout=30)
        ok, _ = report_json(wait_report(reports, "stsok.test"))
        [pol] = ok["policies"]
        assert pol["policy"]["policy-type"] == "sts"
        assert "mode: enforce" in pol["policy"]["policy-string"]
        assert pol["policy"]["mx-host"] == ["*.stsok.test"]
        assert pol["summary"]["total-successful-session-count"] >= 1
        bad, _ = report_json(wait_report(reports, "stsbad.test"))
        [bpol] = bad["policies"]
        assert bpol["policy"]["policy-type"] == "sts"
        assert bpol["summary"]["total-failure-session-count"] >= 1
        assert {d["result-type"] for d in bpol["failure-details"]} == \
            {"certificate-not-trusted"}, bpol["failure-details"]
    finally:
        for s in servers:
            s.stop()


def test_sts_policy_fetch_error_is_reported(world, pki):
    """_mta-sts TXT published, but the policy host answers 404: the message goes out
    without a policy (RFC 8461 §5) and the report counts sts-policy-fetch-error."""
    from test_mta_sts import PolicyServer
    cert, key = pki.leaf("mta-sts.nopol.test")
    srv = PolicyServer("127.0.2.40", pki.server_context(cert, key))   # 404 for all
    try:
        world.dns.set_txt("_mta-sts.nopol.test", "v=STSv1; id=x1;")
        world.dns.add_a("mta-sts.nopol.test", "127.0.2.40")
        world.dns.set_txt("_smtp._tls.nopol.test", "v=TLSRPTv1; rua=mailto:tlsrpt@reports.test")
        dest = world.mx_domain("nopol.test")
        reports = world.mx_domain("reports.test")
        world.mx_domain("sender.test", "127.0.0.3")
        p = world.petrel(delivery={"ca_file": pki.ca_file, "tls_rpt": True,
                                   "tls_rpt_interval": "4s"})
        dest.wait_message(send(p, "c@nopol.test"), timeout=30)
        rep, _ = report_json(wait_report(reports, "nopol.test"))
        [pol] = rep["policies"]
        assert pol["policy"]["policy-type"] == "sts"
        assert pol["summary"]["total-failure-session-count"] >= 1
        assert pol["summary"]["total-successful-session-count"] == 0
        assert {d["result-type"] for d in pol["failure-details"]} == {"sts-policy-fetch-error"}
    finally:
        srv.stop()
