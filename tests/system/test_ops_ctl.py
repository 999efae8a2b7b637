"""petrelctl report, dkim-keygen and top (DESIGN §11) against a real petrel: the
report's counts come from a log petrel wrote for known traffic; keys made by
dkim-keygen load in configure_dkim_signing and verify with python3-dkim against
the printed TXT record; top --once shows rates and the biggest queues."""

import datetime
import json
import os
import re
import stat
import subprocess

import dkim

from harness import PETRELCTL_BIN, free_port, make_message, msgid_of, wait_for


def ctl(*args, env=None, timeout=30):
    r = subprocess.run([PETRELCTL_BIN, *args], capture_output=True, timeout=timeout,
                       env=dict(os.environ, **(env or {})))
    return r.returncode, r.stdout.decode(), r.stderr.decode()


def http_extra(port):
    return f'petrel.start_http_listener {{ listen = "127.0.0.1:{port}" }}'


def test_report_counts_known_traffic(world):
    dest = world.mx_domain("dest.test", "127.0.0.2")
    world.mx_domain("sender.test", "127.0.0.3")
    world.mx_domain("bad.test", "127.0.0.4",
                    rcpt_reply={"nobody@bad.test": "550 5.1.1 no such user"})
    world.mx_domain("slow.test", "127.0.0.5", rcpt_reply=lambda a: "451 4.7.1 try later")
    p = world.petrel(transport={"blocked.test": "error:550 5.7.1 not here"})
    for i in range(3):
        p.send_message("alice@sender.test", ["bob@dest.test", "carol@dest.test"])
    p.send_message("zed@sender.test", ["nobody@bad.test"])
    p.send_message("zed@sender.test", ["x@slow.test"])
    s = p.smtp()
    s.mail("alice@sender.test")
    assert s.rcpt("y@blocked.test")[0] == 550
    s.quit()
    dest.wait_count(3)
    p.wait_record("Bounce", recipient="nobody@bad.test")
    p.wait_record("TransientFailure", recipient="x@slow.test")
    p.wait_records("Delivery", 7)                 # 6 + the DSN to zed@sender.test
    rc, out, err = ctl("report", "--json", p.log_path)
    assert rc == 0, err
    r = json.loads(out)
    assert r["received"] == 8 and r["delivered"] == 7 and r["bounced"] == 1, r
    assert r["rejected"] == 1 and r["expired"] == 0 and r["deferred"] >= 1, r
    assert r["top_destinations"] == [{"domain": "dest.test", "count": 6},
                                     {"domain": "sender.test", "count": 1}]
    assert r["top_senders"][0] == {"sender": "alice@sender.test", "count": 6}
    assert {"sender": "zed@sender.test", "count": 2} in r["top_senders"]
    assert r["bounce_reasons"][0]["domain"] == "bad.test"
    assert "no such user" in r["bounce_reasons"][0]["reason"]
    d = r["delivery_delay_seconds"]
    assert 0 <= d["p50"] <= d["p95"] <= d["max"] < 60
    rc, out, err = ctl("report", p.log_path)
    assert rc == 0, err
    assert re.search(r"^\s+8\s+received$", out, re.M), out
    assert re.search(r"^\s+6\s+dest\.test$", out, re.M), out
    assert "bad.test: " in out and "Bounce reasons by domain" in out


def test_report_since_and_bad_lines(tmp_path):
    now = datetime.datetime.now(datetime.timezone.utc)
    def rec(t, age_h, **kw):
        ts = (now - datetime.timedelta(hours=age_h)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        base = {"type": t, "timestamp": ts, "sender": "a@s.test", "recipient": "b@d.test",
                "queue": "d.test", "response": "ok", "delay": 1.5}
        base.update(kw)
        return json.dumps(base)
    lines = [rec("Reception", 48), rec("Delivery", 47), rec("Reception", 1), rec("Delivery", 1),
             rec("Expiration", 2, response="expired after 72h"), "not json", '{"type": 1}',
             rec("Rejection", 0.5)]
    log = tmp_path / "petrel.jsonl"
    log.write_text("\n".join(lines) + "\n")
    rc, out, err = ctl("report", "--json", "--since", "24h", str(log))
    assert rc == 0, err
    r = json.loads(out)
    assert (r["received"], r["delivered"], r["expired"], r["rejected"]) == (1, 1, 1, 1), r
    assert r["skipped_lines"] == 2
    rc, out, err = ctl("report", "--json", str(log))
    assert json.loads(out)["received"] == 2
    rc, out, err = ctl("report", "--since", "soon", str(log))
    assert rc == 2 and "bad --since" in err
    rc, out, err = ctl("report", str(tmp_path / "missing.jsonl"))
    assert rc == 1 and "missing.jsonl" in err


def parse_txt(out, name):
    m = re.search(re.escape(name) + r" IN TXT \(((?:\s*\"[^\"]*\")+)\s*\)", out)
    assert m, out
    parts = re.findall(r"\"([^\"]*)\"", m.group(1))
    assert all(len(x) <= 255 for x in parts)
    return "".join(parts).encode(), parts


def test_dkim_keygen_keys_sign(world, tmp_path):
    keys = tmp_path / "keys"
    keys.mkdir()
    rc, out_rsa, err = ctl("dkim-keygen", "--domain", "sender.test", "--selector", "k1",
                           "--bits", "3072", "--out", str(keys))
    assert rc == 0, err
    txt_rsa, parts = parse_txt(out_rsa, "k1._domainkey.sender.test.")
    assert len(parts) >= 2                      # 3072-bit key: longer than one string
    rc, out_ed, err = ctl("dkim-keygen", "--domain", "sender.test", "--selector", "k2",
                          "--algorithm", "ed25519-sha256", "--out", str(keys))
    assert rc == 0, err
    txt_ed, _ = parse_txt(out_ed, "k2._domainkey.sender.test.")
    assert txt_ed.startswith(b"v=DKIM1; k=ed25519; p=")
    for f in ("k1.sender.test.pem", "k2.sender.test.pem"):
        assert stat.S_IMODE(os.stat(keys / f).st_mode) == 0o600
    assert "v=spf1" in out_rsa and "_dmarc.sender.test." in out_rsa
    # never overwrites a key
    before = (keys / "k1.sender.test.pem").read_bytes()
    rc, _, err = ctl("dkim-keygen", "--domain", "sender.test", "--selector", "k1",
                     "--out", str(keys))
    assert rc == 1 and "not overwritten" in err
    assert (keys / "k1.sender.test.pem").read_bytes() == before
    rc, _, err = ctl("dkim-keygen", "--domain", "sender.test", "--selector", "k1",
                     "--algorithm", "dsa", "--out", str(keys))
    assert rc == 2
    # the keys load in petrel and the printed records verify its signatures
    dest = world.mx_domain("dest.test", "127.0.0.2")
    extra = (f'petrel.configure_dkim_signing {{ domain = "sender.test", selector = "k1", '
             f'key_file = "{keys}/k1.sender.test.pem" }}\n'
             f'petrel.configure_dkim_signing {{ domain = "sender.test", selector = "k2", '
             f'key_file = "{keys}/k2.sender.test.pem", algorithm = "ed25519-sha256" }}')
    p = world.petrel(extra=extra)
    mid = p.send_message("alice@sender.test", ["bob@dest.test"])
    data = dest.wait_message(mid).data
    dns = {b"k1._domainkey.sender.test.": txt_rsa, b"k2._domainkey.sender.test.": txt_ed}
    def dnsfunc(name, timeout=5):
        return dns.get(name if name.endswith(b".") else name + b".")
    nsig = sum(1 for l in data.split(b"\r\n") if l.lower().startswith(b"dkim-signature:"))
    assert nsig == 2
    for i in range(2):
        assert dkim.DKIM(data).verify(idx=i, dnsfunc=dnsfunc), f"signature {i}"


def test_top_once(world):
    hport = free_port()
    world.mx_domain("dest.test", "127.0.0.2")
    world.mx_domain("down.test", "127.0.0.9", sink=False)   # stays queued
    p = world.petrel(extra=http_extra(hport), queue={"retry_interval": "1h"})
    for _ in range(3):
        p.send_message("alice@sender.test", ["x@down.test"])
    p.send_message("alice@sender.test", ["bob@dest.test"])
    url = f"http://127.0.0.1:{hport}"
    rc, out, err = ctl("--url", url, "top", "--once", "--interval", "0.5s")
    assert rc == 0, err
    assert "rates/s: received" in out and "queued: 3" in out, out
    row = re.search(r"^down\.test\s+(\d+)\s+\d+\s+\d+\s+active$", out, re.M)
    assert row and row.group(1) == "3", out
    assert "\033[2J" not in out                              # --once: no screen clearing
    rc, out, err = ctl("--url", f"http://127.0.0.1:{free_port()}", "top", "--once")
    assert rc == 1
