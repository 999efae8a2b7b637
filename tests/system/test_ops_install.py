"""`make install` (PREFIX, DESTDIR): binaries, the systemd unit with the install's
paths, the default config (never overwritten), logrotate and fail2ban files, the
man pages generated from man/*.md, and contrib/. Runs the real make into a temp
DESTDIR and checks the tree and that the installed pieces work."""

import os
import shutil
import stat
import subprocess

import pytest

from harness import REPO


def make_install(destdir, prefix="/usr", **extra):
    args = ["make", "--no-print-directory", "-C", REPO, "install", f"DESTDIR={destdir}",
            f"PREFIX={prefix}"] + [f"{k}={v}" for k, v in extra.items()]
    if os.environ.get("PETREL_BIN"):       # the tree under test, e.g. build-asan/
        args.append("BUILD=" + os.path.relpath(os.path.dirname(os.environ["PETREL_BIN"]), REPO))
    r = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr


def test_make_install_tree(tmp_path):
    d = tmp_path / "root"
    make_install(d)
    def mode(p):
        return stat.S_IMODE(os.stat(d / p).st_mode)
    for p in ("usr/sbin/petrel", "usr/sbin/petrel-sendmail", "usr/bin/petrelctl"):
        assert mode(p) == 0o755, p
    assert os.readlink(d / "usr/sbin/sendmail") == "petrel-sendmail"
    unit = (d / "usr/lib/systemd/system/petrel.service").read_text()
    assert "ExecStart=/usr/sbin/petrel -c /etc/petrel/petrel.lua" in unit
    assert "/usr/local" not in unit
    assert mode("etc/petrel/petrel.lua") == 0o640
    assert (d / "etc/logrotate.d/petrel").is_file()
    assert (d / "etc/fail2ban/filter.d/petrel.conf").is_file()
    for p in ("grafana/delivery-overview.json", "prometheus/alerts.yml",
              "kubernetes/petrel/Chart.yaml", "docker/Dockerfile", "systemd/petrel.service",
              "fail2ban/jail.d/petrel.conf"):
        assert (d / "usr/share/doc/petrel/contrib" / p).is_file(), p
    # the installed binaries run, and the installed config is valid
    v = subprocess.run([str(d / "usr/sbin/petrel"), "--version"], capture_output=True, text=True)
    assert v.returncode == 0 and v.stdout.startswith("petrel ")
    r = subprocess.run([str(d / "usr/sbin/petrel"), "--check", "-c",
                        str(d / "etc/petrel/petrel.lua")], capture_output=True, text=True)
    assert r.returncode == 0 and "config ok" in r.stdout, r.stderr
    # man pages: petrel(8), petrelctl(8), petrel.lua(5), rendered without warnings
    for page in ("man8/petrel.8", "man8/petrelctl.8", "man5/petrel.lua.5"):
        path = d / "usr/share/man" / page
        text = path.read_text()
        assert text.startswith('.TH "'), page
        if shutil.which("man"):
            r = subprocess.run(["man", "--warnings", "-l", str(path)], capture_output=True,
                               text=True, env=dict(os.environ, MANWIDTH="80", MANPAGER="cat",
                                                   PAGER="cat"))
            assert r.returncode == 0 and "NAME" in r.stdout, r.stderr
            assert not r.stderr.strip(), f"{page}: {r.stderr}"
    assert "proxy_trusted_hosts" in (d / "usr/share/man/man5/petrel.lua.5").read_text()


def test_install_keeps_existing_config(tmp_path):
    d = tmp_path / "root"
    cfg = d / "etc/petrel/petrel.lua"
    cfg.parent.mkdir(parents=True)
    cfg.write_text("-- mine\n")
    make_install(d, prefix="/opt/petrel", SENDMAIL_LINK="no")
    assert cfg.read_text() == "-- mine\n"
    assert (d / "opt/petrel/sbin/petrel").is_file()
    assert not os.path.lexists(d / "opt/petrel/sbin/sendmail")
    unit = (d / "opt/petrel/lib/systemd/system/petrel.service").read_text()
    assert "ExecStart=/opt/petrel/sbin/petrel -c /etc/petrel/petrel.lua" in unit
