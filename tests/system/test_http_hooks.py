"""Hooks at the HTTP door (DESIGN §4, §5): http_message_received on POST /v1/message
and POST /api/inject/v1 with the same meta and actions as smtp_message_received (an
error refuses that domain's recipients, nothing queued for them); http_request
before every request, answering instead with {status=, body=} (the seed's API-key
check verbatim) or 500 JSON when a handler fails; limit_sending answering 429."""

import re
import time

from harness import new_msgid, wait_for
from test_http import assert_json_error, http_petrel, request
from test_http_inject import post

MESSAGE_HOOK = r'''
petrel.on("http_message_received", function(domain, meta)
  if domain == "refuse.test" then error("no mail for refuse.test") end
  petrel.add_header("X-Dest", domain .. " " .. #meta.recipients .. " " .. meta.recipients[1])
  petrel.add_header("X-Meta", table.concat({meta.sender, meta.client_ip, tostring(meta.listener ~= nil),
    tostring(meta.tenant), tostring(meta.auth_user), meta.headers["subject"], #meta.id}, "|"))
  kumo.remove_header("X-Secret")
  if domain == "bulk.test" then petrel.set_queue_priority("bulk") end
end)
'''


def test_v1_message_runs_http_message_received_per_domain(world):
    dest = world.mx_domain("dest.test", "127.0.0.2")
    other = world.mx_domain("other.test", "127.0.0.3")
    world.mx_domain("refuse.test", "127.0.0.4")
    p, (url,) = http_petrel(world, extra=MESSAGE_HOOK)
    r = post(url, "/v1/message", {
        "from": "alice@sender.test",
        "to": ["bob@dest.test", "carol@other.test", "dave@refuse.test", "erin@dest.test"],
        "subject": "hooked", "text": "hi", "headers": {"X-Secret": "hunter2", "X-Tenant": "blue"}})
    assert r.status == 200, r
    out = r.json()
    assert out["accepted"] == 3 and out["rejected"] == ["dave@refuse.test"], out
    t = dest.wait_count(1)[0]
    u = other.wait_count(1)[0]
    assert t.header("X-Dest") == "dest.test 2 bob@dest.test", t.data[:800]
    assert u.header("X-Dest") == "other.test 1 carol@other.test"
    assert t.header("X-Meta") == "alice@sender.test|127.0.0.1|true|blue|nil|hooked|16", t.data[:800]
    assert t.header("X-Secret") is None
    wait_for(lambda: "http_message_received hook failed for refuse.test" in p.stderr_text(),
             what="the hook failure in the log")
    err = p.stderr_text()
    assert re.search(r"petrel\.lua:\d+: no mail for refuse\.test", err), err[-2000:]
    time.sleep(0.5)
    assert not [x for x in p.records("Reception") if x["recipient"] == "dave@refuse.test"]
    assert len(p.records("Reception")) == 3


def test_kumo_inject_runs_http_message_received(world):
    dest = world.mx_domain("dest.test", "127.0.0.2")
    world.mx_domain("refuse.test", "127.0.0.4")
    p, (url,) = http_petrel(world, extra=MESSAGE_HOOK)
    mid = new_msgid()
    content = ("From: <alice@sender.test>\r\nSubject: kumo {{ name }}\r\nX-Secret: s\r\n"
               f"Message-ID: {mid}\r\n\r\nHello\r\n")
    r = post(url, "/api/inject/v1", {
        "envelope_sender": "alice@sender.test", "content": content,
        "recipients": [{"email": "bob@dest.test", "substitutions": {"name": "Bob"}},
                       {"email": "x@refuse.test", "substitutions": {"name": "X"}}]})
    out = r.json()
    assert r.status == 200 and out["success_count"] == 1 and out["fail_count"] == 1, out
    assert out["failed_recipients"] == ["x@refuse.test"], out
    assert "451 4.3.0" in out["errors"][0], out
    t = dest.wait_count(1)[0]
    assert t.header("X-Dest") == "dest.test 1 bob@dest.test"
    assert t.header("X-Meta").endswith("|kumo Bob|16"), t.header("X-Meta")
    assert t.header("X-Secret") is None


# The seed's API-key check, verbatim, with the function it calls.
SEED_HTTP_REQUEST = r'''
local valid_keys = { ["tenant-key-1"] = true }
function validate_api_key(token) return valid_keys[token] == true end
kumo.on("http_request", function(request)
    local token = request.headers["Authorization"]:gsub("Bearer ", "")
    if not validate_api_key(token) then
        return { status = 401, body = "Unauthorized" }
    end
end)
'''


def test_seed_http_request_api_key_check(world):
    world.mx_domain("dest.test", "127.0.0.2")
    p, (url,) = http_petrel(world, extra=SEED_HTTP_REQUEST)
    r = request(url, "/api/queue", key="wrong")
    assert r.status == 401 and r.body == b"Unauthorized", r
    r = request(url, "/api/queue", key="tenant-key-1")
    assert r.status == 200 and "queues" in r.json(), r
    r = post(url, "/v1/message", {"from": "a@sender.test", "to": ["b@dest.test"],
                                  "subject": "s", "text": "t"}, key="tenant-key-1")
    assert r.status == 200 and r.json()["accepted"] == 1, r
    # no Authorization header: the seed's handler indexes nil -> 500 JSON, logged
    r = request(url, "/healthz")
    err = assert_json_error(r, 500)
    assert "http_request hook failed" in err, err
    # the log line is written by the log thread: wait for it
    wait_for(lambda: "http_request hook failed for GET /healthz" in p.stderr_text(),
             what="the hook failure in the log")
    assert re.search(r"petrel\.lua:\d+: attempt to index a nil value", p.stderr_text()), \
        p.stderr_text()[-1500:]
    assert request(url, "/api/queue", key="tenant-key-1").status == 200


BAD_REQUEST_HOOKS = r'''
petrel.on("http_request", function(request)
  local p = request.path
  if p == "/blocked" then return { status = 403, body = '{"error": "blocked key"}' } end
  if p == "/spin" then while true do end end
  if p == "/yield" then coroutine.yield(1) end
  if p == "/type" then return 42 end
  if p == "/status" then return { status = "teapot" } end
  if p == "/action" then petrel.add_header("X-A", "b") end
  assert(request.method and request.client_ip == "127.0.0.1")
end)
'''


def hook_first_line(p):
    """Line number of the config's `petrel.on("http_request"` (the hooks' line 1)."""
    with open(p.cfg_path) as f:
        for i, line in enumerate(f, 1):
            if line.startswith('petrel.on("http_request"'):
                return i
    raise AssertionError("no http_request hook in the config")


def test_http_request_answers_and_failures(world):
    world.mx_domain("dest.test", "127.0.0.2")
    p, (url,) = http_petrel(world, extra=BAD_REQUEST_HOOKS)
    r = request(url, "/blocked")
    assert r.status == 403 and r.json() == {"error": "blocked key"}, r
    assert r.header("Content-Type") == "application/json"
    first = hook_first_line(p)
    for path, line, what in [("/spin", 4, "budget"), ("/yield", 5, "yield"),
                             ("/type", 1, "returned a number"), ("/status", 1, "status teapot"),
                             ("/action", 8, "add_header can only be called inside a hook")]:
        t0 = time.monotonic()
        r = request(url, path, timeout=30)
        assert assert_json_error(r, 500), r
        assert time.monotonic() - t0 < 20
        # the diagnostic line is written by the log thread: it may follow the answer
        wait_for(lambda: f"http_request hook failed for GET {path}" in p.stderr_text(), 10,
                 f"the log line of {path}")
        want = [x for x in p.stderr_text().splitlines() if f"failed for GET {path}" in x][-1]
        assert f"petrel.lua:{first + line - 1}:" in want and what in want, (want, first)
    # still serving, normal requests pass through
    assert request(url, "/healthz").status == 200
    world.assert_serving(p)


def test_limit_sending_over_http_is_429(world):
    dest = world.mx_domain("dest.test", "127.0.0.2")
    hook = ('petrel.on("http_message_received", function(domain, meta)\n'
            '  petrel.limit_sending("api-" .. domain, 2, { per = "hour" })\nend)')
    p, (url,) = http_petrel(world, extra=hook)
    doc = {"from": "a@sender.test", "to": ["b@dest.test"], "subject": "s", "text": "t"}
    for _ in range(2):
        r = post(url, "/v1/message", doc)
        assert r.status == 200 and r.json()["accepted"] == 1, r
    r = post(url, "/v1/message", doc)
    err = assert_json_error(r, 429)
    assert "rate limit" in err and "api-dest.test" in err, err
    dest.wait_count(2)
    time.sleep(0.5)
    assert len(dest.messages()) == 2
    assert len(p.records("Reception")) == 2


def test_sign_dkim_in_http_message_received(world, tmp_path):
    import subprocess
    dest = world.mx_domain("dest.test", "127.0.0.2")
    world.mx_domain("nokey.test", "127.0.0.4")
    key = tmp_path / "k.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "ED25519", "-out", str(key)], check=True,
                   capture_output=True)
    hook = (f'petrel.on("http_message_received", function(domain, meta)\n'
            f'  local file = "{key}"\n'
            f'  if domain == "nokey.test" then file = file .. ".missing" end\n'
            f'  kumo.sign_dkim("sender.test", "s1", file)\nend)')
    p, (url,) = http_petrel(world, extra=hook)
    r = post(url, "/v1/message", {"from": "a@sender.test", "to": ["b@dest.test", "c@nokey.test"],
                                  "subject": "s", "text": "t"})
    assert r.status == 200, r
    assert r.json()["accepted"] == 1 and r.json()["rejected"] == ["c@nokey.test"], r.json()
    dest.wait_count(1)
    wait_for(lambda: "http_message_received hook failed" in p.stderr_text(),
             what="the hook failure in the log")
    log = [x for x in p.stderr_text().splitlines() if "http_message_received hook failed" in x]
    assert log and "sign_dkim(sender.test, s1)" in log[-1] and "k.pem.missing" in log[-1], log
