"""contrib/logrotate/petrel run by Debian's logrotate against a log a running petrel
writes: the config parses, the file is rotated, and after the postrotate SIGHUP new
records go to a fresh petrel.jsonl (none lost between the two files)."""

import os
import re
import shutil
import subprocess

import pytest

from harness import REPO, wait_for

LOGROTATE = shutil.which("logrotate") or "/usr/sbin/logrotate"
pytestmark = pytest.mark.skipif(not os.path.exists(LOGROTATE),
                                reason="logrotate (Debian package) missing")


def local_config(tmp_path, log_dir, pid):
    text = open(os.path.join(REPO, "contrib", "logrotate", "petrel")).read()
    assert "/var/log/petrel/*.jsonl" in text and "postrotate" in text
    text = text.replace("/var/log/petrel", log_dir)
    text = re.sub(r"create 0640 petrel petrel", "create 0640", text)
    # the unit's main pid gets the signal: here, the test's petrel
    text = re.sub(r"systemctl kill --signal=HUP --kill-whom=main petrel.service",
                  f"kill -HUP {pid}", text)
    cfg = tmp_path / "logrotate.conf"
    cfg.write_text(text)
    return cfg


def test_logrotate_config_parses(world, tmp_path):
    p = world.petrel()
    cfg = local_config(tmp_path, os.path.dirname(p.log_path), p.pid)
    r = subprocess.run([LOGROTATE, "-d", "-s", str(tmp_path / "state"), str(cfg)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "error" not in r.stderr.lower(), r.stderr


def test_logrotate_rotates_and_petrel_reopens(world, tmp_path):
    dest = world.mx_domain("dest.test", "127.0.0.2")
    p = world.petrel()
    log_dir = os.path.dirname(p.log_path)
    before = p.send_message("alice@sender.test", ["bob@dest.test"])
    dest.wait_message(before)
    p.wait_record("Delivery")
    cfg = local_config(tmp_path, log_dir, p.pid)
    r = subprocess.run([LOGROTATE, "-f", "-s", str(tmp_path / "state"), str(cfg)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    rotated = os.path.join(log_dir, "petrel.jsonl.1")
    assert os.path.exists(rotated)
    after = p.send_message("alice@sender.test", ["carol@dest.test"])
    dest.wait_message(after)
    wait_for(lambda: os.path.exists(p.log_path) and
             "carol@dest.test" in open(p.log_path).read(), 10, "records in the new log")
    old = open(rotated).read()
    assert "bob@dest.test" in old and "carol@dest.test" not in old
