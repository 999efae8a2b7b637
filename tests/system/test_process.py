"""configure_process { user }: petrel binds as root, then runs as the given user,
and the spool and log stay usable (issue 3)."""
import os
import pwd
import tempfile

import pytest

from harness import Lua, make_message, msgid_of


def _uid_of(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Uid:"):
                return [int(x) for x in line.split()[1:]]
    raise AssertionError("no Uid line")


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_drops_root_and_keeps_delivering(world):
    nobody = pwd.getpwnam("nobody")
    # a spool outside pytest's private (0700) tmp tree, so 'nobody' can reach it
    base = tempfile.mkdtemp(prefix="petrel-user-")
    os.chmod(base, 0o755)
    dest = world.mx_domain("dest.test", "127.0.0.2")
    world.mx_domain("sender.test", "127.0.0.3")
    p = world.petrel(queue={"spool_dir": os.path.join(base, "spool")},
                     logging={"path": os.path.join(base, "log", "petrel.jsonl")},
                     extra=Lua('petrel.configure_process { user = "nobody" }'))
    uids = _uid_of(p.pid)
    assert uids == [nobody.pw_uid] * 4, f"petrel still runs with uids {uids}"
    assert "running as user nobody" in p.stderr_text()
    data = make_message(to=["u@dest.test"], subject="as nobody")
    p.send("alice@sender.test", ["u@dest.test"], data)
    dest.wait_message(msgid_of(data))
    # the spool is the user's now, so a restart (as root again) and new writes work
    st = os.stat(os.path.join(base, "spool"))
    assert st.st_uid == nobody.pw_uid
    p.stop()
    p.start()
    data = make_message(to=["v@dest.test"], subject="after restart")
    p.send("alice@sender.test", ["v@dest.test"], data)
    dest.wait_message(msgid_of(data))


def test_unknown_user_is_a_startup_error(world):
    p = world.petrel(start=False, extra=Lua('petrel.configure_process { user = "no-such-user-x" }'))
    p.start(wait=False)
    rc = p.proc.wait(10)
    p.expected_exit = True
    assert rc != 0, "petrel must refuse to start with an unknown user"
    assert "no-such-user-x" in p.stderr_text()


def _thread_names(pid):
    names = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                names.append(f.read().strip())
        except OSError:
            pass
    return names


def test_smtp_threads_default_and_option(world):
    """smtp_threads: 0 (default) = half the cores, at least one; a number is that many
    SMTP worker loops, and mail flows through them."""
    dest = world.mx_domain("dest.test", "127.0.0.2")
    world.mx_domain("sender.test", "127.0.0.3")
    p = world.petrel()
    smtp = [n for n in _thread_names(p.pid) if n.startswith("petrel-smtp-")]
    assert len(smtp) == max(1, os.cpu_count() // 2), smtp
    assert any(n.startswith("petrel-dlv-") for n in _thread_names(p.pid))
    p.stop()

    p = world.petrel(extra=Lua('petrel.configure_process { smtp_threads = 3 }'))
    assert sorted(n for n in _thread_names(p.pid) if n.startswith("petrel-smtp-")) == \
        ["petrel-smtp-0", "petrel-smtp-1", "petrel-smtp-2"]
    ids = []
    for i in range(12):  # SO_REUSEPORT spreads these over the three loops
        data = make_message(to=[f"u{i}@dest.test"], subject=f"thread {i}")
        p.send("alice@sender.test", [f"u{i}@dest.test"], data)
        ids.append(msgid_of(data))
    for m in ids:
        dest.wait_message(m)
