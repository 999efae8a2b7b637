"""Property tests for the Lua values petrel reads (the parser standard: "Lua values"
are fuzzed or property-tested). Random but seeded values of every Lua type (huge and
negative numbers, NaN and infinities, strings with NULs, CR LF and high bytes, deep
tables, functions, coroutines, tables whose metamethods raise) go into

- every config function, through `petrel --check`: it answers "config ok" (exit 0)
  or an error naming FILE:LINE (exit 1); never a crash, a hang or another exit;
- every hook action and hook return, in a running petrel, at the SMTP door
  (smtp_message_received), the HTTP door (http_request) and after delivery
  (smtp_delivery_result): every message gets a well-formed SMTP reply, every request
  a well-formed HTTP response, no header can be injected through CR LF, and petrel
  keeps serving.

PETREL_PROP_SEED=N replays one run; the seed is printed on failure."""

import os
import random
import re
import smtplib
import socket

from harness import lua_str, make_message, msgid_of, run_petrel, wait_for
from test_check import BAD_LINE, write_cfg
from test_http import http_petrel, request

SEED = int(os.environ.get("PETREL_PROP_SEED", random.randrange(1 << 30)))

# Option names per config function, so most generated tables reach the value
# checks rather than stopping at "unknown option".
OPTIONS = {
    "start_smtp_listener": ["listen", "name", "hostname", "relay_hosts", "auth_mechanisms",
                            "auth_require_tls", "tls", "max_message_size", "max_recipients",
                            "max_connections", "max_connections_per_ip", "greeting_timeout",
                            "command_timeout", "data_timeout", "proxy_protocol",
                            "proxy_trusted_hosts", "hide_received", "tls_required", "tenant"],
    "start_http_listener": ["listen", "trusted_hosts", "api_keys", "tls"],
    "configure_queue": ["spool_dir", "retry_interval", "max_retry_interval", "max_retry_age",
                        "delay_warning_after", "dead_letter_after", "max_queue_depth",
                        "backend", "redis_url", "key_prefix", "wait_replicas", "lease",
                        "max_redis_bytes"],
    "configure_redis": ["url", "key_prefix"],
    "configure_delivery": ["threads", "relayhost", "smtp_port", "tls", "ca_file", "auth",
                           "max_connections_per_domain", "max_message_rate",
                           "max_deliveries_per_connection", "connect_timeout", "helo_name",
                           "chunking", "mta_sts", "dane", "tls_rpt", "tls_rpt_interval",
                           "tls_rpt_org", "tls_rpt_from", "eight_bit_downgrade"],
    "configure_transport": ["example.com", ".sub.example", "*", "relayhost", "tls"],
    "configure_dns": ["resolvers"],
    "configure_tls": ["min_tls_version", "ciphers", "prefer_server_ciphers"],
    "configure_dkim_signing": ["domain", "selector", "key_file", "headers", "algorithm"],
    "configure_auth": ["users_file", "max_failures", "failure_window", "ban_time"],
    "configure_process": ["user", "smtp_threads"],
    "configure_header_checks": ["pattern", "action"],
    "configure_logging": ["path", "level"],
    "configure_shaping": ["default", "automation", "gmail.com", "site:*.example.com"],
    "make_egress_source": ["name", "source_address", "ehlo_domain", "warmup"],
    "make_egress_pool": ["name", "entries"],
    "configure_tenant": ["name", "egress_pool", "max_message_rate"],
}
# Keys of the nested tables (routes, TLS files, auth, shaping rules, automation,
# pool entries, warm-up) and a few that exist nowhere.
NESTED_KEYS = ["relayhost", "auth", "tls", "ca_file", "cert_file", "key_file", "implicit",
               "min_tls_version", "username", "password", "password_file",
               "connection_limit", "max_message_rate", "max_connection_rate",
               "max_deliveries_per_connection", "connect_timeout", "match", "action",
               "duration", "factor", "value", "name", "weight", "start", "days", "pattern",
               "bogus", "__index", ""]
ACTIONS = ["add_header", "remove_header", "set_queue_priority", "sign_dkim", "route_to",
           "limit_sending", "adjust_domain_rate", "log_info", "log_warn", "log_error",
           "set_tenant", "set_egress_pool"]
INJECT = "x\r\nInjected: yes"          # a header or log line smuggled in a value
# Strings that look like what the options take, or nearly.
STRINGS = ["", "10s", "0s", "-5s", "1e400s", "5m", "999999999999999h", "1.5h", "10MB", "0KB",
           "18446744073709551616", "1.5GB", "-1MB", "127.0.0.1:2525", "[::1]:70000", ":25",
           "127.0.0.1:", "[127.0.0.1]:25", "[]:25", "10.0.0.0/8", "::/0", "1.2.3.4/33",
           "may", "encrypt", "verify", "1.2", "1.3", "rsa-sha256", "ed25519-sha256", "redis",
           "rocksdb", "debug", "redis://127.0.0.1:1/0", "redis://:pw@[::1]:99999/-1",
           "error:550 5.1.1 no", "error:", "error:250 ok", "discard", "PLAIN", "CRAM-MD5",
           "^Subject: .*spam", "(", "a{99999}", "REJECT spam", "DISCARD", "HOLD",
           "PREPEND X-A: b", "REPLACE X-B: c", "site:*.example.com", "site:", "5/s", "0/s",
           "1/d", "x/y", "bulk", "high", "default", "gmail.com", "*.", "%s%n%p%x",
           INJECT, "X-Bad\r\nInjected", "a\0b", "\u00e9t\u00e9", "a" * 5000]
ATOMS = ["nil", "true", "false", "0", "1", "-1", "2147483647", "2147483648", "-2147483649",
         "65536", "9007199254740993", "math.maxinteger", "math.mininteger", "0.5", "-0.0",
         "1e308", "1e-320", "1/0", "-1/0", "0/0", "3.7", "function() end",
         "function() error('from a value') end", "coroutine.create(function() end)",
         "io.stdout", "setmetatable({}, {__index = function() error('index raised') end})",
         "setmetatable({}, {__index = function() return 5 end})",
         "setmetatable({}, {__tostring = function() error('tostring raised') end})",
         "setmetatable({}, {__len = function() return -1 end})", "string.rep('x', 100000)"]


def lua_bytes(b):
    """Any bytes as a Lua string literal."""
    out = ['"']
    for c in b:
        if 32 <= c < 127 and c not in (34, 92):
            out.append(chr(c))
        else:
            out.append("\\%03d" % c)
    out.append('"')
    return "".join(out)


def rand_string(rng):
    if rng.random() < 0.8:
        return lua_str(rng.choice(STRINGS))
    b = bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
    return lua_bytes(b.lstrip(b"/"))          # never an absolute path


def rand_key(rng, names):
    r = rng.random()
    if r < 0.75 and names:
        return "[" + lua_str(rng.choice(names)) + "]"
    if r < 0.9:
        return "[" + lua_str(rng.choice(NESTED_KEYS)) + "]"
    return "[" + rng.choice(["1", "0", "-1", "1.5", "true", rand_string(rng)]) + "]"


def rand_value(rng, depth=0, names=()):
    r = rng.random()
    if r < 0.3:
        return rng.choice(ATOMS)
    if r < 0.45:
        return str(rng.choice([rng.randrange(-10, 100), rng.randrange(-2**63, 2**63 - 1)]))
    if r < 0.7 or depth >= 3:
        return rand_string(rng)
    return rand_table(rng, depth + 1, names or NESTED_KEYS)


def rand_table(rng, depth, names):
    items = []
    for _ in range(rng.randrange(5)):
        v = rand_value(rng, depth, NESTED_KEYS)
        if rng.random() < 0.3:
            items.append(v)
        else:
            items.append(f"{rand_key(rng, names)} = {v}")
    return "{ " + ", ".join(items) + " }"


# Plausible values for the options a call cannot do without, so that most calls get
# past "option 'x' is required" to the random value beside them.
REQUIRED = {
    "start_smtp_listener": {"listen": '"127.0.0.1:2599"'},
    "start_http_listener": {"listen": '"127.0.0.1:2598"'},
    "configure_redis": {"url": '"redis://127.0.0.1:6379/0"'},
    "configure_dkim_signing": {"domain": '"example.com"', "selector": '"s1"',
                               "key_file": '"k.pem"'},
    "configure_auth": {"users_file": '"users"'},
    "make_egress_source": {"name": '"ip1"', "source_address": '"127.0.0.1"'},
    "make_egress_pool": {"name": '"pool1"', "entries": '{ { name = "ip1" } }'},
    "configure_tenant": {"name": '"t1"'},
}


def rand_options(rng, fn):
    """An option table for fn: its required options (mostly plausible) and one to
    three options with random values, mostly under names fn knows."""
    opts = {}
    if rng.random() < 0.8:
        opts.update(REQUIRED.get(fn, {}))
    for _ in range(rng.randrange(1, 4)):
        opts[rand_key(rng, OPTIONS[fn])] = rand_value(rng)
    items = [f"{k if k.startswith('[') else '[' + lua_str(k) + ']'} = {v}"
             for k, v in opts.items()]
    if rng.random() < 0.05:
        items.append(rand_value(rng))
    rng.shuffle(items)
    return "{ " + ", ".join(items) + " }"


def rand_config_statement(rng):
    fn = rng.choice(sorted(OPTIONS))
    call = rng.choice(["petrel", "kumo"]) + "." + fn
    r = rng.random()
    if r < 0.8:
        return f"{call}({rand_options(rng, fn)})"
    if r < 0.86:
        return f"{call}({rand_value(rng)})"
    if r < 0.89:
        return f"{call}({rand_options(rng, fn)}, {rand_value(rng)})"
    if r < 0.91:
        return f"{call}()"
    if r < 0.96:
        return f"petrel.on({rand_value(rng)}, {rand_value(rng)})"
    return f"petrel.{rng.choice(ACTIONS)}({rand_value(rng)}, {rand_value(rng)})"


def test_check_answers_every_random_config_value(tmp_path):
    rng = random.Random(SEED)
    ok = refused = 0
    for i in range(300):
        d = tmp_path / f"c{i}"
        d.mkdir()
        stmt = rand_config_statement(rng)
        path = write_cfg(d, stmt)
        res = run_petrel("-c", path, "--check", cwd=str(d))
        out = res.stdout.decode("utf-8", "replace")
        err = res.stderr.decode("utf-8", "replace")
        ctx = f"seed {SEED}, case {i}: {stmt[:300]!r} -> exit {res.returncode}, stderr {err[:400]!r}"
        assert res.returncode in (0, 1), ctx
        assert "Sanitizer" not in err and "runtime error" not in err, ctx
        if res.returncode == 0:
            assert "config ok" in out, ctx
            ok += 1
        else:
            assert re.search(re.escape(path) + r":\d+: \S", err), \
                "a refused config names FILE:LINE: " + ctx
            refused += 1
    # The generator reaches both sides, or the test says little.
    assert ok >= 5 and refused >= 100, (SEED, ok, refused)


def rand_hook_body(rng):
    """One handler body: an action with random arguments, a random return value, a
    random write into meta, or an error with a random value."""
    r = rng.random()
    if r < 0.6:
        act = rng.choice(ACTIONS)
        args = ", ".join(rand_value(rng) for _ in range(rng.randrange(4)))
        if act == "add_header" and rng.random() < 0.5:
            args = f"{lua_str('X-Prop')}, {rand_string(rng)}"
        return f"petrel.{act}({args})"
    if r < 0.75:
        return f"return {rand_value(rng)}"
    if r < 0.85:
        field = rng.choice(["tenant", "sender", "recipients", "headers"])
        return f"meta.{field} = {rand_value(rng)}"
    if r < 0.95:
        return f"error({rand_value(rng)})"
    return "while true do end"


def rand_http_body(rng):
    r = rng.random()
    if r < 0.5:
        return f"return {{ status = {rand_value(rng)}, body = {rand_value(rng)} }}"
    if r < 0.8:
        return f"return {rand_value(rng)}"
    return f"error({rand_value(rng)})"


def hook_config(rng, n):
    """Handlers for the three run-time events; the case to run comes from the
    message's or request's X-Case header, and after delivery from a counter. Returns
    (config text, the SMTP cases' bodies)."""
    bodies = [rand_hook_body(rng) for _ in range(n)]
    bodies[:2] = [f"petrel.log_warn({lua_str(INJECT)})", f"error({lua_str(INJECT)})"]
    cases = "\n".join(f"  [{i}] = function(arg, meta) {b} end," for i, b in enumerate(bodies))
    http = "\n".join(f"  [{i}] = function(req) {rand_http_body(rng)} end," for i in range(n))
    return f"""
local CASES = {{
{cases}
}}
local HTTP_CASES = {{
{http}
}}
local n = 0
petrel.on("smtp_message_received", function(domain, meta)
  local f = CASES[tonumber(meta.headers["X-Case"])]
  if f then return f(domain, meta) end
end)
petrel.on("http_request", function(req)
  local f = HTTP_CASES[tonumber(req.headers["X-Case"])]
  if f then return f(req) end
end)
petrel.on("smtp_delivery_result", function(result, meta)
  n = n + 1
  local f = CASES[n % {n}]
  if f then return f(result, meta) end
end)
""", bodies


def send_case(p, i, smtp):
    """Sends case i; returns (code, smtp, data), opening a new connection when the
    last one was closed."""
    data = make_message(to=["bob@dest.test"], subject=f"case {i}", headers={"X-Case": str(i)})
    for _ in range(2):
        if smtp is None:
            smtp = smtplib.SMTP(p.host, p.port, timeout=15)
            smtp.ehlo("prop.test")
        try:
            smtp.sendmail("alice@sender.test", ["bob@dest.test"], data)
            return 250, smtp, data
        except smtplib.SMTPRecipientsRefused as e:
            return list(e.recipients.values())[0][0], smtp, data
        except (smtplib.SMTPDataError, smtplib.SMTPSenderRefused) as e:
            return e.smtp_code, smtp, data
        except (smtplib.SMTPServerDisconnected, ConnectionError, socket.timeout):
            smtp = None
    raise AssertionError(f"seed {SEED}, case {i}: the connection failed twice")


def test_hooks_answer_every_random_action_and_value(world):
    rng = random.Random(SEED)
    n = 120
    dest = world.mx_domain("dest.test", "127.0.0.2")
    world.mx_domain("sender.test", "127.0.0.3")
    text, bodies = hook_config(rng, n)
    p, (url,) = http_petrel(world, extra=text)
    smtp, accepted = None, []
    for i in range(n):
        code, smtp, data = send_case(p, i, smtp)
        ctx = f"seed {SEED}, case {i} ({bodies[i][:200]!r})"
        assert code == 250 or 400 <= code < 600, f"{ctx}: reply {code}"
        if code == 250 and "route_to" not in bodies[i]:
            accepted.append(msgid_of(data))
        r = request(url, "/healthz", headers={"X-Case": str(i)})
        assert 100 <= r.status < 600, f"{ctx}: HTTP {r.status}"
        p.assert_alive()
    if smtp is not None:
        smtp.quit()
    # Something got through and something was refused, or the generator says little.
    assert 10 <= len(accepted) < n, (SEED, len(accepted))
    # Every accepted message not re-routed by its hook arrives (a hook never loses
    # mail), and no header was injected through a value with CR LF in it.
    wait_for(lambda: all(dest.find(m) for m in accepted), timeout=60,
             what=f"every accepted message at the sink (seed {SEED})")
    for m in dest.messages():
        head = m.data.split(b"\r\n\r\n", 1)[0]
        assert not re.search(rb"(?im)^injected", head), (SEED, head[:2000])
    world.assert_serving(p)
    # A value with CR LF written to the log stays inside its own line.
    err = p.stderr_text()
    assert "Injected: yes" in err and not re.search(r"(?m)^Injected", err) and "\r" not in err, \
        (SEED, [ln for ln in err.split("\n") if "Injected" in ln][:5])
