"""Live reload (DESIGN §3, §11): SIGHUP and POST /api/reload / `petrelctl reload` load
the config file again; new sessions use the new generation while sessions in progress
finish on theirs; a bad file is logged as `reload failed: FILE:LINE: message` and the
running config keeps serving; listeners added by a reload accept and removed ones
refuse; the event log and the diagnostic log are reopened (logrotate); a reload under
load loses and duplicates nothing.
"""

import collections
import json
import os
import re
import signal
import smtplib
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest

from certs import PKI, listener_tls
from harness import (PETREL_BIN, PETRELCTL_BIN, make_message, msgid_of, wait_for,
                     free_port, lua_value)

HOOK = ('petrel.on("smtp_message_received", function(domain, meta)\n'
        '  petrel.add_header("X-Gen", "{gen}")\n'
        'end)\n')


def write_config(world, p, **cfg):
    """Rewrites p's config file with world's defaults merged with cfg."""
    text = world.config(p.workdir, p.port, **cfg)
    tmp = p.cfg_path + ".new"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, p.cfg_path)


def reloads_logged(p, what="reload ok"):
    return p.stderr_text().count(what)


def sighup(p, expect="reload ok", timeout=15):
    """SIGHUP and wait until one more `expect` line is on stderr."""
    before = reloads_logged(p, expect)
    p.signal(signal.SIGHUP)
    wait_for(lambda: reloads_logged(p, expect) > before, timeout,
             f"'{expect}' after SIGHUP; stderr:\n{p.stderr_tail(30)}")


def header_of(txn, name):
    v = txn.header(name)
    return v.strip() if v else v


def http_post(url, path, timeout=20):
    req = urllib.request.Request(url + path, data=b"{}", method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def ctl(url, *args, timeout=30):
    return subprocess.run([PETRELCTL_BIN, "--url", url, *args], capture_output=True,
                          text=True, timeout=timeout)


def connect_refused(host, port):
    try:
        socket.create_connection((host, port), timeout=3).close()
        return False
    except ConnectionRefusedError:
        return True


# ---------------------------------------------------------------- relay_hosts and hooks

def test_relay_hosts_change_applies_to_next_session_only(world):
    p, dest, _ = world.basic()
    old = p.smtp()                           # opened on the startup generation
    write_config(world, p, listener={"relay_hosts": ["10.99.0.0/16"]})
    sighup(p)
    # a new session sees the new relay_hosts: 127.0.0.1 may no longer relay
    s = p.smtp()
    assert s.mail("alice@sender.test")[0] == 250
    code, text = s.rcpt("bob@dest.test")
    assert code == 554 and b"Relay access denied" in text, (code, text)
    s.quit()
    # the session opened before keeps the generation it started with
    data = make_message("alice@sender.test", ["bob@dest.test"], subject="old session")
    p.send("alice@sender.test", ["bob@dest.test"], data, smtp=old)
    old.quit()
    dest.wait_message(msgid_of(data))
    # and back: a second reload lets 127.0.0.1 relay again
    write_config(world, p)
    sighup(p)
    world.assert_serving(p)


def test_hook_change_next_session_sees_it_open_session_keeps_old(world):
    p, dest, _ = world.basic(extra=HOOK.format(gen="one"))
    old = p.smtp()
    write_config(world, p, extra=HOOK.format(gen="two"))
    sighup(p)
    new_id = p.send_message(subject="new session")
    d_old = make_message("alice@sender.test", ["bob@dest.test"], subject="old session")
    p.send("alice@sender.test", ["bob@dest.test"], d_old, smtp=old)
    old.quit()
    assert header_of(dest.wait_message(new_id), "X-Gen") == "two"
    assert header_of(dest.wait_message(msgid_of(d_old)), "X-Gen") == "one"


def test_reload_ok_shown_at_log_level_error(world):
    """An operator asked: the answer shows whatever the log level."""
    p, dest, _ = world.basic(logging={"level": "error"})
    write_config(world, p, logging={"level": "error"}, extra=HOOK.format(gen="quiet"))
    sighup(p)
    assert re.search(r"notice: reload ok", p.stderr_text())
    mid = p.send_message(subject="quiet")
    assert header_of(dest.wait_message(mid), "X-Gen") == "quiet"


def sha512_crypt(password):
    r = subprocess.run(["openssl", "passwd", "-6", "-stdin"], input=(password + "\n").encode(),
                       capture_output=True, timeout=30, check=True)
    return r.stdout.decode().strip()


def test_users_file_read_again_on_reload(world, tmp_path):
    users = tmp_path / "users.txt"
    users.write_text(f"alice:{sha512_crypt('Alice-pw1')}\n")
    listener = {"auth_mechanisms": ["PLAIN"], "auth_require_tls": False}
    auth = f'petrel.configure_auth {{ users_file = "{users}" }}\n'
    p, dest, _ = world.basic(listener=listener, extra=auth)

    def login(user, pw):
        s = p.smtp()
        try:
            return s.login(user, pw)[0]
        except smtplib.SMTPAuthenticationError as e:
            return e.smtp_code
        finally:
            s.close()
    assert login("alice", "Alice-pw1") == 235
    assert login("bob", "Bob-pw2") == 535
    users.write_text(f"alice:{sha512_crypt('Alice-pw1')}\nbob:{sha512_crypt('Bob-pw2')}\n")
    sighup(p)
    assert login("bob", "Bob-pw2") == 235
    assert login("alice", "Alice-pw1") == 235


# ---------------------------------------------------------------- bad config

def test_bad_config_is_logged_with_file_line_and_old_one_keeps_serving(world):
    http_port = free_port()
    url = f"http://127.0.0.1:{http_port}"
    http = "petrel.start_http_listener " + lua_value({"listen": f"127.0.0.1:{http_port}"})
    p, dest, _ = world.basic(extra=http + "\n" + HOOK.format(gen="good"))
    good = open(p.cfg_path).read()
    # an unknown option on line 3 of the new file
    bad = good.replace("-- generated by tests/system/harness.py\n",
                       "-- generated by tests/system/harness.py\n\n"
                       "petrel.configure_queue { no_such_option = 1 }\n", 1)
    with open(p.cfg_path, "w") as f:
        f.write(bad)
    sighup(p, "reload failed")
    line = [l for l in p.stderr_text().splitlines() if "reload failed" in l][-1]
    assert re.search(re.escape(p.cfg_path) + r":3: .*no_such_option", line), line
    assert "reload ok" not in p.stderr_text()
    # the running config still serves, hook and all
    mid = p.send_message(subject="after a bad reload")
    assert header_of(dest.wait_message(mid), "X-Gen") == "good"
    # the same through the API and petrelctl: 400 with the error, exit 1
    status, doc = http_post(url, "/api/reload")
    assert status == 400 and re.match(re.escape(p.cfg_path) + r":3: ", doc["error"]), doc
    r = ctl(url, "reload")
    assert r.returncode == 1 and f"{p.cfg_path}:3:" in r.stderr, (r.returncode, r.stderr)
    # a Lua syntax error is a reload failure too, never a crash
    with open(p.cfg_path, "w") as f:
        f.write(good + "\nthis is not lua\n")
    sighup(p, "reload failed")
    p.assert_alive()
    # fixed: the API reloads it and the new hook applies
    with open(p.cfg_path, "w") as f:
        f.write(good.replace('"good"', '"fixed"'))
    status, doc = http_post(url, "/api/reload")
    assert (status, doc) == (200, {"reloaded": True})
    mid = p.send_message(subject="after the API reload")
    assert header_of(dest.wait_message(mid), "X-Gen") == "fixed"
    with open(p.cfg_path, "w") as f:
        f.write(good.replace('"good"', '"ctl"'))
    r = ctl(url, "reload")
    assert r.returncode == 0 and "reloaded" in r.stdout, (r.returncode, r.stdout, r.stderr)
    mid = p.send_message(subject="after petrelctl reload")
    assert header_of(dest.wait_message(mid), "X-Gen") == "ctl"


def test_reload_with_unreadable_tls_key_keeps_old_config(world, tmp_path):
    p, dest, _ = world.basic()
    write_config(world, p, listener={"tls": {"cert_file": str(tmp_path / "missing.crt"),
                                             "key_file": str(tmp_path / "missing.key")}})
    sighup(p, "reload failed")
    line = [l for l in p.stderr_text().splitlines() if "reload failed" in l][-1]
    assert re.search(re.escape(p.cfg_path) + r":\d+: .*missing\.(crt|key)", line), line
    world.assert_serving(p)
    s = p.smtp()
    assert not s.has_extn("starttls")
    s.quit()


# ---------------------------------------------------------------- listeners

@pytest.mark.parametrize("threads", [1, 3], ids=["1-worker", "3-workers"])
def test_listener_added_accepts_and_removed_one_refuses(world, threads):
    procs = f"petrel.configure_process {{ smtp_threads = {threads} }}\n"
    p, dest, _ = world.basic(extra=procs)
    port2 = free_port()
    second = {"listen": f"127.0.0.1:{port2}", "name": "second", "hostname": "second.test"}
    write_config(world, p, listeners=[second], extra=procs)
    sighup(p)
    s = smtplib.SMTP("127.0.0.1", port2, local_hostname="client.test", timeout=10)
    code, resp = s.ehlo()
    assert code == 250 and resp.startswith(b"second.test"), resp
    data = make_message("alice@sender.test", ["bob@dest.test"], subject="via second")
    p.send("alice@sender.test", ["bob@dest.test"], data, smtp=s)
    s.quit()
    dest.wait_message(msgid_of(data))
    # an open session on the first listener survives its removal
    old = p.smtp()
    # only the second listener now: the first port refuses
    text = world.config(p.workdir, port2, listener={"name": "second", "hostname": "second.test"},
                        extra=procs)
    with open(p.cfg_path, "w") as f:
        f.write(text)
    sighup(p)
    assert connect_refused("127.0.0.1", p.port)
    data = make_message("alice@sender.test", ["bob@dest.test"], subject="old listener session")
    p.send("alice@sender.test", ["bob@dest.test"], data, smtp=old)
    old.quit()
    dest.wait_message(msgid_of(data))
    for _ in range(6):   # several connections: every worker's socket of the kept listener
        s = smtplib.SMTP("127.0.0.1", port2, local_hostname="client.test", timeout=10)
        assert s.ehlo()[0] == 250
        s.quit()
    for _ in range(6):   # and every worker closed its socket of the removed one
        assert connect_refused("127.0.0.1", p.port)
    # a changed option on a kept listener applies to new sessions
    text = world.config(p.workdir, port2, listener={"name": "second", "hostname": "renamed.test"},
                        extra=procs)
    with open(p.cfg_path, "w") as f:
        f.write(text)
    sighup(p)
    s = smtplib.SMTP("127.0.0.1", port2, local_hostname="client.test", timeout=10)
    code, resp = s.ehlo()
    assert resp.startswith(b"renamed.test"), resp
    s.quit()


def test_reload_to_a_port_in_use_fails_and_keeps_listening(world):
    p, dest, _ = world.basic()
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        port2 = busy.getsockname()[1]
        write_config(world, p, listeners=[{"listen": f"127.0.0.1:{port2}", "name": "busy"}])
        sighup(p, "reload failed")
        line = [l for l in p.stderr_text().splitlines() if "reload failed" in l][-1]
        assert re.search(re.escape(p.cfg_path) + r":\d+: start_smtp_listener", line), line
        world.assert_serving(p)
    finally:
        busy.close()


def peer_cert_cn(port, ca_file, implicit=False):
    """CN of the certificate petrel presents on port (STARTTLS or implicit TLS)."""
    import ssl
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.check_hostname = False
    if implicit:
        s = smtplib.SMTP_SSL("127.0.0.1", port, local_hostname="client.test", timeout=10,
                             context=ctx)
        s.ehlo()
    else:
        s = smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=10)
        s.ehlo()
        s.starttls(context=ctx)
        s.ehlo()
    cert = s.sock.getpeercert()
    s.quit()
    return dict(x[0] for x in cert["subject"])["commonName"]


def test_listener_tls_certificate_changed_by_reload(world, tmp_path):
    pki = PKI(tmp_path / "pki")
    old_cert, old_key = pki.leaf("old.petrel.test", ips=["127.0.0.1"])
    new_cert, new_key = pki.leaf("new.petrel.test", ips=["127.0.0.1"])
    p, dest, _ = world.basic(listener={"tls": {"cert_file": old_cert, "key_file": old_key}})
    assert peer_cert_cn(p.port, pki.ca_file) == "old.petrel.test"
    write_config(world, p, listener={"tls": {"cert_file": new_cert, "key_file": new_key}})
    sighup(p)
    assert peer_cert_cn(p.port, pki.ca_file) == "new.petrel.test"
    # an implicit-TLS listener added by a reload speaks TLS from the first byte
    port2 = free_port()
    write_config(world, p, listener={"tls": {"cert_file": new_cert, "key_file": new_key}},
                 listeners=[{"listen": f"127.0.0.1:{port2}", "name": "smtps",
                             "tls": {"cert_file": old_cert, "key_file": old_key,
                                     "implicit": True}}])
    sighup(p)
    assert peer_cert_cn(port2, pki.ca_file, implicit=True) == "old.petrel.test"
    world.assert_serving(p)


# ---------------------------------------------------------------- logrotate

def test_logrotate_mv_then_sighup_reopens_event_log_nothing_lost(world):
    p, dest, _ = world.basic()
    first = [p.send_message(subject=f"before {i}") for i in range(3)]
    p.wait_records("Reception", 3)
    rotated = p.log_path + ".1"
    os.rename(p.log_path, rotated)
    # written between the mv and the SIGHUP: still go to the moved file
    between = p.send_message(subject="between")
    sighup(p)
    after = [p.send_message(subject=f"after {i}") for i in range(3)]
    for m in first + [between] + after:
        dest.wait_message(m)

    def ids(path):
        out = collections.Counter()
        with open(path) as f:
            for line in f:
                r = json.loads(line)
                if r["type"] == "Reception":
                    out[r["id"]] += 1
        return out
    wait_for(lambda: os.path.exists(p.log_path) and sum(ids(p.log_path).values()) >= 3,
             10, "Reception records in the new log file")
    old, new = ids(rotated), ids(p.log_path)
    assert sum(old.values()) == 4 and sum(new.values()) == 3, (old, new)
    assert not set(old) & set(new)


def test_reload_moves_event_log_to_new_path(world, tmp_path):
    p, dest, _ = world.basic()
    before = p.send_message(subject="before")
    p.wait_records("Reception", 1)
    new_log = tmp_path / "elsewhere" / "events.jsonl"
    write_config(world, p, logging={"path": str(new_log)})
    sighup(p)
    after = p.send_message(subject="after")
    dest.wait_message(after)
    wait_for(lambda: new_log.exists() and '"Reception"' in new_log.read_text(), 10,
             "a Reception record in the new log path")
    new_ids = {json.loads(l)["id"] for l in new_log.read_text().splitlines()}
    old_ids = {r["id"] for r in p.records("Reception")}
    assert len(old_ids) == 1 and not old_ids & new_ids, (old_ids, new_ids)


def test_sighup_reopens_diagnostic_log_file(world, tmp_path):
    """petrel started with stderr on a file (as a service manager does): after mv
    and SIGHUP, diagnostic lines go to a new file of the same name."""
    port = free_port()
    dest = world.mx_domain("dest.test", "127.0.0.2")
    workdir = tmp_path / "diag"
    workdir.mkdir()
    cfg = workdir / "petrel.lua"
    cfg.write_text(world.config(str(workdir), port))
    diag = workdir / "petrel.err"
    with open(diag, "ab") as errf:
        proc = subprocess.Popen([PETREL_BIN, "-c", str(cfg)], cwd=workdir, stderr=errf,
                                stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    try:
        wait_for(lambda: "petrel ready" in diag.read_text(), 15, "petrel ready")
        os.rename(diag, str(diag) + ".1")
        os.kill(proc.pid, signal.SIGHUP)
        wait_for(lambda: diag.exists() and "reload ok" in diag.read_text(), 15,
                 "reload ok in the new diagnostic file")
        assert "reload ok" not in open(str(diag) + ".1").read()
        assert "petrel ready" in open(str(diag) + ".1").read()
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(15) == 0


# ---------------------------------------------------------------- under load

@pytest.mark.parametrize("threads", [1, 3], ids=["1-worker", "3-workers"])
def test_sighup_under_load_loses_and_duplicates_nothing(world, threads):
    procs = f"petrel.configure_process {{ smtp_threads = {threads} }}\n"
    p, dest, _ = world.basic(extra=procs + HOOK.format(gen="0"))
    stop = threading.Event()
    sent, errors = [], []
    lock = threading.Lock()

    def generator(n):
        while not stop.is_set():
            try:
                s = p.smtp(timeout=30)
                for _ in range(5):
                    if stop.is_set():
                        break
                    data = make_message("alice@sender.test", ["bob@dest.test"],
                                        subject=f"load {n}")
                    p.send("alice@sender.test", ["bob@dest.test"], data, smtp=s)
                    with lock:
                        sent.append(msgid_of(data))
                s.quit()
            except Exception as e:  # any refusal or drop is a failure of the test
                with lock:
                    errors.append(repr(e))
                return

    threads = [threading.Thread(target=generator, args=(i,), daemon=True) for i in range(4)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: len(sent) >= 20, 30, "the generator to get going")
        for gen in range(1, 11):
            write_config(world, p, extra=procs + HOOK.format(gen=gen))
            sighup(p)
            # the next message in a new session carries the new generation's header
            mid = p.send_message(subject=f"probe {gen}")
            assert header_of(dest.wait_message(mid, 30), "X-Gen") == str(gen)
            with lock:
                sent.append(mid)
            time.sleep(0.2)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert not errors, errors
    assert len(sent) > 50, len(sent)
    dest.wait_count(len(sent), 60)
    time.sleep(1.0)   # a duplicate would arrive late
    got = collections.Counter((t.message_id or "").strip("<>") for t in dest.messages())
    missing = [m for m in sent if got[m.strip("<>")] == 0]
    dups = {m: n for m, n in got.items() if n > 1}
    assert not missing and not dups, (len(missing), dups)
    assert sum(got.values()) == len(sent)
    p.assert_alive()
    assert "reload failed" not in p.stderr_text()


def test_sighup_burst_coalesces_and_sigterm_still_stops_promptly(world):
    """A burst of SIGHUPs is not a backlog of reloads: SIGTERM right after it still
    stops petrel within the usual 10 s, and it kept serving throughout."""
    p, dest, _ = world.basic(extra="petrel.configure_process { smtp_threads = 2 }\n")
    for _ in range(300):
        os.kill(p.pid, signal.SIGHUP)
        time.sleep(0.002)
    wait_for(lambda: reloads_logged(p) >= 1, 15, "a reload")
    world.assert_serving(p)
    n = reloads_logged(p)
    assert n < 300, n          # coalesced
    p.stop()                   # exit 0 within 10 s, or the test fails
