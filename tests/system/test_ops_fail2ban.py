"""contrib/fail2ban (DESIGN §11) run by Debian's fail2ban-regex against a JSON log
petrel wrote: failed AUTHs from a client must be found with that client's address,
and no other record may match. petrel writes AuthFailure records per §11; where a
build does not (yet), the real-log check is an expected failure and the filter is
still checked against records in petrel's exact format."""

import base64
import json
import os
import re
import shutil
import subprocess

import pytest

from harness import PETRELCTL_BIN, REPO

FILTER = os.path.join(REPO, "contrib", "fail2ban", "filter.d", "petrel.conf")
F2B = shutil.which("fail2ban-regex")

pytestmark = pytest.mark.skipif(not F2B, reason="fail2ban-regex (Debian fail2ban) missing")


def f2b(log):
    r = subprocess.run([F2B, "--print-all-matched", "-v", str(log), FILTER], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    m = re.search(r"^Lines: \d+ lines, \d+ ignored, (\d+) matched", r.stdout, re.M)
    assert m, r.stdout
    return int(m.group(1)), r.stdout


def petrel_with_auth(world, tmp_path):
    pw = subprocess.run([PETRELCTL_BIN, "hash-password"], input=b"right-pw\n",
                        capture_output=True, check=True).stdout.decode().strip()
    users = tmp_path / "users.txt"
    users.write_text(f"alice:{pw}\n")
    return world.petrel(listener={"auth_mechanisms": ["PLAIN", "LOGIN"],
                                  "auth_require_tls": False},
                        extra=f'petrel.configure_auth {{ users_file = "{users}" }}')


def fail_auth(p, n):
    for i in range(n):
        with p.raw() as c:
            assert c.cmd("EHLO client.test")[0] == 250
            tok = base64.b64encode(f"\0alice\0wrong-{i}".encode()).decode()
            assert c.cmd(f"AUTH PLAIN {tok}")[0] == 535
            c.cmd("QUIT")


def test_filter_on_a_real_log(world, tmp_path):
    p = petrel_with_auth(world, tmp_path)
    fail_auth(p, 3)
    p.send_message("alice@sender.test", ["bob@dest.test"])   # a record that must not match
    p.wait_record("Reception")
    recs = p.records()
    auth = [r for r in recs if r["type"] == "AuthFailure"]
    assert len(auth) == 3 and {r["peer_address"] for r in auth} == {"127.0.0.1"}
    n, out = f2b(p.log_path)
    assert n == 3, out


def test_filter_on_petrel_format(world, tmp_path):
    """Lines in exactly petrel's JSON layout (taken from a record petrel wrote), with
    type AuthFailure and the §11 extra key: every one matches, with its address;
    the other records do not."""
    p = world.petrel()
    p.send_message("alice@sender.test", ["bob@dest.test"])
    p.wait_record("Reception")
    with open(p.log_path) as f:
        real = [l.rstrip("\n") for l in f if l.strip()]
    rec = json.loads(real[0])
    lines = list(real)
    for ip in ("192.0.2.7", "2001:db8::5", "192.0.2.7"):
        r = dict(rec, type="AuthFailure", id=None, recipient=None, queue=None, peer_address=ip,
                 code=535, response="535 5.7.8 Authentication credentials invalid",
                 size=None, delay=None, attempts=None, user="alice")
        lines.append(json.dumps(r, separators=(",", ":")))
    log = tmp_path / "petrel.jsonl"
    log.write_text("\n".join(lines) + "\n")
    n, out = f2b(log)
    assert n == 3, out
    assert "192.0.2.7" in out and "2001:db8::5" in out
