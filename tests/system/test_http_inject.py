"""Message injection over HTTP (DESIGN §5): POST /v1/message builds a MIME message
from JSON; POST /api/inject/v1 takes KumoMTA's format with per-recipient
substitutions. Both queue durably before answering 200, deliver through the same
scheduler as SMTP (checked at real sinks), write Reception records with protocol
"http", answer 400 JSON for bad input with nothing queued, and follow the listener's
auth rule.
"""

import base64
import email
import email.policy
import json
import os
import subprocess
import time

from harness import PETRELCTL_BIN, wait_for
from test_http import assert_json_error, http_petrel, request, wait_metric

KEY = "inject-key-0123456789"


def post(url, path, doc, key=None, raw=None):
    body = raw if raw is not None else json.dumps(doc).encode()
    return request(url, path, method="POST", key=key, body=body,
                   headers={"Content-Type": "application/json"})


def parse(txn):
    return email.message_from_bytes(txn.data, policy=email.policy.default)


def test_v1_message_builds_mime_and_delivers(world):
    dest = world.mx_domain("dest.test", "127.0.0.2")
    other = world.mx_domain("other.test", "127.0.0.3")
    p, (url,) = http_petrel(world)
    pdf = bytes(range(256)) * 40
    doc = {
        "from": "Alice Example <alice@sender.test>",
        "to": ["bob@dest.test", {"email": "carol@other.test", "name": "Carol Ünicode"}],
        "cc": ["dave@dest.test"],
        "bcc": ["erin@other.test", "BOB@dest.test"],
        "reply_to": "replies@sender.test",
        "subject": "Grüße from the API",
        "headers": {"X-Campaign": "spring-7"},
        "text": "Hello Bob,\nline two with ümlauts.\n",
        "html": "<p>Hello <b>Bob</b></p>",
        "attachments": [{"filename": "report.pdf", "content_type": "application/pdf",
                         "content": base64.b64encode(pdf).decode()}],
    }
    r = post(url, "/v1/message", doc)
    assert r.status == 200, r
    out = r.json()
    assert out["accepted"] == 4 and out["rejected"] == [], out
    qid = out["id"]
    assert len(qid) == 16, out
    t = dest.wait_count(1)[0]
    u = other.wait_count(1)[0]
    assert sorted(x.lower() for x in t.rcpt_tos) == ["bob@dest.test", "dave@dest.test"]
    assert sorted(u.rcpt_tos) == ["carol@other.test", "erin@other.test"]
    assert t.mail_from == "alice@sender.test"
    m = parse(t)
    assert m["Subject"] == "Grüße from the API"
    assert "bob@dest.test" in m["To"] and "Carol Ünicode" in str(m["To"])
    assert "dave@dest.test" in m["Cc"]
    assert m["Bcc"] is None and b"erin@" not in t.data.split(b"\r\n\r\n")[0]
    assert m["Reply-To"] == "replies@sender.test"
    assert m["X-Campaign"] == "spring-7"
    assert qid in m["Message-ID"]
    assert m["Date"] is not None and m["MIME-Version"] == "1.0"
    assert m.get_content_type() == "multipart/mixed"
    body = m.get_body(preferencelist=("plain",))
    assert "line two with ümlauts." in body.get_content()
    assert "<b>Bob</b>" in m.get_body(preferencelist=("html",)).get_content()
    atts = list(m.iter_attachments())
    assert len(atts) == 1 and atts[0].get_filename() == "report.pdf"
    assert atts[0].get_content_type() == "application/pdf"
    assert atts[0].get_content() == pdf
    # one Reception per recipient, protocol http, the client's address
    recs = p.wait_records("Reception", 4, id=qid)
    assert {r["protocol"] for r in recs} == {"http"}
    assert {r["peer_address"] for r in recs} == {"127.0.0.1"}
    wait_metric(url, "petrel_messages_received_total", 1, listener=url.split("//")[1])


def test_v1_message_bad_input_is_400_and_queues_nothing(world):
    dest = world.mx_domain("dest.test", "127.0.0.2")
    p, (url,) = http_petrel(world)
    good = {"from": "alice@sender.test", "to": ["bob@dest.test"], "subject": "s", "text": "t"}
    cases = [
        (dict(good, to=["bob@dest.test", "not an address"]), "to[1]"),
        (dict(good, **{"from": "alice@"}), "from"),
        ({k: v for k, v in good.items() if k != "subject"}, "subject"),
        (dict(good, sbject="typo"), "sbject"),
        (dict(good, to=[], cc=[]), None),
        (dict(good, headers={"X-Evil": "a\r\nBcc: victim@dest.test"}), "X-Evil"),
        (dict(good, attachments=[{"filename": "a.bin", "content": "!!not base64!!"}]),
         "attachments[0]"),
        (dict(good, to="bob@dest.test"), "to"),
    ]
    for doc, names in cases:
        err = assert_json_error(post(url, "/v1/message", doc), 400)
        if names:
            assert names in err, (doc, err)
    assert_json_error(post(url, "/v1/message", None, raw=b'{"from": "a@b.test", '), 400)
    assert_json_error(post(url, "/v1/message", None, raw=b"[1, 2]"), 400)
    # a good one afterwards still works, and it is the only thing that arrives
    r = post(url, "/v1/message", good)
    assert r.status == 200, r
    dest.wait_count(1)
    time.sleep(0.3)
    assert len(dest.messages()) == 1
    assert len(p.records("Reception")) == 1
    # a GET on the endpoint is 405 naming POST
    r = request(url, "/v1/message")
    assert_json_error(r, 405)
    assert "POST" in r.header("Allow")


def test_v1_message_policy_rejections(world):
    dest = world.mx_domain("dest.test", "127.0.0.2")
    p, (url,) = http_petrel(world, transport={
        "blocked.test": "error:550 5.7.1 no mail for blocked.test"})
    r = post(url, "/v1/message", {"from": "alice@sender.test",
                                  "to": ["bob@dest.test", "x@blocked.test"],
                                  "subject": "s", "text": "hi"})
    assert r.status == 200, r
    assert r.json()["accepted"] == 1 and r.json()["rejected"] == ["x@blocked.test"], r.json()
    t = dest.wait_count(1)[0]
    assert t.rcpt_tos == ["bob@dest.test"]
    # every recipient refused: 200, nothing queued
    r = post(url, "/v1/message", {"from": "alice@sender.test", "to": ["y@blocked.test"],
                                  "subject": "s", "text": "hi"})
    assert r.status == 200 and r.json()["accepted"] == 0, r
    assert len(p.records("Reception")) == 1


def test_kumo_inject_substitutions(world):
    dest = world.mx_domain("dest.test", "127.0.0.2")
    p, (url,) = http_petrel(world, transport={"blocked.test": "error:550 5.7.1 refused"})
    content = ("From: News <news@sender.test>\n"
               "To: {{ name }} <{{email_to}}>\n"
               "Subject: Hello {{ name }}\n"
               "\n"
               "Dear {{ name }}, your code is {{code}}.{{ missing }}\n"
               "Sent by {{ company }}.\n")
    doc = {
        "envelope_sender": "bounces@sender.test",
        "content": content,
        "substitutions": {"company": "Acme", "code": "none"},
        "recipients": [
            {"email": "ann@dest.test", "name": "Ann",
             "substitutions": {"email_to": "ann@dest.test", "code": 1234}},
            {"email": "ben@dest.test", "name": "Ben",
             "substitutions": {"email_to": "ben@dest.test"}},
            {"email": "broken@"},
            {"email": "z@blocked.test"},
        ],
    }
    r = post(url, "/api/inject/v1", doc)
    assert r.status == 200, r
    out = r.json()
    assert out["success_count"] == 2 and out["fail_count"] == 2, out
    assert sorted(out["failed_recipients"]) == ["broken@", "z@blocked.test"], out
    assert len(out["errors"]) == 2 and all(isinstance(e, str) and e for e in out["errors"])
    txns = dest.wait_count(2)
    by = {t.rcpt_tos[0]: t for t in txns}
    assert set(by) == {"ann@dest.test", "ben@dest.test"}
    ann, ben = parse(by["ann@dest.test"]), parse(by["ben@dest.test"])
    assert ann["Subject"] == "Hello Ann" and ben["Subject"] == "Hello Ben"
    assert "Dear Ann, your code is 1234." in ann.get_content()
    assert "Dear Ben, your code is none." in ben.get_content()
    assert "Sent by Acme." in ben.get_content()
    for t in txns:
        assert t.mail_from == "bounces@sender.test"
        assert b"\r\n" in t.data and b"\n" not in t.data.replace(b"\r\n", b"")
        m = parse(t)
        assert m["Message-ID"] and m["Date"], "Message-ID and Date are added when missing"
    assert {r["protocol"] for r in p.records("Reception")} == {"http"}


def test_kumo_inject_shared_message_and_400(world):
    dest = world.mx_domain("dest.test", "127.0.0.2")
    p, (url,) = http_petrel(world)
    content = ("From: a@sender.test\r\nSubject: same for all\r\n"
               "Message-ID: <fixed-1@sender.test>\r\n\r\nbody\r\n")
    r = post(url, "/api/inject/v1", {"envelope_sender": "a@sender.test", "content": content,
                                     "recipients": [{"email": "r1@dest.test"},
                                                    {"email": "r2@dest.test"}]})
    assert r.status == 200 and r.json()["success_count"] == 2, r
    t = dest.wait_message("fixed-1@sender.test")
    assert sorted(t.rcpt_tos) == ["r1@dest.test", "r2@dest.test"], "one message, two rcpts"
    assert t.data.count(b"Message-ID:") == 1
    for doc in ({"content": content, "recipients": [{"email": "r1@dest.test"}]},
                {"envelope_sender": "a@sender.test", "recipients": [{"email": "r@dest.test"}]},
                {"envelope_sender": "a@sender.test", "content": content, "recipients": []},
                {"envelope_sender": "a@sender.test", "content": content,
                 "recipients": [{"email": "r@dest.test", "substitutions": {"x": {"y": 1}}}]}):
        assert_json_error(post(url, "/api/inject/v1", doc), 400)
    time.sleep(0.3)
    assert len(dest.messages()) == 1


def test_injection_auth_rule(world):
    world.mx_domain("dest.test", "127.0.0.2")
    p, (url,) = http_petrel(world, listeners=({"trusted_hosts": [], "api_keys": [KEY]},))
    doc = {"from": "alice@sender.test", "to": ["bob@dest.test"], "subject": "s", "text": "t"}
    assert_json_error(post(url, "/v1/message", doc), 401)
    assert_json_error(post(url, "/v1/message", doc, key="wrong"), 401)
    assert post(url, "/v1/message", doc, key=KEY).status == 200
    p.wait_records("Reception", 1)
    time.sleep(0.3)
    assert len(p.records("Reception")) == 1, "the refused requests queued nothing"


def test_injected_mail_survives_kill9(world):
    """200 means durable: kill -9 right after the answer, restart, and it is delivered."""
    world.mx_domain("dest.test", "127.0.0.2", sink=False)  # next hop down at first
    p, (url,) = http_petrel(world)
    r = post(url, "/v1/message", {"from": "alice@sender.test", "to": ["bob@dest.test"],
                                  "subject": "durable", "text": "t"})
    assert r.status == 200, r
    qid = r.json()["id"]
    p.kill()
    sink = world.sink("127.0.0.2")
    p.start()
    t = sink.wait_count(1, timeout=20)[0]
    assert qid in parse(t)["Message-ID"]


# ---------------------------------------------------------------- queue inspection

def test_queue_and_message_inspection(world):
    """GET /api/queue lists the destination queues with their counts; GET
    /api/message/ID shows a queued message's envelope, per-recipient state, attempts
    and last response; both follow the mail as it is finally delivered."""
    world.mx_domain("dest.test", "127.0.0.2", sink=False)  # down: mail waits
    other = world.mx_domain("other.test", "127.0.0.3")
    p, (url,) = http_petrel(world)
    ids = []
    for i in range(3):
        r = post(url, "/v1/message", {"from": "alice@sender.test",
                                      "to": [f"u{i}@dest.test", f"v{i}@dest.test"],
                                      "subject": f"m{i}", "text": "t"})
        assert r.status == 200, r
        ids.append(r.json()["id"])
    mid = p.send_message("alice@sender.test", ["w@other.test"])
    other.wait_message(mid)
    p.wait_records("TransientFailure", 6)
    r = request(url, "/api/queue")
    assert r.status == 200, r
    doc = r.json()
    qs = {q["domain"]: q for q in doc["queues"]}
    assert doc["total"] == 3 and "dest.test" in qs, doc
    # other.test's mail is gone; it may still list its idle connection
    assert set(qs) <= {"dest.test", "other.test"} and qs.get("other.test", {"count": 0})["count"] == 0
    q = qs["dest.test"]
    assert q["count"] == 3 and q["suspended"] is False and isinstance(q["connections"], int)
    assert isinstance(q["oldest_age_s"], (int, float)) and 0 <= q["oldest_age_s"] < 60, q
    assert isinstance(q["next_attempt"], str) and q["next_attempt"][:2] == "20" \
        and q["next_attempt"].endswith("Z"), q
    r = request(url, f"/api/message/{ids[1]}")
    assert r.status == 200, r
    m = r.json()
    assert m["id"] == ids[1] and m["sender"] == "alice@sender.test" and m["protocol"] == "http"
    (d,) = m["destinations"]
    assert d["domain"] == "dest.test" and d["attempts"] >= 1, d
    assert isinstance(d["last_response"], str) and d["last_response"], d
    assert sorted((x["address"], x["state"]) for x in d["recipients"]) == \
        [("u1@dest.test", "pending"), ("v1@dest.test", "pending")], d
    # petrelctl reads the same API
    out = subprocess.run([PETRELCTL_BIN, "--url", url, "queue"], capture_output=True,
                         text=True, timeout=15)
    assert out.returncode == 0, out.stderr
    row = [l for l in out.stdout.splitlines() if l.startswith("dest.test ")]
    assert row and row[0].split()[1] == "3", out.stdout   # DESTINATION MESSAGES ... SITE
    assert "-- 3 messages in" in out.stdout, out.stdout
    out = subprocess.run([PETRELCTL_BIN, "show", ids[1]], capture_output=True, text=True,
                         timeout=15, env=dict(os.environ, PETREL_URL=url))
    assert out.returncode == 0, out.stderr
    assert "from <alice@sender.test>" in out.stdout and "u1@dest.test" in out.stdout \
        and "pending" in out.stdout and "last response:" in out.stdout, out.stdout
    out = subprocess.run([PETRELCTL_BIN, "--url", url, "show", "00000000000000ff"],
                         capture_output=True, text=True, timeout=15)
    assert out.returncode == 1 and "HTTP 404" in out.stderr, out
    assert_json_error(request(url, "/api/message/00000000000000ff"), 404)
    assert_json_error(request(url, "/api/message/not-an-id"), 400)
    assert_json_error(request(url, "/api/queue", method="POST", body=b"{}"), 405)
    # the hop comes up: everything is delivered and the views empty
    sink = world.sink("127.0.0.2")
    sink.wait_count(3, timeout=20)
    wait_for(lambda: request(url, "/api/queue").json()["total"] == 0, 10, "an empty queue")
    assert_json_error(request(url, f"/api/message/{ids[1]}"), 404)


def test_queue_actions(world):
    """POST /api/queue/suspend, resume, flush, bounce, delete act on waiting mail and
    answer {"affected": recipients}; the effects are checked at real sinks and in the
    log."""
    world.mx_domain("dest.test", "127.0.0.2", sink=False)
    world.mx_domain("gone.test", "127.0.0.4", sink=False)
    sender = world.mx_domain("sender.test", "127.0.0.3")
    p, (url,) = http_petrel(world, queue={"retry_interval": "1h", "max_retry_interval": "1h"})

    def inject(to, subject):
        r = post(url, "/v1/message", {"from": "alice@sender.test", "to": to,
                                      "subject": subject, "text": "t"})
        assert r.status == 200, r
        return r.json()["id"]

    a = inject(["a1@dest.test", "a2@dest.test"], "a")
    b = inject(["b1@dest.test"], "b")
    g1 = inject(["x@gone.test"], "g1")
    g2 = inject(["y@gone.test", "z@gone.test"], "g2")
    p.wait_records("TransientFailure", 6)   # every one tried once; next try in 1 h

    def act(action, doc, want=None):
        r = post(url, f"/api/queue/{action}", doc)
        assert r.status == 200, r
        if want is not None:
            assert r.json() == {"affected": want}, (action, doc, r.json())
        return r.json()["affected"]

    # suspend: the queue says so; a flush moves the mail to "ready" but nothing leaves
    act("suspend", {"domain": "DEST.test", "duration": "10m", "reason": "maintenance"}, 3)
    out = subprocess.run([PETRELCTL_BIN, "--url", url, "suspend", "dest.test", "20m"],
                         capture_output=True, text=True, timeout=15)
    assert out.returncode == 0 and "3 recipient(s) affected" in out.stdout, out
    q = {x["domain"]: x for x in request(url, "/api/queue").json()["queues"]}["dest.test"]
    assert q["suspended"] is True and q["count"] == 2, q
    sink = world.sink("127.0.0.2")
    act("flush", {"domain": "dest.test"}, 3)
    time.sleep(1.0)
    assert sink.messages() == [], "a suspended queue must not deliver"
    # resume: both go out at once
    act("resume", {"domain": "dest.test"}, 3)
    sink.wait_count(2, timeout=10)
    q = [x for x in request(url, "/api/queue").json()["queues"] if x["domain"] == "dest.test"]
    assert not q or (q[0]["count"] == 0 and q[0]["suspended"] is False), q

    # bounce one message by id: Bounce records and a DSN to the sender
    act("bounce", {"id": g2, "reason": "customer asked"}, 2)
    recs = p.wait_records("Bounce", 2, id=g2)
    assert all("administrator" in r["response"] for r in recs), recs
    dsn = sender.wait_count(1)[0]
    assert b"customer asked" in dsn.data and b"y@gone.test" in dsn.data
    assert_json_error(request(url, f"/api/message/{g2}"), 404)
    # delete by domain, through petrelctl: gone silently
    out = subprocess.run([PETRELCTL_BIN, "--url", url, "delete", "gone.test"],
                         capture_output=True, text=True, timeout=15)
    assert out.returncode == 0 and "1 recipient(s) affected" in out.stdout, out
    assert_json_error(request(url, f"/api/message/{g1}"), 404)
    time.sleep(0.5)
    assert len(sender.messages()) == 1, "delete sends no DSN"
    assert not p.records("Bounce", id=g1)
    assert request(url, "/api/queue").json()["total"] == 0
    # nothing left to act on, and bad requests
    act("flush", {}, 0)
    act("bounce", {"domain": "nowhere.test"}, 0)
    for action, doc in (("suspend", {}), ("suspend", {"domain": "d.test", "duration": "soon"}),
                        ("suspend", {"domain": "d.test", "duration": 0}),
                        ("bounce", {}), ("bounce", {"id": a, "domain": "dest.test"}),
                        ("delete", {"id": "123"}), ("resume", {"domain": "d.test", "x": 1}),
                        ("flush", {"domain": 5}),
                        ("bounce", {"id": a, "reason": "two\r\nlines"})):
        assert_json_error(post(url, f"/api/queue/{action}", doc), 400)
    assert_json_error(post(url, "/api/queue/flush", None, raw=b"not json"), 400)
