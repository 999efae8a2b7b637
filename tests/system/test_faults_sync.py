"""fsync errors (issue 10, "Write and fsync errors"): an LD_PRELOAD shim
(tests/chaos/failsync.c) makes fsync/fdatasync fail with EIO while a flag file exists.
A message whose sync failed never gets 250 (nor HTTP success); petrel stays up,
keeps delivering what it acknowledged before, and takes mail again once syncs work.
"""

import os
import smtplib
import stat
import subprocess

import pytest

import harness
from harness import make_message, msgid_of, wait_for

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


@pytest.fixture
def failsync(tmp_path, monkeypatch):
    so = tmp_path / "failsync.so"
    r = subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", str(so),
                        os.path.join(REPO, "tests", "chaos", "failsync.c"), "-ldl"],
                       capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot build the shim: {r.stderr.decode()[-500:]}")
    flag = tmp_path / "fail-now"
    wrapper = tmp_path / "petrel-failsync"
    wrapper.write_text(f"#!/bin/sh\nexport LD_PRELOAD={so} FAILSYNC_FLAG={flag}\n# an ASan build wants its runtime first; the shim is preloaded before it\nexport ASAN_OPTIONS=${{ASAN_OPTIONS:+$ASAN_OPTIONS:}}verify_asan_link_order=0\n"
                       f"exec {harness.PETREL_BIN} \"$@\"\n")
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(harness, "PETREL_BIN", str(wrapper))
    return flag


def send(p, rcpt):
    data = make_message("alice@sender.test", [rcpt])
    s = p.smtp(timeout=30)
    try:
        code, _ = s.mail("alice@sender.test")
        if code != 250:
            return code, msgid_of(data)
        code, _ = s.rcpt(rcpt)
        if code != 250:
            return code, msgid_of(data)
        try:
            code, _ = s.data(data)
        except smtplib.SMTPDataError as e:
            code = e.smtp_code
    except smtplib.SMTPResponseException as e:
        code = e.smtp_code
    finally:
        try:
            s.quit()
        except (OSError, smtplib.SMTPException):
            s.close()
    return code, msgid_of(data)


def test_fsync_failure_never_acknowledged(world, failsync):
    dest = world.mx_domain("dest.test", "127.0.0.2", sink=False)
    p = world.petrel()
    code, before = send(p, "before@dest.test")
    assert code == 250
    failsync.write_text("")
    codes = [send(p, f"fail{i}@dest.test") for i in range(3)]
    assert all(c in (451, 452) for c, _ in codes), codes
    p.assert_alive()
    assert "spool: write failed" in p.stderr_text()
    sink = world.sink("127.0.0.2")
    sink.wait_message(before, 30)                  # acknowledged before: delivered
    failsync.unlink()
    wait_for(lambda: send(p, "after@dest.test")[0] == 250, 30,
             "mail taken again once syncs work", interval=1)
    wait_for(lambda: sink.for_rcpt("after@dest.test"), 30, "delivery after recovery")
    # The refused ones were never reported as received.
    for i in range(3):
        assert not p.records("Reception", recipient=f"fail{i}@dest.test")
    assert p.records("Reception", recipient="before@dest.test")
    p.assert_alive()
    del dest
