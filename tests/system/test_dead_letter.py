"""dead_letter_after (DESIGN §4 configure_queue): an entry that expires at
max_retry_age gets its DSN as always, and is then kept in the spool as a dead
letter instead of being removed: never delivered again, counted as dead by
GET /api/queue and `petrelctl queue`, shown with "dead": true by /api/message/ID and
`petrelctl show`, removable by the admin delete, purged dead_letter_after after it
expired, and still dead after a restart. Unset (the default), an expired entry is
removed as before. With the Redis queue the option is refused by --check.
"""

import json
import os
import subprocess
import time
import urllib.error
import urllib.request

from harness import PETRELCTL_BIN, free_port, lua_value, run_petrel, wait_for


def http_extra(port):
    return "petrel.start_http_listener " + lua_value({"listen": f"127.0.0.1:{port}"}) + "\n"


def get(url, path):
    try:
        with urllib.request.urlopen(url + path, timeout=20) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def ctl(url, *args):
    r = subprocess.run([PETRELCTL_BIN, "--url", url, *args], capture_output=True, text=True,
                       timeout=30)
    return r.returncode, r.stdout, r.stderr


def expiring_world(world, dead_letter_after):
    """slow.test always answers 451; a message to it expires after 3 s."""
    slow = world.mx_domain("slow.test", "127.0.0.4", rcpt_reply=lambda a: "451 4.7.1 later")
    sender = world.mx_domain("sender.test", "127.0.0.3")
    port = free_port()
    q = {"retry_interval": "1s", "max_retry_interval": "1s", "max_retry_age": "3s"}
    if dead_letter_after:
        q["dead_letter_after"] = dead_letter_after
    p = world.petrel(queue=q, extra=http_extra(port))
    return p, slow, sender, f"http://127.0.0.1:{port}"


def expire_one(p, rcpt="x@slow.test"):
    p.send_message("alice@sender.test", [rcpt], subject="will expire")
    rec = p.wait_record("Expiration", timeout=30, recipient=rcpt)
    return rec["id"]


def slow_row(doc):
    rows = [q for q in doc["queues"] if q["domain"] == "slow.test"]
    return rows[0] if rows else None


def test_expired_entry_is_kept_dead_visible_and_deletable(world):
    p, slow, sender, url = expiring_world(world, "1h")
    qid = expire_one(p)
    sender.wait_count(1, 20)                       # the DSN went out as always
    status, doc = get(url, f"/api/message/{qid}")
    assert status == 200, doc
    d = doc["destinations"][0]
    assert d["dead"] is True and d["state"] == "dead" and d["expired_at"], d
    assert d["recipients"] == [{"address": "x@slow.test", "state": "bounced"}]
    status, q = get(url, "/api/queue")
    assert status == 200 and q["dead"] == 1 and q["total"] == 0, q
    assert slow_row(q)["dead"] == 1 and slow_row(q)["count"] == 0, q
    # never attempted again
    n = len(slow.rcpt_attempts)
    time.sleep(3.0)
    assert len(slow.rcpt_attempts) == n
    rc, out, err = ctl(url, "queue")
    assert rc == 0 and "1 dead" in out, (out, err)
    rc, out, err = ctl(url, "show", qid)
    assert rc == 0 and "dead (expired" in out, (out, err)
    # a restart keeps it dead (the flag is in the spool), and still not attempted
    p.stop()
    p.start()
    status, doc = get(url, f"/api/message/{qid}")
    assert status == 200 and doc["destinations"][0]["dead"] is True, doc
    wait_for(lambda: get(url, "/api/queue")[1].get("dead") == 1, 10, "dead count after restart")
    time.sleep(2.0)
    assert len(slow.rcpt_attempts) == n
    assert len(sender.messages()) == 1            # no second DSN
    # the admin delete removes it
    rc, out, err = ctl(url, "delete", qid)
    assert rc == 0, (out, err)
    status, _ = get(url, f"/api/message/{qid}")
    assert status == 404
    assert get(url, "/api/queue")[1]["dead"] == 0


def test_dead_letter_purged_after_dead_letter_after(world):
    p, slow, sender, url = expiring_world(world, "3s")
    qid = expire_one(p)
    assert get(url, f"/api/message/{qid}")[0] == 200
    wait_for(lambda: get(url, f"/api/message/{qid}")[0] == 404, 20, "the purge")
    assert get(url, "/api/queue")[1]["dead"] == 0
    assert f"{qid}: dead letter for slow.test purged" in p.stderr_text()
    # purged from the spool itself: a restart does not bring it back
    p.stop()
    p.start()
    assert get(url, f"/api/message/{qid}")[0] == 404


def test_without_dead_letter_after_expired_entry_is_removed(world):
    p, slow, sender, url = expiring_world(world, None)
    qid = expire_one(p)
    wait_for(lambda: get(url, f"/api/message/{qid}")[0] == 404, 10, "removal at expiry")
    assert get(url, "/api/queue")[1]["dead"] == 0


def write_cfg(tmp_path, queue_stmt):
    path = tmp_path / "petrel.lua"
    path.write_text(
        f'petrel.start_smtp_listener {{ listen = "127.0.0.1:{free_port()}" }}\n'
        f"{queue_stmt}\n")
    return str(path)


def test_check_dead_letter_after(tmp_path):
    ok = write_cfg(tmp_path, f'petrel.configure_queue {{ spool_dir = "{tmp_path}/s", '
                             'dead_letter_after = "7d" }')
    r = run_petrel("-c", ok, "--check", cwd=str(tmp_path))
    assert r.returncode == 0 and b"config ok" in r.stdout, (r.stdout, r.stderr)
    bad = write_cfg(tmp_path, 'petrel.configure_queue { dead_letter_after = "a week" }')
    r = run_petrel("-c", bad, "--check", cwd=str(tmp_path))
    assert r.returncode == 1 and f"{bad}:2:".encode() in r.stderr, r.stderr
    assert b"dead_letter_after" in r.stderr
    redis = write_cfg(tmp_path, 'petrel.configure_queue { backend = "redis", '
                                'redis_url = "redis://127.0.0.1:6399/0", '
                                'dead_letter_after = "7d" }')
    r = run_petrel("-c", redis, "--check", cwd=str(tmp_path))
    assert r.returncode == 1 and f"{redis}:2:".encode() in r.stderr, r.stderr
    assert b"dead_letter_after" in r.stderr and b"redis" in r.stderr
