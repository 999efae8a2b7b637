"""configure_header_checks (DESIGN §4) through real SMTP and HTTP: the seed's Postfix
rules that hide internal Received: hops and X-Originating-IP, REPLACE, PREPEND,
REJECT (550 + text at end of DATA, nothing queued), DISCARD, matching on the
unfolded client header before our Received: is added; the bytes are checked at the
sink. Bad patterns and actions are --check errors at FILE:LINE."""

import os
import time

from harness import msgid_of, new_msgid, run_petrel

# The seed's smtp_header_checks (Postfix regexp table), as configure_header_checks.
SEED_RULES = r'''
petrel.configure_header_checks {
  { pattern = "^Received: from (internal|localhost|192\\.168\\.|10\\.)", action = "IGNORE" },
  { pattern = "^X-Originating-IP:", action = "IGNORE" },
  { pattern = "^X-PHP-Originating-Script:", action = "IGNORE" },
  { pattern = "^X-Mailer:", action = "REPLACE X-Mailer: petrel" },
  { pattern = "^Subject:.*viagra", action = "REJECT 5.7.1 message content rejected" },
  { pattern = "^Subject:.*discard-me", action = "DISCARD" },
  { pattern = "^Subject:", action = "PREPEND X-Checked: yes" },
}
'''


def message(subject, msgid, extra=b""):
    return (b"Received: from internal.corp.example (10.1.2.3)\r\n"
            b"\tby app1.corp.example; Mon, 1 Jan 2024 10:00:00 +0000\r\n"
            b"Received: from 192.168.1.20 by app2; Mon, 1 Jan 2024 10:00:00 +0000\r\n"
            b"Received: from mail.partner.example (203.0.113.9)\r\n"
            b"\tby app3.corp.example; Mon, 1 Jan 2024 10:00:00 +0000\r\n"
            b"X-Originating-IP: [192.168.7.7]\r\n"
            b"X-PHP-Originating-Script: 1000:mailer.php\r\n"
            b"X-Mailer: PHPMailer 6.1 (secret build)\r\n"
            b"From: <alice@sender.test>\r\n"
            b"To: <bob@dest.test>\r\n"
            b"Subject: " + subject + b"\r\n"
            b"Message-ID: " + msgid.encode() + b"\r\n" + extra +
            b"\r\n"
            b"X-Originating-IP: the body is never touched\r\n")


def test_seed_rules_rewrite_the_client_header_through_smtp(world):
    dest = world.mx_domain("dest.test", "127.0.0.2")
    p = world.petrel(extra=SEED_RULES)
    mid = new_msgid()
    p.send("alice@sender.test", ["bob@dest.test"], message(b"hello", mid))
    t = dest.wait_message(mid)
    head, _, body = t.data.partition(b"\r\n\r\n")
    assert body == b"X-Originating-IP: the body is never touched\r\n", t.data
    # our own Received: comes first and is kept (added after the checks)
    assert head.startswith(b"Received: from "), head[:200]
    assert b"(petrel)" in head.split(b"\r\n\tby", 1)[1][:80] or b"petrel" in head[:300]
    assert b"internal.corp.example" not in head, head
    assert b"192.168.1.20" not in head, head
    assert b"X-Originating-IP" not in head, head
    assert b"X-PHP-Originating-Script" not in head, head
    assert b"Received: from mail.partner.example (203.0.113.9)\r\n\tby app3.corp.example" in head
    assert b"\r\nX-Mailer: petrel\r\n" in head and b"PHPMailer" not in head, head
    assert b"\r\nX-Checked: yes\r\nSubject: hello\r\n" in head, head
    # one Received of ours + the partner's = 2
    assert head.count(b"Received:") == 2, head


def test_reject_is_550_at_end_of_data_and_nothing_queued(world):
    dest = world.mx_domain("dest.test", "127.0.0.2")
    p = world.petrel(extra=SEED_RULES)
    s = p.smtp()
    try:
        assert s.mail("alice@sender.test")[0] == 250
        assert s.rcpt("bob@dest.test")[0] == 250
        mid = new_msgid()
        # folded Subject: matched unfolded
        code, text = s.data(message(b"cheap\r\n VIAGRA here", mid))
        assert code == 550 and text == b"5.7.1 message content rejected", (code, text)
        # the session goes on: the next message is accepted
        mid2 = new_msgid()
        assert s.mail("alice@sender.test")[0] == 250
        assert s.rcpt("bob@dest.test")[0] == 250
        code, text = s.data(message(b"fine", mid2))
        assert code == 250, (code, text)
    finally:
        s.quit()
    dest.wait_message(mid2)
    time.sleep(0.5)
    assert all(msgid_of(t.data) != mid for t in dest.messages()), "rejected mail was delivered"
    rej = p.wait_record("Rejection", recipient="bob@dest.test")
    assert rej["code"] == 550 and "5.7.1 message content rejected" in rej["response"], rej
    assert not [r for r in p.records("Reception") if r["code"] != 250]
    assert len(p.records("Reception")) == 1


def test_discard_accepts_and_drops(world):
    dest = world.mx_domain("dest.test", "127.0.0.2")
    p = world.petrel(extra=SEED_RULES)
    mid = new_msgid()
    code, text = p.send("alice@sender.test", ["bob@dest.test"], message(b"discard-me", mid))
    assert "discarded" in text, text
    mid2 = new_msgid()
    p.send("alice@sender.test", ["bob@dest.test"], message(b"keep", mid2))
    dest.wait_message(mid2)
    time.sleep(0.5)
    assert all(msgid_of(t.data) != mid for t in dest.messages())
    assert "header_checks rule 6 discarded" in p.stderr_text()


def test_header_checks_apply_to_http_injection(world):
    from test_http import http_petrel
    from test_http_inject import post
    dest = world.mx_domain("dest.test", "127.0.0.2")
    p, (url,) = http_petrel(world, extra=SEED_RULES)
    r = post(url, "/v1/message", {"from": "alice@sender.test", "to": ["bob@dest.test"],
                                  "subject": "hello", "text": "hi",
                                  "headers": {"X-Originating-IP": "10.9.9.9",
                                              "X-Mailer": "app 1.0"}})
    assert r.status == 200, r
    assert r.json()["accepted"] == 1 and r.json()["rejected"] == [], r.json()
    t = dest.wait_count(1)[0]
    head = t.data.partition(b"\r\n\r\n")[0]
    assert b"X-Originating-IP" not in head and b"\r\nX-Mailer: petrel\r\n" in head, head
    assert b"\r\nX-Checked: yes\r\nSubject: hello\r\n" in head, head
    # REJECT over HTTP: the recipients are refused by policy, nothing queued
    r = post(url, "/v1/message", {"from": "alice@sender.test", "to": ["bob@dest.test"],
                                  "subject": "buy viagra", "text": "hi"})
    assert r.status == 200, r
    assert r.json()["accepted"] == 0 and r.json()["rejected"] == ["bob@dest.test"], r.json()
    mid = new_msgid()
    content = ("From: <alice@sender.test>\r\nTo: <bob@dest.test>\r\nSubject: viagra\r\n"
               f"Message-ID: {mid}\r\n\r\nhi\r\n")
    r = post(url, "/api/inject/v1", {"envelope_sender": "alice@sender.test", "content": content,
                                     "recipients": [{"email": "bob@dest.test"}]})
    out = r.json()
    assert out["success_count"] == 0 and out["failed_recipients"] == ["bob@dest.test"], out
    assert "5.7.1 message content rejected" in out["errors"][0], out
    time.sleep(0.5)
    assert len(dest.messages()) == 1


def test_bad_rules_are_check_errors_at_file_line(tmp_path):
    for rules, want in [
        ('{ pattern = "^Subject: (", action = "IGNORE" }', "option 'pattern': invalid regex"),
        ('{ pattern = "^A:", action = "DROP" }', "option 'action': invalid action 'DROP'"),
        ('{ pattern = "^A:", action = "REPLACE no colon" }', "one header line"),
        # patterns glibc's regcomp takes seconds to hours to compile: refused at once
        ('{ pattern = "^Subject: .*?free", action = "IGNORE" }',
         "a repetition of a repetition at offset 12 ('?')"),
        ('{ pattern = "(\\\\b){60}", action = "IGNORE" }', "repeats an anchor"),
        ('{ pattern = "\\\\b(|a){1,40}b?(|a){255}", action = "IGNORE" }',
         "what can match nothing"),
    ]:
        cfg = tmp_path / "bad.lua"
        cfg.write_text('petrel.start_smtp_listener { listen = "127.0.0.1:2525" }\n'
                       "petrel.configure_header_checks {\n"
                       '  { pattern = "^B:", action = "IGNORE" },\n'
                       f"  {rules},\n}}\n")
        t0 = time.monotonic()
        r = run_petrel("--check", "-c", str(cfg))
        assert r.returncode == 1, r
        assert time.monotonic() - t0 < 5, f"--check took {time.monotonic() - t0:.1f} s"
        err = r.stderr.decode()
        assert f"{cfg}:2: configure_header_checks: entry 2: " in err, err
        assert want in err, err
    cfg = tmp_path / "good.lua"
    cfg.write_text('petrel.start_smtp_listener { listen = "127.0.0.1:2525" }\n' + SEED_RULES)
    r = run_petrel("--check", "-c", str(cfg))
    assert r.returncode == 0 and b"config ok" in r.stdout, r
