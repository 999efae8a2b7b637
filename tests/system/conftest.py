"""pytest fixtures for petrel's system tests.

`world` gives each test a private fake DNS server, a port for MX delivery, recording
SMTP sinks on loopback IPs and petrel processes built from a generated Lua config.
Everything started is stopped by pid in the fixture's teardown, also when the test
fails; petrel's stderr is printed for a failed test.

    def test_example(world):
        dest = world.mx_domain("dest.test", "127.0.0.2")    # MX + A + a sink there
        p = world.petrel(queue={"max_retry_age": "3s"})     # started, ready
        mid = p.send_message("alice@sender.test", ["bob@dest.test"])
        dest.wait_message(mid)
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from fakedns import FakeDNS  # noqa: E402
from harness import (Petrel, free_port, lua_config, make_message, msgid_of,  # noqa: E402
                     require_binary)
from sinks import RawSink, Sink  # noqa: E402

HOSTNAME = "petrel.test"


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


class World:
    """One test's private mail world on loopback."""

    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.dns = FakeDNS().start()
        # One port for MX delivery to every 127.x address (configure_delivery smtp_port).
        self.mx_port = free_port(("127.0.0.1", "127.0.0.2", "127.0.0.3"))
        self.sinks = []
        self.petrels = []
        self._next_ip = 10
        self._alive_sink = None

    # ---- next hops -----------------------------------------------------
    def other_port(self):
        """A free port other than the MX port (for relayhosts and route targets)."""
        return free_port(("127.0.0.1", "127.0.0.6", "127.0.0.7"))

    def new_ip(self):
        """A fresh loopback address 127.0.1.N for a sink."""
        self._next_ip += 1
        return f"127.0.1.{self._next_ip}"

    def sink(self, ip=None, port=None, start=True, **behaviour):
        """A recording Sink on ip:port (default: a fresh IP, the MX port)."""
        s = Sink(ip or self.new_ip(), port or self.mx_port, **behaviour)
        self.sinks.append(s)
        if start:
            s.start()
        return s

    def raw_sink(self, ip=None, behaviour="hang", port=None):
        s = RawSink(ip or self.new_ip(), port or self.mx_port, behaviour)
        self.sinks.append(s)
        return s.start()

    def mx_domain(self, domain, ip=None, pref=10, mx_name=None, sink=True, **behaviour):
        """Publishes `domain MX pref mx_name` and `mx_name A ip`; unless sink=False
        starts a Sink at ip on the MX port and returns it (with sink=False the hop
        is down until world.sink(ip) is called)."""
        ip = ip or self.new_ip()
        mx_name = mx_name or f"mx.{domain}"
        self.dns.add_mx(domain, mx_name, pref)
        self.dns.add_a(mx_name, ip)
        if sink:
            return self.sink(ip, **behaviour)
        return None

    # ---- petrel --------------------------------------------------------
    def config(self, workdir, port, listener=None, listeners=(), queue=None, delivery=None,
               transport=None, logging=None, dns=None, extra=""):
        lst = {"listen": f"127.0.0.1:{port}", "name": "test-in", "hostname": HOSTNAME}
        lst.update(listener or {})
        q = {"spool_dir": os.path.join(workdir, "spool"), "retry_interval": "1s",
             "max_retry_interval": "2s", "max_retry_age": "10m"}
        q.update(queue or {})
        d = {"smtp_port": self.mx_port, "connect_timeout": "2s", "helo_name": HOSTNAME}
        d.update(delivery or {})
        lg = {"path": os.path.join(workdir, "log", "petrel.jsonl"), "level": "debug"}
        lg.update(logging or {})
        return lua_config(listeners=[lst, *listeners], queue=q, delivery=d, transport=transport,
                          dns=dns if dns is not None else [self.dns.addr], logging=lg,
                          extra=extra)

    def petrel(self, start=True, **cfg):
        """A petrel process with the default test config merged with cfg (listener,
        listeners, queue, delivery, transport, logging, dns, extra); started and ready
        unless start=False."""
        require_binary()
        workdir = str(self.tmp / f"petrel{len(self.petrels)}")
        lst = cfg.get("listener") or {}
        if "listen" in lst:
            port = int(lst["listen"].rsplit(":", 1)[1])
        else:
            port = free_port()
        text = self.config(workdir, port, **cfg)
        p = Petrel(workdir, text, port,
                   hostname=(cfg.get("listener") or {}).get("hostname", HOSTNAME))
        self.petrels.append(p)
        if start:
            p.start()
        return p

    def basic(self, **cfg):
        """The common set-up: dest.test -> sink at 127.0.0.2, sender.test -> sink at
        127.0.0.3 (where DSNs to alice@sender.test land), petrel started with cfg.
        Returns (petrel, dest_sink, sender_sink)."""
        dest = self.mx_domain("dest.test", "127.0.0.2")
        sender = self.mx_domain("sender.test", "127.0.0.3")
        return self.petrel(**cfg), dest, sender

    # ---- checks --------------------------------------------------------
    def assert_serving(self, p, timeout=15):
        """petrel still accepts a normal message and delivers it."""
        p.assert_alive()
        if self._alive_sink is None:
            self._alive_sink = self.mx_domain("alive.test", "127.0.0.254")
        data = make_message("check@sender.test", ["ok@alive.test"], subject="still serving?")
        p.send("check@sender.test", ["ok@alive.test"], data)
        self._alive_sink.wait_message(msgid_of(data), timeout)
        p.assert_alive()

    # ---- teardown ------------------------------------------------------
    def close(self, failed):
        errors = []
        for p in self.petrels:
            rc = p.crashed()
            if rc is not None:
                errors.append(f"{p.workdir}: petrel died during the test (exit code {rc})")
            try:
                p.stop()
            except AssertionError as e:
                errors.append(str(e))
            finally:
                p.kill()
        if failed or errors:
            for p in self.petrels:
                sys.stderr.write(f"\n===== petrel stderr ({p.stderr_path}) =====\n")
                sys.stderr.write(p.stderr_tail(200) + "\n")
        for s in self.sinks:
            try:
                s.stop()
            except Exception as e:  # a sink failing to stop must not hide the rest
                errors.append(f"stopping {s}: {e!r}")
        self.dns.stop()
        if errors:
            raise AssertionError("; ".join(errors))


@pytest.fixture
def world(tmp_path, request):
    w = World(tmp_path)
    yield w
    rep = getattr(request.node, "rep_call", None)
    w.close(failed=bool(rep and rep.failed))
