"""Property test for the JSON bodies of the HTTP API (the parser standard: JSON is
fuzzed or property-tested at the door, not only in fuzz_inject's functions). Random
but seeded documents (objects with the fields each endpoint knows and others, every
JSON type in each, huge numbers, strings with NULs, control characters and invalid
UTF-8, deep nesting) and raw garbage go to every POST endpoint: each answer is a
JSON object (with "error" for a 4xx), never a 5xx, a hang or a crash; only a well-
formed message injection is queued, and it is delivered. PETREL_PROP_SEED=N replays."""

import json
import os
import random

from harness import wait_for
from test_http import http_petrel, request

SEED = int(os.environ.get("PETREL_PROP_SEED", random.randrange(1 << 30)))

ADMIN = ["/api/queue/suspend", "/api/queue/resume", "/api/queue/flush", "/api/queue/bounce",
         "/api/queue/delete"]
INJECT = ["/v1/message", "/api/inject/v1"]
FIELDS = {
    "admin": ["domain", "id", "reason", "duration"],
    "/v1/message": ["from", "to", "cc", "bcc", "subject", "text", "html", "headers",
                    "attachments", "reply_to", "email", "name", "filename", "content_type",
                    "content"],
    "/api/inject/v1": ["envelope_sender", "recipients", "content", "email", "name",
                       "substitutions", "headers", "subject", "text", "html", "from",
                       "attachments", "filename", "content_type"],
}
STRINGS = ["", "dest.test", "bob@dest.test", "alice@sender.test", "<bob@dest.test>",
           "Bob <bob@dest.test>", "0123456789abcdef", "0123456789ABCDEF", "30m", "-1s",
           "1e400", "a\u0000b", "x\r\nBcc: evil@dest.test", "\u00e9t\u00e9", "\ud800",
           "=?utf-8?b?w6k=?=", "text/plain", "SGVsbG8=", "!!!", "a" * 3000, "{{name}}",
           "dest.test\n2026-01-01T00:00:00.000Z error: forged"]


def rand_json(rng, depth, keys):
    r = rng.random()
    if r < 0.1:
        return None
    if r < 0.2:
        return rng.choice([True, False])
    if r < 0.35:
        return rng.choice([0, -1, 1, 2**31, 2**63, -2**63 - 1, 10**30, 0.5, 1e308, -0.0,
                           rng.randrange(-10**6, 10**6)])
    if r < 0.7 or depth >= 4:
        if rng.random() < 0.8:
            return rng.choice(STRINGS)
        return "".join(chr(rng.randrange(0x1, 0x250)) for _ in range(rng.randrange(20)))
    if r < 0.85:
        return [rand_json(rng, depth + 1, keys) for _ in range(rng.randrange(4))]
    return rand_object(rng, depth + 1, keys)


def rand_object(rng, depth, keys):
    doc = {}
    for _ in range(rng.randrange(5)):
        k = rng.choice(keys) if rng.random() < 0.8 else rng.choice(["", "x", "\u0000", "to "])
        doc[k] = rand_json(rng, depth, keys)
    return doc


# A valid body per endpoint; most cases change one to three of its fields, so they
# get past "missing field" to the value checks behind it.
BASE = {
    "/api/queue/suspend": {"domain": "dest.test", "duration": "30m", "reason": "maintenance"},
    "/api/queue/resume": {"domain": "dest.test"},
    "/api/queue/flush": {"domain": "dest.test"},
    "/api/queue/bounce": {"domain": "nowhere.test", "reason": "cleanup"},
    "/api/queue/delete": {"domain": "nowhere.test"},
    "/v1/message": {"from": "alice@sender.test", "to": ["bob@dest.test"], "subject": "s",
                    "text": "hi", "headers": {"X-A": "b"},
                    "attachments": [{"filename": "a.txt", "content_type": "text/plain",
                                     "content": "SGVsbG8="}]},
    "/api/inject/v1": {"envelope_sender": "alice@sender.test",
                       "recipients": [{"email": "bob@dest.test", "name": "Bob",
                                       "substitutions": {"n": "1"}}],
                       "content": "From: alice@sender.test\r\nSubject: {{n}}\r\n\r\nhi\r\n",
                       "substitutions": {"x": "y"}},
}


def mutate(rng, doc, keys, depth=0):
    """doc with one to three of its fields (or fields of its nested objects) replaced,
    removed or added."""
    doc = dict(doc)
    for _ in range(rng.randrange(1, 4)):
        r = rng.random()
        k = rng.choice(sorted(doc)) if doc and r < 0.7 else rng.choice(keys)
        v = doc.get(k)
        if isinstance(v, dict) and depth < 2 and rng.random() < 0.5:
            doc[k] = mutate(rng, v, keys, depth + 1)
        elif isinstance(v, list) and v and isinstance(v[0], dict) and rng.random() < 0.5:
            doc[k] = [mutate(rng, v[0], keys, depth + 1)] * rng.randrange(1, 3)
        elif r < 0.1:
            doc.pop(k, None)
        else:
            doc[k] = rand_json(rng, depth + 1, keys)
    return doc


def rand_body(rng, path):
    keys = FIELDS["admin" if path in ADMIN else path]
    r = rng.random()
    if r < 0.1:                                   # unchanged: the answer must be 200
        return json.dumps(BASE[path]).encode()
    if r < 0.75:
        return json.dumps(mutate(rng, BASE[path], keys)).encode()
    if r < 0.85:
        return json.dumps(rand_object(rng, 0, keys)).encode()
    if r < 0.88:
        return json.dumps(rand_json(rng, 0, keys)).encode()
    if r < 0.92:                                  # deep nesting
        d = rng.randrange(10, 3000)
        return b"[" * d + b"]" * d
    if r < 0.96:                                  # cut short
        b = json.dumps(mutate(rng, BASE[path], keys)).encode()
        return b[:rng.randrange(len(b) + 1)]
    return bytes(rng.randrange(256) for _ in range(rng.randrange(60)))


def test_every_post_endpoint_answers_random_json(world):
    rng = random.Random(SEED)
    dest = world.mx_domain("dest.test", "127.0.0.2")
    world.mx_domain("sender.test", "127.0.0.3")
    p, (url,) = http_petrel(world)
    counts = {}
    for i in range(400):
        path = rng.choice(ADMIN + INJECT * 2)
        body = rand_body(rng, path)
        r = request(url, path, method="POST", body=body,
                    headers={"Content-Type": "application/json"})
        ctx = f"seed {SEED}, case {i}: POST {path} {body[:300]!r} -> {r.status} {r.body[:300]!r}"
        assert 200 <= r.status < 500, ctx
        doc = json.loads(r.body)
        assert isinstance(doc, dict), ctx
        if r.status >= 400:
            assert isinstance(doc.get("error"), str) and doc["error"], ctx
        if body == json.dumps(BASE[path]).encode():
            assert r.status == 200, ctx
        counts[r.status] = counts.get(r.status, 0) + 1
        if i % 50 == 0:
            p.assert_alive()
    p.assert_alive()
    # Both sides reached, or the generator says little.
    assert counts.get(400, 0) >= 100 and counts.get(200, 0) >= 30, (SEED, counts)
    # Nothing stays suspended by a random request: resume all the domains it named,
    # then a well-formed injection is delivered.
    for dom in ("dest.test", "x", ""):
        request(url, "/api/queue/resume", method="POST",
                body=json.dumps({"domain": dom}).encode())
    r = request(url, "/v1/message", method="POST", headers={"Content-Type": "application/json"},
                body=json.dumps({"from": "alice@sender.test", "to": ["bob@dest.test"],
                                 "subject": "after the storm", "text": "hi"}).encode())
    assert r.status == 200, r.body
    wait_for(lambda: any(t.header("Subject") == "after the storm" for t in dest.messages()),
             timeout=30, what=f"the well-formed message delivered (seed {SEED})")
    world.assert_serving(p)
    # A domain with a line end in it, logged by the admin API, stays in its line.
    assert not any(ln.startswith("2026-01-01T") for ln in p.stderr_text().split("\n")), SEED
