"""petrel --check, --version and config errors (DESIGN §3, §4)."""

import os
import re
import socket
import subprocess
import time

import pytest

from certs import PKI, petrel_cert
from harness import PETREL_BIN, free_port, require_binary, run_petrel

# The offending statement is always on this line of the generated file.
BAD_LINE = 4


def write_cfg(tmp_path, statement, name="petrel.lua"):
    """A config whose line BAD_LINE is `statement`; the rest is valid."""
    spool = tmp_path / "spool"
    log = tmp_path / "log" / "petrel.jsonl"
    lines = [
        "-- petrel test config",
        f'petrel.start_smtp_listener {{ listen = "127.0.0.1:{free_port()}", hostname = "petrel.test" }}',
        f'petrel.configure_queue {{ spool_dir = "{spool}", retry_interval = "1s" }}',
        statement,
        f'petrel.configure_logging {{ path = "{log}", level = "info" }}',
    ]
    assert lines[BAD_LINE - 1] == statement
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def check(path):
    return run_petrel("-c", path, "--check", cwd=os.path.dirname(path))


def assert_config_error(res, path, line, *names):
    err = res.stderr.decode("utf-8", "replace")
    assert res.returncode == 1, (f"--check exit code {res.returncode}, want 1; "
                                 f"stdout={res.stdout!r} stderr={err!r}")
    assert "config ok" not in res.stdout.decode("utf-8", "replace")
    lines = line if isinstance(line, (list, tuple)) else [line]
    prefixes = [f"{path}:{n}:" for n in lines]
    assert any(p in err for p in prefixes), \
        f"stderr should contain one of {prefixes} (FILE:LINE: message); got {err!r}"
    if names:
        assert any(n in err for n in names), f"stderr should name {names}; got {err!r}"


def test_check_valid_config_prints_config_ok(tmp_path):
    path = write_cfg(tmp_path, 'petrel.configure_delivery { smtp_port = 2526, connect_timeout = "5s" }')
    res = check(path)
    assert res.returncode == 0, res.stderr.decode("utf-8", "replace")
    assert "config ok" in res.stdout.decode(), res.stdout


def test_check_full_config_with_every_option_of_the_core(tmp_path):
    """Every option the core relay uses, the kumo alias, numbers as durations, sizes
    with units and IPv6 in relay_hosts all load."""
    p1, p2 = free_port(), free_port()
    text = f"""
kumo.start_smtp_listener {{
  listen = "127.0.0.1:{p1}", name = "relay-in", hostname = "relay.example.com",
  relay_hosts = {{ "127.0.0.0/8", "::1/128", "10.0.0.0/8", "192.168.1.7/32" }},
  max_message_size = "512KB", max_recipients = 50,
  max_connections = 100, max_connections_per_ip = 10,
  greeting_timeout = "30s", command_timeout = "5m", data_timeout = 600,
}}
petrel.start_smtp_listener {{ listen = "127.0.0.1:{p2}", max_message_size = 1048576 }}
petrel.configure_queue {{
  spool_dir = "{tmp_path / 'spool'}", retry_interval = 30, max_retry_interval = "1h",
  max_retry_age = "72h", max_queue_depth = 1000,
}}
petrel.configure_delivery {{
  threads = 2, smtp_port = 2525, max_connections_per_domain = 4,
  max_deliveries_per_connection = 50, connect_timeout = "10s", helo_name = "out.example.com",
}}
petrel.configure_transport {{
  ["routed.example"] = {{ relayhost = "[127.0.0.1]:2600" }},
  [".sub.example"] = {{ relayhost = "[127.0.0.1]:2601" }},
  ["drop.example"] = "discard",
  ["blocked.example"] = "error:550 5.1.1 local delivery disabled",
  ["*"] = {{ relayhost = "[127.0.0.1]:2602" }},
}}
petrel.configure_dns {{ resolvers = {{ "127.0.0.1:5353" }} }}
petrel.configure_logging {{ path = "{tmp_path / 'log' / 'p.jsonl'}", level = "debug" }}
"""
    path = tmp_path / "full.lua"
    path.write_text(text)
    res = check(str(path))
    assert res.returncode == 0, res.stderr.decode("utf-8", "replace")
    assert "config ok" in res.stdout.decode()


def test_check_relayhost_in_delivery(tmp_path):
    path = write_cfg(tmp_path, 'petrel.configure_delivery { relayhost = "[smtp.example.com]:587" }')
    res = check(path)
    assert res.returncode == 0, res.stderr.decode("utf-8", "replace")
    assert "config ok" in res.stdout.decode()


BAD_STATEMENTS = [
    # (statement, names any of which the message must contain)
    ('petrel.configure_delivery { smtp_port = 25, bogus_option = 1 }', ["bogus_option"]),
    ('petrel.start_smtp_listener { listen = "127.0.0.1:1", frobnicate = true }', ["frobnicate"]),
    ('petrel.configure_queue { retry_intervall = "1s" }', ["retry_intervall"]),
    ('petrel.start_smtp_listener { listen = "127.0.0.1:1", max_recipients = "many" }', ["max_recipients"]),
    ('petrel.configure_delivery { smtp_port = "twenty-five" }', ["smtp_port"]),
    ('petrel.configure_delivery { max_connections_per_domain = {} }', ["max_connections_per_domain"]),
    ('petrel.start_smtp_listener { listen = 2525 }', ["listen"]),
    ('petrel.start_smtp_listener { listen = "127.0.0.1:1", relay_hosts = 42 }', ["relay_hosts"]),
    ('petrel.start_smtp_listener { listen = "127.0.0.1:1", relay_hosts = { "10.0.0.0/33" } }', ["relay_hosts", "10.0.0.0/33"]),
    ('petrel.start_smtp_listener { listen = "127.0.0.1:1", relay_hosts = { "not-an-ip/8" } }', ["relay_hosts", "not-an-ip/8"]),
    ('petrel.start_smtp_listener { listen = "127.0.0.1:1", relay_hosts = { "300.1.2.3/8" } }', ["relay_hosts", "300.1.2.3"]),
    ('petrel.start_smtp_listener { listen = "127.0.0.1:1", relay_hosts = { "::1/129" } }', ["relay_hosts", "::1/129"]),
    ('petrel.configure_queue { retry_interval = "5 parsecs" }', ["retry_interval"]),
    ('petrel.configure_queue { max_retry_age = "10x" }', ["max_retry_age"]),
    ('petrel.start_smtp_listener { listen = "127.0.0.1:1", command_timeout = "soon" }', ["command_timeout"]),
    ('petrel.configure_delivery { connect_timeout = "s30" }', ["connect_timeout"]),
    ('petrel.start_smtp_listener { listen = "127.0.0.1:1", max_message_size = "lots" }', ["max_message_size"]),
    ('petrel.start_smtp_listener { hostname = "no-listen.example" }', ["listen"]),
    ('petrel.configure_delivery { tls = "sometimes" }', ["tls"]),
    ('petrel.configure_logging { level = "loud" }', ["level"]),
    ('petrel.configure_dns { resolvers = "127.0.0.1" }', ["resolvers"]),
    ('petrel.configure_transport { ["x.example"] = "teleport" }', ["x.example", "teleport"]),
    # Redis options with the local spool would do nothing: refused
    ('petrel.configure_queue { redis_url = "redis://127.0.0.1:6379/0" }', ["redis_url"]),
    ('petrel.configure_queue { wait_replicas = 1 }', ["wait_replicas"]),
    ('petrel.configure_queue { lease = "30s" }', ["lease"]),
    ('petrel.configure_queue { key_prefix = "x:" }', ["key_prefix"]),
]


@pytest.mark.parametrize("statement,names", BAD_STATEMENTS,
                         ids=[s[0].split("{", 1)[1][:40].strip() for s in BAD_STATEMENTS])
def test_check_rejects_bad_option(tmp_path, statement, names):
    path = write_cfg(tmp_path, statement)
    assert_config_error(check(path), path, BAD_LINE, *names)


def test_check_error_line_of_option_or_call(tmp_path):
    """A multi-line call: the message gives the option's line or the call's line."""
    spool = tmp_path / "spool"
    text = (
        "-- line 1\n"
        f'petrel.start_smtp_listener {{ listen = "127.0.0.1:{free_port()}" }}\n'
        "petrel.configure_queue {\n"                 # line 3
        f'  spool_dir = "{spool}",\n'                # line 4
        '  retry_interval = "1s",\n'                 # line 5
        '  max_retry_interval = "forever",\n'        # line 6
        "}\n"
    )
    path = tmp_path / "multi.lua"
    path.write_text(text)
    assert_config_error(check(str(path)), str(path), [3, 6], "max_retry_interval")


def test_check_lua_syntax_error(tmp_path):
    path = write_cfg(tmp_path, 'petrel.configure_delivery { smtp_port = 25 ')
    res = check(path)
    err = res.stderr.decode("utf-8", "replace")
    assert res.returncode == 1, err
    assert f"{path}:" in err, err


def test_check_unknown_function(tmp_path):
    path = write_cfg(tmp_path, 'petrel.configure_nonsense { a = 1 }')
    assert_config_error(check(path), path, BAD_LINE)


def test_check_missing_file(tmp_path):
    path = str(tmp_path / "does-not-exist.lua")
    res = check(path)
    assert res.returncode == 1
    assert "does-not-exist.lua" in res.stderr.decode("utf-8", "replace")


def test_version(tmp_path):
    res = run_petrel("--version", cwd=str(tmp_path))
    out = (res.stdout + res.stderr).decode("utf-8", "replace")
    assert res.returncode == 0, out
    assert "petrel" in out.lower() and re.search(r"\d", out), out


def test_start_with_bad_config_fails(tmp_path):
    """Without --check a bad config is still fatal: exit non-zero with FILE:LINE."""
    path = write_cfg(tmp_path, 'petrel.configure_queue { retry_interval = "5 parsecs" }')
    require_binary()
    res = subprocess.run([PETREL_BIN, "-c", path], capture_output=True, timeout=15,
                         cwd=str(tmp_path), stdin=subprocess.DEVNULL)
    err = res.stderr.decode("utf-8", "replace")
    assert res.returncode != 0
    assert "petrel ready" not in err
    assert f"{path}:{BAD_LINE}:" in err and "retry_interval" in err, err


def test_listener_that_cannot_bind_is_fatal(tmp_path):
    """A port held by another socket: petrel exits non-zero naming the address."""
    require_binary()
    port = free_port()
    blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    blocker.bind(("127.0.0.1", port))
    blocker.listen(1)
    try:
        path = tmp_path / "busy.lua"
        path.write_text(
            f'petrel.start_smtp_listener {{ listen = "127.0.0.1:{port}" }}\n'
            f'petrel.configure_queue {{ spool_dir = "{tmp_path / "spool"}" }}\n'
            f'petrel.configure_dns {{ resolvers = {{ "127.0.0.1:9" }} }}\n'
            f'petrel.configure_logging {{ path = "{tmp_path / "log.jsonl"}" }}\n')
        proc = subprocess.Popen([PETREL_BIN, "-c", str(path)], cwd=str(tmp_path),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL)
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"petrel kept running with its port taken; stderr: {err!r}")
        err = err.decode("utf-8", "replace")
        assert proc.returncode != 0, err
        assert "petrel ready" not in err
        assert str(port) in err, f"the error should name the address; stderr: {err!r}"
    finally:
        blocker.close()


def test_check_does_not_bind_or_start(tmp_path):
    """--check only validates: it returns at once and the listen port stays free."""
    port = free_port()
    path = tmp_path / "c.lua"
    path.write_text(
        f'petrel.start_smtp_listener {{ listen = "127.0.0.1:{port}" }}\n'
        f'petrel.configure_queue {{ spool_dir = "{tmp_path / "spool"}" }}\n')
    t0 = time.monotonic()
    res = check(str(path))
    assert res.returncode == 0, res.stderr
    assert time.monotonic() - t0 < 5
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    finally:
        s.close()


# ---------------------------------------------------------------- honesty: no option ignored

def test_check_dead_letter_after_bad_value_is_an_error(tmp_path):
    """Applied now (tests/system/test_dead_letter.py); a bad duration is refused."""
    path = write_cfg(tmp_path, 'petrel.configure_queue { dead_letter_after = "7 days" }')
    res = check(path)
    assert_config_error(res, path, BAD_LINE, "dead_letter_after")


def test_check_auth_mechanisms_without_configure_auth_is_an_error(tmp_path):
    path = write_cfg(tmp_path, f'petrel.start_smtp_listener {{ listen = "127.0.0.1:{free_port()}", '
                               'auth_mechanisms = { "PLAIN" }, auth_require_tls = false }')
    res = check(path)
    assert_config_error(res, path, BAD_LINE, "auth_mechanisms")
    assert "configure_auth" in res.stderr.decode()
    # with a users file named, the same listener is fine
    users = tmp_path / "users"
    users.write_text("")
    with open(path, "a") as f:
        f.write(f'petrel.configure_auth {{ users_file = "{users}" }}\n')
    res = check(path)
    assert res.returncode == 0, res.stderr.decode()
    assert "config ok" in res.stdout.decode()


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return PKI(tmp_path_factory.mktemp("pki"))


def test_check_port_465_without_implicit_tls_warns_with_the_fix(tmp_path, pki):
    cert, key = petrel_cert(pki)
    tls = f'cert_file = "{cert}", key_file = "{key}"'
    path = write_cfg(tmp_path, f'petrel.start_smtp_listener {{ listen = "127.0.0.1:465", '
                               f'tls = {{ {tls} }} }}')
    res = check(path)
    err = res.stderr.decode()
    assert res.returncode == 0, err
    assert "config ok" in res.stdout.decode()
    assert f"{path}:{BAD_LINE}: warning:" in err and "465" in err, err
    assert "implicit = true" in err, err
    # with implicit = true: no warning
    path = write_cfg(tmp_path, f'petrel.start_smtp_listener {{ listen = "127.0.0.1:465", '
                               f'tls = {{ {tls}, implicit = true }} }}', name="ok.lua")
    res = check(path)
    assert res.returncode == 0 and "warning" not in res.stderr.decode(), res.stderr.decode()


# ---------------------------------------------------------------- what start would load

def start_files(tmp_path, pki):
    """Statements whose files petrel reads at start (and reload), each once with a
    missing file: (statement, names the error must contain)."""
    cert, key = petrel_cert(pki)
    gone = tmp_path / "missing"
    return [
        (f'petrel.configure_auth {{ users_file = "{gone}" }}', ["configure_auth", "users_file"]),
        (f'petrel.configure_dkim_signing {{ domain = "example.com", selector = "s1", '
         f'key_file = "{gone}" }}', ["configure_dkim_signing", "key_file"]),
        (f'petrel.start_smtp_listener {{ listen = "127.0.0.1:{free_port()}", '
         f'tls = {{ cert_file = "{gone}", key_file = "{key}" }} }}', ["tls"]),
        (f'petrel.start_smtp_listener {{ listen = "127.0.0.1:{free_port()}", '
         f'tls = {{ cert_file = "{cert}", key_file = "{gone}" }} }}', ["tls"]),
        (f'petrel.configure_delivery {{ ca_file = "{gone}" }}', ["ca_file"]),
        (f'petrel.configure_transport {{ ["x.example"] = {{ relayhost = "[127.0.0.1]:2600", '
         f'ca_file = "{gone}" }} }}', ["x.example", "ca_file"]),
        ('petrel.configure_tls { ciphers = "NO-SUCH-CIPHER" }', ["configure_tls"]),
    ]


def test_check_loads_what_start_loads(tmp_path, pki):
    """--check reads every file start reads (users, DKIM keys, certificates, CAs) and
    builds the TLS contexts, so "config ok" means the config starts; a failure names
    the line of its call, as start does."""
    for i, (statement, names) in enumerate(start_files(tmp_path, pki)):
        d = tmp_path / f"c{i}"
        d.mkdir()
        path = write_cfg(d, statement)
        assert_config_error(check(path), path, BAD_LINE, *names)
        res = run_petrel("-c", path, cwd=str(d), timeout=30)
        assert_config_error(res, path, BAD_LINE, *names)


def test_check_accepts_the_same_files_present(tmp_path, pki):
    cert, key = petrel_cert(pki)
    users = tmp_path / "users"
    users.write_text("")
    dkim = tmp_path / "dkim.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(dkim)],
                   check=True, capture_output=True)
    path = write_cfg(tmp_path, f'petrel.configure_auth {{ users_file = "{users}" }} '
                               f'petrel.configure_dkim_signing {{ domain = "example.com", '
                               f'selector = "s1", key_file = "{dkim}", '
                               f'algorithm = "ed25519-sha256" }} '
                               f'petrel.configure_delivery {{ ca_file = "{cert}" }} '
                               f'petrel.start_smtp_listener {{ listen = "127.0.0.1:{free_port()}", '
                               f'tls = {{ cert_file = "{cert}", key_file = "{key}" }} }}')
    res = check(path)
    assert res.returncode == 0, res.stderr.decode()
    assert "config ok" in res.stdout.decode()
