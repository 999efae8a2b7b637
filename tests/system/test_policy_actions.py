"""Policy actions and bad hooks at the SMTP door (DESIGN §4, issue 9): the seed's
multi-tenant smtp_server_greeting hook (limit_sending + sign_dkim) verbatim;
limit_sending = 451 4.7.0 at DATA, shared by every message of the session and
every connection; sign_dkim with a missing key = 451 and a log line naming the hook
and the file, never an unsigned send; a hook that errors, loops, yields or returns
the wrong type = 451 with the hook and its Lua line in the log, and petrel keeps
serving."""

import re
import subprocess
import time

from harness import make_message, msgid_of


def genkey(path):
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                    "rsa_keygen_bits:2048", "-out", str(path)], check=True, capture_output=True)


# The seed's multi-tenant greeting hook, verbatim, with the two functions it calls.
SEED_GREETING = r'''
local tenant_limits = { acme = 3 }
function get_tenant_rate_limit(tenant) return tenant_limits[tenant] or 100 end
function get_tenant_dkim(tenant)
  if tenant == "acme" then
    return { domain = "sender.test", selector = "acme", key_file = "KEYFILE" }
  end
end

-- Per-customer relay configuration
kumo.on("smtp_server_greeting", function(domain, meta)
    local tenant = meta.tenant

    if tenant then
        -- Apply per-tenant rate limits
        local limit = get_tenant_rate_limit(tenant)
        kumo.limit_sending(tenant, limit, { per = "minute" })

        -- Set tenant-specific DKIM
        local dkim = get_tenant_dkim(tenant)
        if dkim then
            kumo.sign_dkim(dkim.domain, dkim.selector, dkim.key_file)
        end
    end
end)
'''


def send_all(p, n, smtp):
    out = []
    for i in range(n):
        d = make_message(subject=f"m{i}")
        smtp.mail("alice@sender.test")
        smtp.rcpt("bob@dest.test")
        out.append((smtp.data(d), d))
    return out


def test_seed_multi_tenant_greeting_hook_runs_as_written(world, tmp_path):
    dest = world.mx_domain("dest.test", "127.0.0.2")
    key = tmp_path / "acme.pem"
    genkey(key)
    p = world.petrel(extra=SEED_GREETING.replace("KEYFILE", str(key)),
                     listener={"tenant": "acme"})
    s = p.smtp(ehlo=False)
    try:
        code, msg = s.ehlo("client.test")
        assert code == 250, (code, msg)          # was 451 to every EHLO before
        res = send_all(p, 5, s)
    finally:
        s.quit()
    codes = [r[0][0] for r in res]
    assert codes == [250, 250, 250, 451, 451], res
    assert res[3][0][1].startswith(b"4.7.0"), res[3]
    # the limit is per tenant, across connections: a new session is still over it
    s = p.smtp()
    try:
        (code, msg), _ = send_all(p, 1, s)[0]
        assert code == 451 and msg.startswith(b"4.7.0"), (code, msg)
    finally:
        s.quit()
    for (code, _), d in res[:3]:
        dest.wait_message(msgid_of(d))
    p.wait_records("Rejection", 3)
    rej = p.records("Rejection")
    assert len(rej) == 3 and all(r["code"] == 451 for r in rej), rej
    assert "limit_sending: key 'acme' is over its limit" in p.stderr_text()
    time.sleep(0.5)
    assert len(dest.messages()) == 3


def test_sign_dkim_with_a_missing_key_is_451_never_unsigned(world, tmp_path):
    dest = world.mx_domain("dest.test", "127.0.0.2")
    gone = tmp_path / "no-such-key.pem"
    p = world.petrel(extra=SEED_GREETING.replace("KEYFILE", str(gone)),
                     listener={"tenant": "acme"})
    s = p.smtp(ehlo=False)
    try:
        code, msg = s.ehlo("client.test")
        assert code == 451 and msg.startswith(b"4.3.0"), (code, msg)
    finally:
        s.close()
    err = p.stderr_text()
    line = [x for x in err.splitlines() if "smtp_server_greeting hook failed" in x][-1]
    assert "sign_dkim(sender.test, acme)" in line and str(gone)[-20:] in line, line
    assert re.search(r"petrel\.lua:\d+: sign_dkim", line), line
    # per message: only the message of that domain is refused
    hook = (f'petrel.on("smtp_message_received", function(domain, meta)\n'
            f'  if meta.headers.Subject == "sign" then kumo.sign_dkim("sender.test", "s", "{gone}") end\n'
            f'end)')
    q = world.petrel(extra=hook)
    s = q.smtp()
    try:
        s.mail("alice@sender.test")
        s.rcpt("bob@dest.test")
        code, msg = s.data(make_message(subject="sign"))
        assert code == 451 and msg.startswith(b"4.3.0"), (code, msg)
        ok = make_message(subject="plain")
        q.send("alice@sender.test", ["bob@dest.test"], ok, smtp=s)
    finally:
        s.quit()
    assert dest.wait_message(msgid_of(ok)).header("Subject") == "plain"
    time.sleep(0.5)
    assert [t.header("Subject") for t in dest.messages()] == ["plain"]
    assert "smtp_message_received hook failed" in q.stderr_text()


BAD_HOOKS = r'''
petrel.on("smtp_message_received", function(domain, meta)
  local s = meta.headers.Subject
  if s == "error" then error("policy exploded") end
  if s == "loop" then while true do end end
  if s == "yield" then coroutine.yield() end
  if s == "type" then return "accepted" end
  if s == "nil-index" then return meta.nothing.here end
  if s == "limit-args" then petrel.limit_sending("k", "many") end
end)
'''


def test_bad_message_hooks_are_451_and_logged_with_their_line(world):
    dest = world.mx_domain("dest.test", "127.0.0.2")
    p = world.petrel(extra=BAD_HOOKS)
    with open(p.cfg_path) as f:
        first = next(i for i, l in enumerate(f, 1) if l.startswith('petrel.on("smtp_message_received"'))
    cases = [("error", 3, "policy exploded"), ("loop", 4, "budget"),
             ("yield", 5, "attempt to yield"), ("type", 1, "returned a string"),
             ("nil-index", 7, "attempt to index a nil value"),
             ("limit-args", 8, "number expected")]
    s = p.smtp()
    try:
        for subject, line, what in cases:
            s.mail("alice@sender.test")
            s.rcpt("bob@dest.test")
            t0 = time.monotonic()
            code, msg = s.data(make_message(subject=subject))
            assert code == 451 and msg.startswith(b"4.3.0"), (subject, code, msg)
            assert time.monotonic() - t0 < 20, subject
            log = [x for x in p.stderr_text().splitlines()
                   if "smtp_message_received hook failed" in x][-1]
            assert f"petrel.lua:{first + line - 1}:" in log and what in log, (subject, log)
    finally:
        s.quit()
    world.assert_serving(p)
    p.wait_records("Rejection", len(cases))
    assert len(p.records("Rejection")) == len(cases)
