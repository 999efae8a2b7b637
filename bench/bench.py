#!/usr/bin/python3
"""petrel benchmark: petrel and Postfix side by side on loopback (issue 4, DESIGN §8).

Stdlib only. `make bench` runs it; `bench/bench.py --help` lists the options.

Pieces (all on 127.0.0.1, free ports):
  sink      bench/sink.c, an epoll SMTP sink that counts messages and accepted recipients
            exactly, stamps arrivals (CLOCK_REALTIME) and can answer 4xx to a share of
            RCPTs; driven over its stdin/stdout.
  load      smtp-source (Postfix) for the single-recipient scenarios, bench/blast.c for
            the multi-domain scenario and the latency probe (it stamps each final 250).
  relays    a private Postfix instance (own config, queue and data dirs under a temp dir)
            and petrel, both relaying everything to the sink.
See bench/README.md for what each column means and how it is measured.
"""
import argparse
import datetime
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "system"))
import memcg  # noqa: E402  (--scale-memlimit: the tests' memory cgroup helper)
TOOLS = os.path.join(ROOT, "build", "bench")
PETREL = os.path.join(ROOT, "build", "petrel")
SMTP_SOURCE = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"
OPENDKIM = shutil.which("opendkim") or "/usr/sbin/opendkim"
BASELINE = None  # --baseline: another petrel binary, run as relay "baseline" (A/B in one run)
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
PETREL_SMTP_THREADS = None  # --petrel-smtp-threads: configure_process { smtp_threads }
SPOOL_STATS_RE = re.compile(r"spool: (\d+) durable commits, (\d+) fsyncs")


class BenchError(Exception):
    pass


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def now_ns():
    return time.time_ns()


def build_tools():
    os.makedirs(TOOLS, exist_ok=True)
    for name in ("sink", "blast"):
        src, out = os.path.join(HERE, name + ".c"), os.path.join(TOOLS, name)
        if not os.path.exists(out) or os.path.getmtime(out) < os.path.getmtime(src):
            subprocess.run(["gcc", "-O2", "-Wall", "-Wextra", "-o", out, src, "-lssl", "-lcrypto"], check=True)


# ---------------------------------------------------------------- /proc helpers

def read_stat(pid):
    """(ppid, cpu ticks of the process and its reaped children, rss pages) or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    rest = data[data.rindex(")") + 2:].split()
    # fields after the command: state(3) ppid(4) ... utime(14) stime(15) cutime(16)
    # cstime(17) ... rss(24); rest[0] is field 3
    ppid = int(rest[1])
    cpu = int(rest[11]) + int(rest[12]) + int(rest[13]) + int(rest[14])
    rss = int(rest[21])
    return ppid, cpu, rss


def tree_pids(root):
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        st = read_stat(int(d))
        if st:
            children.setdefault(st[0], []).append(int(d))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def tree_usage(root, pss=False):
    """(cpu seconds, rss bytes, pss bytes or None) summed over root and its live
    descendants. The cpu figure includes reaped children (cutime+cstime), so deltas
    count processes that came and went in between."""
    cpu = rss = pss_sum = 0
    for p in tree_pids(root):
        st = read_stat(p)
        if st:
            cpu += st[1]
            rss += st[2]
            if pss:
                pss_sum += vm_field(p, "Pss", "smaps_rollup") or 0
    return cpu / TICK, rss * PAGE, (pss_sum if pss else None)


def vm_field(pid, field, file="status"):
    try:
        with open(f"/proc/{pid}/{file}") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def dir_bytes(path):
    total = 0
    for dp, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dp, f)).st_size
            except OSError:
                pass
    return total


class RssSampler(threading.Thread):
    """Samples the summed RSS and PSS of a process tree every `interval` s; keeps the
    maxima (peak, peak_pss)."""

    def __init__(self, root, interval=0.1):
        super().__init__(daemon=True)
        self.root, self.interval, self.peak, self.peak_pss = root, interval, 0, 0
        self._halt = threading.Event()

    def sample(self):
        _, rss, pss = tree_usage(self.root, pss=True)
        self.peak, self.peak_pss = max(self.peak, rss), max(self.peak_pss, pss)

    def run(self):
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.interval)

    def stop(self):
        self._halt.set()
        self.join()
        self.sample()
        return self.peak


# ---------------------------------------------------------------- sink

class Sink:
    def __init__(self, port=0, pct_4xx=0, idlog=None, tls=None):
        cmd = [os.path.join(TOOLS, "sink"), "-p", str(port)]
        if tls:
            cmd += ["-t", f"{tls[0]},{tls[1]}"]
        if pct_4xx:
            cmd += ["-f", str(pct_4xx)]
        if idlog:
            cmd += ["-l", idlog]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, bufsize=1)
        line = self.proc.stdout.readline()
        if not line.startswith("port "):
            raise BenchError(f"sink did not start: {line!r}")
        self.port = int(line.split()[1])

    def _cmd(self, c):
        self.proc.stdin.write(c + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def stats(self):
        line = self._cmd("stats")
        if not line.startswith("stats "):
            raise BenchError(f"sink: bad stats line {line!r}")
        return {k: int(v) for k, v in (kv.split("=") for kv in line.split()[1:])}

    def reset(self):
        self._cmd("reset")

    def wait_rcpts(self, want, timeout, alive=None):
        """Polls until `want` recipients arrived; returns the last stats."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.stats()
            if st["rcpts"] >= want:
                return st
            if time.monotonic() > deadline:
                raise BenchError(f"timeout: sink has {st['rcpts']} of {want} recipients")
            if alive and not alive():
                raise BenchError(f"relay died; sink has {st['rcpts']} of {want}")
            time.sleep(0.01)

    def stop(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


# ---------------------------------------------------------------- relays

POSTFIX_MASTER_CF = """\
{listen} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
"""


class Postfix:
    name = "postfix"

    def __init__(self, workdir, sink_port, conns, retry=False, tls=None, dkim=None):
        self.tls = tls  # (cert, key): STARTTLS offered inbound, required outbound
        self.dkim = dkim  # RSA key file: sign through a private OpenDKIM milter
        self.opendkim = None  # its Popen
        self.dir = os.path.join(workdir, "postfix")
        self.etc = os.path.join(self.dir, "etc")
        self.queue = os.path.join(self.dir, "queue")
        self.data = os.path.join(self.dir, "data")
        self.port = free_port()
        self.sink_port, self.conns, self.retry = sink_port, conns, retry
        self.master = None

    def main_cf(self):
        lines = [
            "compatibility_level = 3.6",
            f"queue_directory = {self.queue}",
            f"data_directory = {self.data}",
            "mail_owner = postfix",
            "setgid_group = postdrop",
            "myhostname = relay.bench.invalid",
            "mydomain = bench.invalid",
            "myorigin = $myhostname",
            "inet_interfaces = loopback-only",
            "inet_protocols = ipv4",
            "mydestination =",
            "local_recipient_maps =",
            "local_transport = error:local delivery disabled",
            "alias_maps =",
            "alias_database =",
            "biff = no",
            f"relayhost = [127.0.0.1]:{self.sink_port}",
            "mynetworks = 127.0.0.0/8",
            "smtpd_relay_restrictions = permit_mynetworks, reject",
            "smtpd_peername_lookup = no",
            "default_process_limit = 100",
            f"default_destination_concurrency_limit = {self.conns}",
            f"smtp_destination_concurrency_limit = {self.conns}",
            "smtp_tls_security_level = none",
            "smtpd_tls_security_level = none",
            f"maillog_file = {self.dir}/maillog",
            f"maillog_file_prefixes = {self.dir}",
        ]
        if self.retry:
            lines += ["queue_run_delay = 1s", "minimal_backoff_time = 1s",
                      "maximal_backoff_time = 4s"]
        if self.tls:
            lines = [l for l in lines if "tls_security_level" not in l]
            lines += [f"smtpd_tls_cert_file = {self.tls[0]}", f"smtpd_tls_key_file = {self.tls[1]}",
                      "smtpd_tls_security_level = may", "smtp_tls_security_level = encrypt"]
        if self.dkim:
            lines += [f"smtpd_milters = inet:127.0.0.1:{self.milter_port}",
                      "milter_default_action = tempfail", "milter_protocol = 6"]
        return "\n".join(lines) + "\n"

    def start_opendkim(self):
        """OpenDKIM from Debian as Postfix's signing milter, the same key and canonicalization
        as petrel's (relaxed/relaxed, rsa-sha256), foreground, stopped by PID."""
        self.milter_port = free_port()
        conf = os.path.join(self.dir, "opendkim.conf")
        with open(conf, "w") as f:
            f.write(f"Syslog no\nMode s\nDomain example.com\nSelector bench\nKeyFile {self.dkim}\n"
                    "Canonicalization relaxed/relaxed\nSignatureAlgorithm rsa-sha256\n"
                    "SignHeaders From,To,Subject,Date,Message-ID\n"
                    f"InternalHosts 127.0.0.0/8\nSocket inet:{self.milter_port}@127.0.0.1\n"
                    "UserID opendkim\nRequireSafeKeys no\n"
                    f"PidFile {self.dir}/opendkim.pid\n")
        self.opendkim = subprocess.Popen([OPENDKIM, "-f", "-x", conf], stdout=subprocess.DEVNULL,
                                         stderr=open(os.path.join(self.dir, "opendkim.log"), "w"))
        wait_banner(self.milter_port, 20, banner=False)

    def start(self):
        for d in (self.etc, self.queue, self.data):
            os.makedirs(d, exist_ok=True)
        os.chmod(os.path.dirname(self.dir), 0o755)  # mkdtemp makes it 0700
        os.chmod(self.dir, 0o755)
        shutil.chown(self.data, "postfix", "postfix")
        if self.dkim:
            self.start_opendkim()
        with open(os.path.join(self.etc, "main.cf"), "w") as f:
            f.write(self.main_cf())
        with open(os.path.join(self.etc, "master.cf"), "w") as f:
            f.write(POSTFIX_MASTER_CF.format(listen=f"127.0.0.1:{self.port}"))
        r = subprocess.run([POSTFIX, "-c", self.etc, "start"], capture_output=True, text=True)
        if r.returncode != 0:
            tail = ""
            try:
                with open(os.path.join(self.dir, "maillog")) as f:
                    tail = "".join(f.readlines()[-5:])
            except OSError:
                pass
            raise BenchError(f"postfix start failed ({r.returncode}): {r.stderr}{tail}".replace("\n", " | "))
        pidfile = os.path.join(self.queue, "pid", "master.pid")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with open(pidfile) as f:
                    self.master = int(f.read().strip())
                break
            except (OSError, ValueError):
                time.sleep(0.05)
        if not self.master:
            raise BenchError("postfix: no master.pid")
        wait_banner(self.port, 20)
        time.sleep(0.5)  # let qmgr/pickup settle

    def pid(self):
        return self.master

    def alive(self):
        return self.master is not None and os.path.exists(f"/proc/{self.master}")

    def usage(self):
        cpu, rss = tree_usage(self.master)[:2]
        if self.opendkim:  # the milter's CPU is part of Postfix's signing cost
            c2, r2 = tree_usage(self.opendkim.pid)[:2]
            cpu, rss = cpu + c2, rss + r2
        return cpu, rss

    def peak_rss_exact(self):
        return None  # sampled (sum over the process tree)

    def death_note(self):
        return "" if self.alive() else "; postfix master is gone"

    def stop(self):
        if not self.master:
            return {}
        subprocess.run([POSTFIX, "-c", self.etc, "stop"], capture_output=True)
        deadline = time.monotonic() + 15
        while os.path.exists(f"/proc/{self.master}") and time.monotonic() < deadline:
            time.sleep(0.05)
        if os.path.exists(f"/proc/{self.master}"):
            log("postfix master did not stop; SIGKILL to its PID")
            os.kill(self.master, signal.SIGKILL)
        self.master = None
        if self.opendkim:
            self.opendkim.terminate()
            try:
                self.opendkim.wait(10)
            except subprocess.TimeoutExpired:
                self.opendkim.kill()
                self.opendkim.wait()
            self.opendkim = None
        return {}

    def spool_bytes(self):
        return dir_bytes(self.queue)


class Petrel:
    name = "petrel"

    def __init__(self, workdir, sink_port, conns, retry=None, max_queue=None, tls=None, dkim=None,
                 binary=None):
        self.tls, self.dkim = tls, dkim  # (cert, key); key file
        self.bin = binary or PETREL  # --baseline: another build, same config
        self.dir = os.path.join(workdir, "petrel")
        self.spool = os.path.join(self.dir, "spool")
        self.cfg = os.path.join(self.dir, "petrel.lua")
        self.port = free_port()
        self.sink_port, self.conns, self.retry, self.max_queue = sink_port, conns, retry, max_queue
        self.queue_extra = []   # cluster scenario: backend = "redis", redis_url = ...
        self.shaping = False    # shaping10k scenario: 10,000 configure_shaping rules
        self.wrap = None        # --scale-memlimit: argv -> argv run inside a memory cgroup
        self.proc = None
        self.stderr_lines = []

    def config(self):
        q = [f'spool_dir = "{self.spool}"']
        if self.retry:
            q += [f'retry_interval = "{self.retry[0]}"', f'max_retry_interval = "{self.retry[1]}"']
        if self.max_queue:
            q += [f"max_queue_depth = {self.max_queue}"]
        q += self.queue_extra
        tls_in = (f'\n  tls = {{ cert_file = "{self.tls[0]}", key_file = "{self.tls[1]}" }},'
                  if self.tls else "")
        cfg = f"""-- written by bench/bench.py
petrel.start_smtp_listener {{
  listen = "127.0.0.1:{self.port}",
  hostname = "relay.bench.invalid",
  relay_hosts = {{ "127.0.0.0/8" }},{tls_in}
}}
petrel.configure_delivery {{
  relayhost = "[127.0.0.1]:{self.sink_port}",
  max_connections_per_domain = {self.conns},
  tls = "{"encrypt" if self.tls else "may"}",
  helo_name = "relay.bench.invalid",
}}
petrel.configure_queue {{ {", ".join(q)} }}
petrel.configure_logging {{ path = "{self.dir}/petrel.jsonl" }}
petrel.configure_dns {{ resolvers = {{ "127.0.0.1:1" }} }}
"""
        if PETREL_SMTP_THREADS is not None:
            cfg += f"petrel.configure_process {{ smtp_threads = {PETREL_SMTP_THREADS} }}\n"
        if self.shaping:
            # 10,000 rules that never limit this load: the cost measured is the
            # rule lookup per queue and the budget and automation per message
            cfg += f"""local rules = {{
  default = {{ connection_limit = {self.conns}, max_message_rate = "100000/s" }},
  automation = {{
    {{ match = "421 4\\\\.7\\\\.0 .*rate limit", action = "reduce_rate", factor = 0.5, duration = "1h" }},
    {{ match = "5\\\\.7\\\\.1 .*blocked", action = "suspend", duration = "4h" }},
    {{ match = "4\\\\.7\\\\.28", action = "set_connection_limit", value = 1, duration = "30m" }},
    {{ match = "mailbox full", action = "bounce" }},
  }},
}}
for i = 1, 5000 do
  rules["d" .. i .. ".example"] = {{ max_message_rate = "50000/s", connection_limit = {self.conns} }}
  rules["site:*.mx" .. i .. ".example"] = {{ max_message_rate = "50000/s" }}
end
rules["example.net"] = {{ max_message_rate = "100000/s", connection_limit = {self.conns} }}
petrel.configure_shaping(rules)
"""
        if self.dkim:
            cfg += (f'petrel.configure_dkim_signing {{ domain = "example.com", selector = "bench", '
                    f'key_file = "{self.dkim}" }}\n')
        return cfg

    def check(self):
        """Runs `petrel --check` on this config: (ok, message)."""
        os.makedirs(self.dir, exist_ok=True)
        with open(self.cfg, "w") as f:
            f.write(self.config())
        r = subprocess.run([self.bin, "-c", self.cfg, "--check"], capture_output=True, text=True,
                           cwd=self.dir, timeout=30)
        return r.returncode == 0, (r.stdout + r.stderr).strip()

    def start(self, timeout=60):
        os.makedirs(self.dir, exist_ok=True)
        with open(self.cfg, "w") as f:
            f.write(self.config())
        self.stderr_lines = []
        t0 = time.monotonic()
        argv = [self.bin, "-c", self.cfg]
        self.proc = subprocess.Popen(self.wrap(argv) if self.wrap else argv, cwd=self.dir,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, bufsize=1)
        ready = threading.Event()

        def reader():
            for line in self.proc.stderr:
                self.stderr_lines.append(line.rstrip("\n"))
                if "petrel ready" in line:
                    ready.set()
        self.reader = threading.Thread(target=reader, daemon=True)
        self.reader.start()
        while not ready.wait(0.02):
            if self.proc.poll() is not None:
                raise BenchError("petrel exited at startup: " + " | ".join(self.stderr_lines[-5:]))
            if time.monotonic() - t0 > timeout:
                raise BenchError(f"petrel not ready after {timeout}s")
        self.ready_s = time.monotonic() - t0
        return self.ready_s

    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def usage(self):
        return tree_usage(self.proc.pid)[:2]

    def peak_rss_exact(self):
        return vm_field(self.proc.pid, "VmHWM")

    def death_note(self):
        if not self.proc or self.proc.poll() is None:
            return ""
        rc = self.proc.returncode
        how = f"signal {signal.Signals(-rc).name}" if rc < 0 else f"exit {rc}"
        self.reader.join(2)
        return f"; petrel died ({how}), stderr ends: " + " | ".join(self.stderr_lines[-2:])[-160:]

    def stop(self):
        """SIGTERM by PID; returns {'stop_s', 'exit', 'durable_commits', 'fsyncs'}."""
        if not self.proc:
            return {}
        out = {}
        t0 = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                log("petrel did not exit 15 s after SIGTERM; SIGKILL to its PID")
                self.proc.kill()
                self.proc.wait()
        out["stop_s"] = time.monotonic() - t0
        out["exit"] = self.proc.returncode
        self.reader.join(5)
        for line in self.stderr_lines:
            m = SPOOL_STATS_RE.search(line)
            if m:
                out["durable_commits"], out["fsyncs"] = int(m.group(1)), int(m.group(2))
        self.proc = None
        return out

    def spool_bytes(self):
        return dir_bytes(self.spool)


def wait_banner(port, timeout, banner=True):
    """Waits until port accepts (banner=False) or greets with 220."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                if not banner:
                    return
                if s.recv(512).startswith(b"220"):
                    s.sendall(b"QUIT\r\n")
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise BenchError(f"no SMTP banner on port {port}")
        time.sleep(0.05)


# ---------------------------------------------------------------- load

def load_cmd(gen, port, n, conns, size, rcpts=1, domains=1, reuse=False, tls=False,
             random_body=False):
    if gen == "smtp-source":
        if domains != 1 or tls:
            raise BenchError("smtp-source cannot spread recipients over domains nor STARTTLS")
        cmd = [SMTP_SOURCE, "-s", str(conns), "-m", str(n), "-l", str(size), "-r", str(rcpts),
               "-M", "client.bench.invalid", "-f", "from@example.com", "-t", "to@example.net"]
        if reuse:
            cmd.append("-d")
        return cmd + [f"127.0.0.1:{port}"]
    cmd = [os.path.join(TOOLS, "blast"), "-p", str(port), "-n", str(n), "-c", str(conns),
           "-l", str(size), "-r", str(rcpts), "-D", str(domains)]
    if reuse:
        cmd.append("-k")
    if tls:
        cmd.append("-T")
    if random_body:
        cmd.append("-R")
    return cmd


def run_load(cmd, timeout):
    """Runs the generator; returns its CPU seconds (user+system)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise BenchError(f"load generator failed ({r.returncode}): {(r.stdout + r.stderr).strip()[-300:]}")
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


# ---------------------------------------------------------------- scenarios

SCENARIOS = {
    # gen None = --generator (smtp-source by default)
    "headline": dict(title="2 KB x 20 conn x 1 rcpt", size=2048),
    "50k": dict(title="50 KB x 20 conn x 1 rcpt", size=51200),
    "rcpt100": dict(title="2 KB x 100 rcpt / 10 domains", gen="blast", rcpts=100, domains=10),
    "4xx": dict(title="2 KB, sink 4xx to 10% of RCPTs", pct_4xx=10),
    "starttls": dict(title="2 KB, STARTTLS both legs", gen="blast", tls=True),
    "dkim": dict(title="2 KB, DKIM RSA-2048 (Postfix: OpenDKIM milter)", dkim=True),
    # the headline load with configure_shaping holding 10,000 rules (5,000 domains,
    # 5,000 sites) and 4 automation regexes matched against every reply; compare its
    # petrel CPU per message with the headline row of the same run
    "shaping10k": dict(title="2 KB, 10,000 shaping rules + automation", shaping=True,
                       relays=("petrel", "baseline")),
}
SCEN_DEFAULTS = dict(gen=None, size=2048, conns=20, rcpts=1, domains=1, pct_4xx=0, tls=False,
                     dkim=False, shaping=False, relays=None)
DEFAULT_SCENARIOS = ["headline", "50k", "rcpt100", "4xx", "starttls", "dkim", "latency", "cluster"]


def scen_params(name):
    p = dict(SCEN_DEFAULTS)
    p.update(SCENARIOS[name])
    return p


class Keys:
    """Self-signed ECDSA P-256 certificate (STARTTLS) and an RSA 2048 key (DKIM)."""

    def __init__(self, workdir):
        self.dir = tempfile.mkdtemp(prefix="keys-", dir=workdir)
        os.chmod(self.dir, 0o755)
        self.cert, self.key = os.path.join(self.dir, "cert.pem"), os.path.join(self.dir, "key.pem")
        self.dkim = os.path.join(self.dir, "dkim.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=localhost",
                        "-days", "2", "-keyout", self.key, "-out", self.cert],
                       check=True, capture_output=True)
        subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                        "rsa_keygen_bits:2048", "-out", self.dkim], check=True, capture_output=True)
        for f in (self.cert, self.key, self.dkim):
            os.chmod(f, 0o644)

    def remove(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def make_relay(name, workdir, sink_port, p, keys):
    tls = (keys.cert, keys.key) if p["tls"] else None
    if name == "postfix":
        return Postfix(workdir, sink_port, p["conns"], retry=p["pct_4xx"] > 0, tls=tls,
                       dkim=keys.dkim if p["dkim"] else None)
    relay = Petrel(workdir, sink_port, p["conns"], retry=("1s", "4s") if p["pct_4xx"] else None,
                   tls=tls, dkim=keys.dkim if p["dkim"] else None,
                   binary=BASELINE if name == "baseline" else None)
    relay.shaping = p["shaping"]
    return relay


def petrel_supports(p, keys, workdir):
    """None if petrel's --check accepts the scenario's config, else the reason."""
    if not (p["tls"] or p["dkim"]):
        return None
    d = tempfile.mkdtemp(prefix="petrel-check-", dir=workdir)
    try:
        ok, msg = make_relay("petrel", d, 1, p, keys).check()
        return None if ok else (msg.splitlines() or ["--check failed"])[-1]
    finally:
        shutil.rmtree(d, ignore_errors=True)


def throughput_run(args, relay_name, scen, n, sink, run_idx, keys):
    p = scen_params(scen)
    gen = p["gen"] or args.generator
    conns, rcpts = p["conns"], p["rcpts"]
    workdir = tempfile.mkdtemp(prefix=f"{relay_name}-{scen}-{run_idx}-", dir=args.workdir)
    relay = make_relay(relay_name, workdir, sink.port, p, keys)
    res = {"run": run_idx}
    sampler = None
    try:
        relay.start()
        sink.reset()
        cpu0, _ = relay.usage()
        sampler = RssSampler(relay.pid())
        sampler.start()
        t0 = now_ns()
        gen_cpu = run_load(load_cmd(gen, relay.port, n, conns, p["size"], rcpts, p["domains"],
                                    args.reuse, tls=p["tls"]), timeout=args.timeout)
        t_acc = now_ns()
        want = n * rcpts
        st = sink.wait_rcpts(want, args.timeout, relay.alive)
        t_done = now_ns()
        cpu1, _ = relay.usage()
        peak_sampled = sampler.stop()
        peak = relay.peak_rss_exact() or peak_sampled
        time.sleep(0.3)  # late duplicates
        st2 = sink.stats()
        acc_s = (t_acc - t0) / 1e9
        e2e_s = (st["last"] - t0) / 1e9
        res.update({
            "messages": n, "recipients": want, "generator": gen,
            "generator_cpu_ms_per_msg": gen_cpu / n * 1000,
            "accept_s": acc_s, "accept_rate": n / acc_s,
            "e2e_s": e2e_s, "e2e_rate": n / e2e_s, "e2e_rcpt_rate": want / e2e_s,
            "cpu_s": cpu1 - cpu0, "cpu_s_per_10k": (cpu1 - cpu0) / n * 10000,
            "cpu_ms_per_msg": (cpu1 - cpu0) / n * 1000,
            "peak_rss": peak, "peak_rss_sampled": peak_sampled, "peak_pss": sampler.peak_pss,
            "sink_msgs": st2["msgs"], "sink_rcpts": st2["rcpts"],
            "duplicates": st2["rcpts"] - want, "sink_4xx": st2["rej"],
            "sink_conns": st2["conns"], "sink_tls": st2.get("tls"), "sink_dkim": st2.get("dkim"),
            "detect_s": (t_done - t0) / 1e9,
        })
    except (BenchError, subprocess.TimeoutExpired) as e:
        raise BenchError(f"{e}{relay.death_note()}") from None
    finally:
        if sampler and sampler.is_alive():
            sampler.stop()
        res.update(relay.stop())
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    if "fsyncs" in res and res["fsyncs"]:
        res["msgs_per_fsync"] = n / res["fsyncs"]
        res["commits_per_fsync"] = res["durable_commits"] / res["fsyncs"]
    return res


def latency_run(args, relay_name, sink, idlog, run_idx, keys):
    workdir = tempfile.mkdtemp(prefix=f"{relay_name}-latency-{run_idx}-", dir=args.workdir)
    relay = make_relay(relay_name, workdir, sink.port, scen_params("headline"), keys)
    prefix = f"lat-{relay_name}-{run_idx}"
    client_log = os.path.join(workdir, "client.txt")
    n = args.latency_messages
    res = {"run": run_idx}
    try:
        relay.start()
        cmd = [os.path.join(TOOLS, "blast"), "-p", str(relay.port), "-n", str(n), "-c", "1",
               "-k", "-w", str(args.latency_gap_ms), "-l", "2048", "-o", client_log,
               "-i", prefix]
        run_load(cmd, timeout=args.timeout)
        deadline = time.monotonic() + 30
        arrived = {}
        while time.monotonic() < deadline:
            sink.stats()  # flushes the sink's id log
            arrived = {}
            with open(idlog) as f:
                for line in f:
                    k, v = line.split()
                    if k.startswith(prefix + "-"):
                        arrived[k] = int(v)
            if len(arrived) >= n:
                break
            time.sleep(0.05)
        lat = []
        with open(client_log) as f:
            for line in f:
                k, v = line.split()
                if k in arrived:
                    lat.append((arrived[k] - int(v)) / 1e6)
        if len(lat) < n:
            raise BenchError(f"latency: only {len(lat)} of {n} messages arrived")
        lat.sort()
        res.update({"messages": n, "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99),
                    "max_ms": lat[-1], "min_ms": lat[0]})
    except (BenchError, subprocess.TimeoutExpired) as e:
        raise BenchError(f"{e}{relay.death_note()}") from None
    finally:
        res.update(relay.stop())
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return res


def pct(sorted_vals, p):
    k = (len(sorted_vals) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(sorted_vals) - 1)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (k - lo)


def sink_ceiling(args):
    """smtp-source (and blast) straight into the sink, headline parameters."""
    out = {}
    sink = Sink()
    try:
        for gen in ("smtp-source", "blast"):
            rates, cpu = [], []
            for _ in range(args.runs):
                sink.reset()
                t0 = now_ns()
                c = run_load(load_cmd(gen, sink.port, args.messages, 20, 2048, reuse=args.reuse),
                             timeout=args.timeout)
                st = sink.wait_rcpts(args.messages, 30)
                rates.append(args.messages / ((st["last"] - t0) / 1e9))
                cpu.append(c / args.messages * 1000)
            out[gen] = summary(rates)
            out[gen]["generator_cpu_ms_per_msg"] = statistics.median(cpu)
            log(f"sink ceiling with {gen}: {out[gen]['median']:.0f} msgs/s")
    finally:
        sink.stop()
    return out


def blast_counts(cmd, timeout):
    """Runs blast where refusals are expected: {'ok', 'fail', ...} from its last line."""
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    m = re.search(r"done (.*)", r.stdout)
    if not m:
        raise BenchError(f"blast printed no result ({r.returncode}): {(r.stdout + r.stderr)[-300:]}")
    return {k: float(v) for k, v in (kv.split("=") for kv in m.group(1).split())}


def scale_run(args):
    """petrel only: N messages queued while the sink is down, then a restart.
    --scale-memlimit: petrel runs in a memory cgroup whose limit is set, once the N are
    queued, to twice its RSS then; N is max_queue_depth, so --scale-extra more messages
    must meet back-pressure (452), not the OOM killer; the restart and the delivery of
    the backlog run under the same limit."""
    n = args.scale_messages
    workdir = tempfile.mkdtemp(prefix="petrel-scale-", dir=args.workdir)
    sink_port = free_port()
    cg = None
    if args.scale_memlimit:
        cg, why = memcg.make("petrel-scale")
        if cg is None:
            raise BenchError(f"--scale-memlimit needs a writable memory cgroup: {why}")
    relay = Petrel(workdir, sink_port, 20, retry=("2s", "10s"),
                   max_queue=n if cg else max(2 * n, 1000000))
    res = {"messages": n}
    if cg:
        relay.wrap = cg.wrap
        res["cgroup"] = "v2" if cg.v2 else "v1"
    sink = None
    try:
        relay.start()
        cpu0, _ = relay.usage()
        t0 = now_ns()
        log(f"scale: injecting {n} messages with the sink down")
        run_load(load_cmd("blast", relay.port, n, 20, 2048, reuse=True, random_body=True),
                 timeout=max(args.timeout, n / 200))
        res["accept_s"] = (now_ns() - t0) / 1e9
        res["accept_rate"] = n / res["accept_s"]
        time.sleep(1)
        res["rss_queued"] = vm_field(relay.pid(), "VmRSS")
        res["peak_rss_queued"] = vm_field(relay.pid(), "VmHWM")
        res["cpu_s_inject"] = relay.usage()[0] - cpu0
        res["spool_bytes"] = relay.spool_bytes()
        res["spool_bytes_per_msg"] = res["spool_bytes"] / n
        extra_ok = 0
        if cg:
            res["memlimit_bytes"] = limit = 2 * res["rss_queued"]
            res["cgroup_charge_before_limit"] = cg.current()
            cg.set_limit(limit)
            oom0 = cg.oom_kills()
            extra = args.scale_extra
            log(f"scale: memory limit {limit / 2**20:.0f} MB (2x RSS); {extra} more messages "
                f"past max_queue_depth {n}")
            c = blast_counts(load_cmd("blast", relay.port, extra, 20, 2048, reuse=True,
                                      random_body=True), timeout=max(args.timeout, extra / 100))
            extra_ok = int(c["ok"])
            res.update(extra=extra, extra_ok=extra_ok, extra_refused=int(c["fail"]),
                       oom_kills_backpressure=cg.oom_kills() - oom0,
                       alive_after_backpressure=relay.alive(),
                       rss_after_backpressure=vm_field(relay.pid(), "VmRSS"))
            if not relay.alive():
                raise BenchError("petrel died under the memory limit" + relay.death_note())
        st = relay.stop()
        res["stop_s"] = st.get("stop_s")
        res["stop_exit"] = st.get("exit")
        res["spool_bytes_after_stop"] = relay.spool_bytes()
        sink = Sink(port=sink_port)
        log("scale: restarting petrel with the spool full, sink up"
            + (" (same memory limit)" if cg else ""))
        want = n + extra_ok
        t1 = now_ns()
        res["restart_ready_s"] = relay.start(timeout=600)
        res["rss_at_ready"] = vm_field(relay.pid(), "VmRSS")
        st = sink.wait_rcpts(want, max(args.timeout, want / 100), relay.alive)
        res["first_delivery_s"] = (st["first"] - t1) / 1e9
        res["all_delivered_s"] = (st["last"] - t1) / 1e9
        res["peak_rss_restart"] = vm_field(relay.pid(), "VmHWM")
        time.sleep(0.5)
        res["duplicates"] = sink.stats()["rcpts"] - want
        if cg:
            res["oom_kills_total"] = cg.oom_kills()
            res["cgroup_peak"] = cg.peak()
    except (BenchError, subprocess.TimeoutExpired) as e:
        raise BenchError(f"{e}{relay.death_note()}") from None
    finally:
        res.update({"final_" + k: v for k, v in relay.stop().items()})
        if sink:
            sink.stop()
        if cg:
            cg.remove()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return res


def summary(vals):
    vals = [v for v in vals if v is not None]
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


# ---------------------------------------------------------------- output

def machine_info(workdir):
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = vm = None
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    fs = subprocess.run(["findmnt", "-n", "-o", "FSTYPE,SOURCE", "-T", workdir],
                        capture_output=True, text=True).stdout.strip()
    pf = subprocess.run(["postconf", "-d", "-h", "mail_version"], capture_output=True,
                        text=True).stdout.strip()
    return {"nproc": os.cpu_count(), "cpu": cpu, "kernel": platform.release(),
            "mem_bytes": mem, "os": platform.platform(), "workdir_fs": fs,
            "postfix_version": pf, "loadavg_start": os.getloadavg()}


def fmt(s, unit="", scale=1.0, prec=0):
    if not s:
        return "-"
    f = f"{{:.{prec}f}}"
    m, lo, hi = (f.format(s[k] * scale) for k in ("median", "min", "max"))
    return f"{m}{unit} [{lo}-{hi}]"


def print_table(results):
    cols = [("accept msgs/s", "accept_rate", 1, 0), ("e2e msgs/s", "e2e_rate", 1, 0),
            ("CPU s/10k msgs", "cpu_s_per_10k", 1, 1), ("peak RSS MB", "peak_rss", 1 / 2**20, 0),
            ("peak PSS MB", "peak_pss", 1 / 2**20, 0)]
    out = []
    hdr = f"{'scenario':34} {'relay':8} " + " ".join(f"{c[0]:>21}" for c in cols)
    out.append(hdr)
    out.append("-" * len(hdr))
    for scen, data in results["scenarios"].items():
        if scen == "latency":
            continue
        if data.get("not_available"):
            out.append(f"{data['title']:34} {'petrel':8} not available yet: {data['not_available'][:120]}")
            continue
        first = True
        for relay, r in data["relays"].items():
            name = data["title"] if first else ""
            first = False
            if "error" in r:
                out.append(f"{name:34} {relay:8} ERROR: {r['error'][:300]}")
                continue
            if "not_available" in r:
                out.append(f"{name:34} {relay:8} not available yet: {r['not_available'][:150]}")
                continue
            s = r["summary"]
            out.append(f"{name:34} {relay:8} " + " ".join(
                f"{fmt(s.get(k), '', sc, p):>21}" for _, k, sc, p in cols))
            extra = []
            if "msgs_per_fsync" in s and s["msgs_per_fsync"]:
                extra.append(f"msgs/fsync {fmt(s['msgs_per_fsync'], '', 1, 1)}")
            if s.get("sink_conns"):
                extra.append(f"connections to the sink {fmt(s['sink_conns'])}")
            gen = r["runs"][0].get("generator") if r.get("runs") else None
            ceil = (results.get("sink_ceiling") or {}).get(gen)
            if ceil and s.get("accept_rate") and s["accept_rate"]["median"] >= 0.8 * ceil["median"]:
                extra.append(f"near the ceiling of {gen} ({ceil['median']:.0f}/s): generator-bound?")
            if scen == "rcpt100":
                extra.append(f"e2e rcpts/s {fmt(s.get('e2e_rcpt_rate'))}")
            if scen == "4xx":
                extra.append(f"all delivered in {fmt(s.get('e2e_s'), ' s', 1, 1)}, "
                             f"4xx given {fmt(s.get('sink_4xx'))}")
            if s.get("duplicates") and s["duplicates"]["max"] > 0:
                extra.append(f"DUPLICATES {fmt(s['duplicates'])}")
            if extra:
                out.append(f"{'':34} {'':8}   " + "; ".join(extra))
        ratio = data.get("ratio")
        if ratio:
            out.append(f"{'':34} {'ratio':8} " + " ".join(
                f"{('x%.2f' % ratio[k]) if ratio.get(k) else '-':>21}" for _, k, _, _ in cols))
    lat = results["scenarios"].get("latency")
    if lat:
        out.append("")
        out.append(f"light-load latency, acceptance (250) to arrival at the sink, "
                   f"{lat['messages']} msgs, 1 conn, {lat['gap_ms']} ms apart:")
        for relay, r in lat["relays"].items():
            if "error" in r:
                out.append(f"  {relay:8} ERROR: {r['error'][:300]}")
                continue
            s = r["summary"]
            out.append(f"  {relay:8} p50 {fmt(s['p50_ms'], ' ms', 1, 2):>26}   "
                       f"p99 {fmt(s['p99_ms'], ' ms', 1, 2):>26}")
        if lat.get("ratio"):
            out.append(f"  {'ratio':8} p50 x{lat['ratio']['p50_ms']:.2f}   p99 x{lat['ratio']['p99_ms']:.2f}")
    if results.get("sink_ceiling"):
        out.append("")
        out.append("sink ceiling (generator straight into the sink, 2 KB x 20 conn): " + ", ".join(
            f"{g} {fmt(s)} msgs/s ({s['generator_cpu_ms_per_msg']:.2f} ms CPU/msg in the generator)"
            for g, s in results["sink_ceiling"].items()))
    sc = results.get("scale")
    if sc:
        out.append("")
        if "error" in sc:
            out.append(f"scale (petrel): ERROR {sc['error']}")
        else:
            mb = 2**20
            out.append(f"scale (petrel, {sc['messages']} msgs queued with the sink down): "
                       f"accepted at {sc['accept_rate']:.0f} msgs/s; RSS {sc['rss_queued'] / mb:.0f} MB "
                       f"(peak {sc['peak_rss_queued'] / mb:.0f} MB); spool {sc['spool_bytes'] / mb:.0f} MB = "
                       f"{sc['spool_bytes_per_msg']:.0f} B/msg; stop {sc['stop_s']:.1f} s")
            out.append(f"  restart: ready in {sc['restart_ready_s']:.2f} s (RSS {sc['rss_at_ready'] / mb:.0f} MB), "
                       f"first delivery at {sc['first_delivery_s']:.2f} s, all delivered at "
                       f"{sc['all_delivered_s']:.1f} s (peak RSS {sc['peak_rss_restart'] / mb:.0f} MB)"
                       + (f", DUPLICATES {sc['duplicates']}" if sc.get("duplicates") else ""))
            if "memlimit_bytes" in sc:
                out.append(f"  memory limit (cgroup {sc['cgroup']}): {sc['memlimit_bytes'] / mb:.0f} MB = 2x the "
                           f"RSS with the backlog queued; {sc['extra']} more messages: "
                           f"{sc['extra_refused']} refused (452), {sc['extra_ok']} accepted; "
                           f"OOM kills {sc['oom_kills_total']}; cgroup peak charge "
                           f"{(sc['cgroup_peak'] or 0) / mb:.0f} MB (page cache included)")
    print("\n".join(out))


def ratios(relays, keys):
    a, b = relays.get("petrel", {}).get("summary"), relays.get("postfix", {}).get("summary")
    if not a or not b:
        return None
    out = {}
    for k in keys:
        if a.get(k) and b.get(k) and b[k]["median"]:
            out[k] = a[k]["median"] / b[k]["median"]
    return out


# ---------------------------------------------------------------- scenario drivers

def throughput_scenario(args, relays, scen, n, keys):
    p = scen_params(scen)
    entry = {"title": p["title"], "messages": n, "relays": {}}
    scen_relays = [r for r in relays if not p["relays"] or r in p["relays"]]
    if "petrel" in scen_relays:
        why = petrel_supports(p, keys, args.workdir)
        if why:
            log(f"{scen}: petrel: not available yet ({why})")
            entry["not_available"] = f"petrel --check refuses the config: {why}"
            return entry
    sink = Sink(pct_4xx=p["pct_4xx"], tls=(keys.cert, keys.key) if p["tls"] else None)
    try:
        for relay in scen_relays:
            runs = []
            try:
                for i in range(args.runs):
                    r = throughput_run(args, relay, scen, n, sink, i, keys)
                    log(f"{scen} {relay} run {i}: accept {r['accept_rate']:.0f}/s "
                        f"e2e {r['e2e_rate']:.0f}/s cpu {r['cpu_ms_per_msg']:.2f} ms/msg "
                        f"rss {r['peak_rss'] / 2**20:.0f} MB"
                        + (f" msgs/fsync {r['msgs_per_fsync']:.1f}" if r.get("msgs_per_fsync") else ""))
                    runs.append(r)
                    if p["tls"] and not r.get("sink_tls"):
                        raise BenchError(f"{relay} delivered without TLS to the sink")
                    if p["dkim"] and r.get("sink_dkim", 0) < r["sink_msgs"]:
                        raise BenchError(f"{relay}: only {r.get('sink_dkim')} of {r['sink_msgs']} "
                                         "messages arrived with a DKIM-Signature")
                keys_ = ("accept_rate", "e2e_rate", "e2e_rcpt_rate", "e2e_s", "cpu_s_per_10k",
                         "cpu_ms_per_msg", "peak_rss", "peak_pss", "msgs_per_fsync",
                         "commits_per_fsync", "duplicates", "sink_4xx", "sink_conns",
                         "generator_cpu_ms_per_msg")
                entry["relays"][relay] = {"runs": runs, "summary": {
                    k: summary([r.get(k) for r in runs]) for k in keys_}}
            except (BenchError, subprocess.TimeoutExpired) as e:
                log(f"{scen} {relay}: {e}")
                msg = str(e)
                if relay == "petrel" and ("does not offer STARTTLS" in msg or "DKIM-Signature" in msg):
                    entry["relays"][relay] = {"runs": runs, "not_available": msg}
                else:
                    entry["relays"][relay] = {"runs": runs, "error": msg}
    finally:
        sink.stop()
    entry["ratio"] = ratios(entry["relays"], ("accept_rate", "e2e_rate", "cpu_s_per_10k",
                                              "peak_rss", "peak_pss"))
    return entry


# ---------------------------------------------------------------- cluster (Redis queue)

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


class RedisProc:
    """A private redis-server: AOF with appendfsync always (what petrel's redis backend
    requires), loopback, free port, temp dir on the workdir's disk; stopped by PID."""

    def __init__(self, workdir):
        self.dir = os.path.join(workdir, "redis")
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_port()
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", self.dir,
             "--appendonly", "yes", "--appendfsync", "always", "--save", "",
             "--daemonize", "no", "--logfile", os.path.join(self.dir, "redis.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_banner(self.port, 20, banner=False)
        time.sleep(0.2)
        return self

    def usage(self):
        return tree_usage(self.proc.pid)[:2]

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


CLUSTER_SETUPS = [("local spool, 1 node", "rocksdb", 1), ("redis, 1 node", "redis", 1),
                  ("redis, 3 nodes", "redis", 3)]


def cluster_run(args, backend, nnodes, n, sink, run_idx):
    """n 2 KB messages split over nnodes petrel processes (one generator each, 20
    connections in all), all relaying to the sink; end to end rate and CPU."""
    workdir = tempfile.mkdtemp(prefix=f"cluster-{backend}-{nnodes}-{run_idx}-", dir=args.workdir)
    redis = RedisProc(workdir).start() if backend == "redis" else None
    nodes = []
    res = {"run": run_idx}
    try:
        for i in range(nnodes):
            node = Petrel(os.path.join(workdir, f"n{i}"), sink.port, max(1, 20 // nnodes))
            if redis:
                node.queue_extra = ['backend = "redis"',
                                    f'redis_url = "redis://127.0.0.1:{redis.port}/0"']
            node.start()
            nodes.append(node)
        sink.reset()
        cpu0 = [nd.usage()[0] for nd in nodes]
        rcpu0 = redis.usage()[0] if redis else 0.0
        t0 = now_ns()
        errors = []

        def gen(node, k):
            try:
                run_load(load_cmd("smtp-source", node.port, k, max(1, 20 // nnodes), 2048),
                         timeout=args.timeout)
            except (BenchError, subprocess.TimeoutExpired) as e:
                errors.append(str(e))
        share = [n // nnodes + (1 if i < n % nnodes else 0) for i in range(nnodes)]
        threads = [threading.Thread(target=gen, args=(nodes[i], share[i])) for i in range(nnodes)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise BenchError(errors[0])
        st = sink.wait_rcpts(n, args.timeout, lambda: all(nd.alive() for nd in nodes))
        cpu = sum(nd.usage()[0] - c for nd, c in zip(nodes, cpu0))
        rcpu = (redis.usage()[0] - rcpu0) if redis else 0.0
        time.sleep(0.5)
        st2 = sink.stats()
        e2e_s = (st["last"] - t0) / 1e9
        res.update({"messages": n, "nodes": nnodes, "backend": backend, "e2e_s": e2e_s,
                    "e2e_rate": n / e2e_s, "cpu_ms_per_msg": cpu / n * 1000,
                    "redis_cpu_ms_per_msg": rcpu / n * 1000,
                    "total_cpu_ms_per_msg": (cpu + rcpu) / n * 1000,
                    "duplicates": st2["rcpts"] - n})
    finally:
        for nd in nodes:
            res.setdefault("stops", []).append(nd.stop())
        if redis:
            redis.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return res


def cluster_scenario(args):
    """The shared Redis queue (issue 13): one and three nodes beside the local spool."""
    entry = {"title": "2 KB x 20 conn, local spool vs Redis queue", "messages": args.messages_cluster,
             "setups": {}}
    if not os.access(REDIS_SERVER, os.X_OK):
        entry["error"] = "redis-server not installed (scripts/deps.sh test)"
        return entry
    sink = Sink()
    try:
        for title, backend, nnodes in CLUSTER_SETUPS:
            runs = []
            try:
                for i in range(args.runs):
                    r = cluster_run(args, backend, nnodes, args.messages_cluster, sink, i)
                    log(f"cluster {title} run {i}: e2e {r['e2e_rate']:.0f}/s petrel cpu "
                        f"{r['cpu_ms_per_msg']:.2f} ms/msg redis cpu "
                        f"{r['redis_cpu_ms_per_msg']:.2f} ms/msg dup {r['duplicates']}")
                    runs.append(r)
                entry["setups"][title] = {"runs": runs, "summary": {
                    k: summary([r.get(k) for r in runs])
                    for k in ("e2e_rate", "cpu_ms_per_msg", "redis_cpu_ms_per_msg",
                              "total_cpu_ms_per_msg", "duplicates")}}
            except (BenchError, subprocess.TimeoutExpired) as e:
                log(f"cluster {title}: {e}")
                entry["setups"][title] = {"runs": runs, "error": str(e)}
    finally:
        sink.stop()
    return entry


def print_cluster(entry):
    print(f"\ncluster: {entry['title']}, {entry['messages']} messages")
    if entry.get("error"):
        print(f"  {entry['error']}")
        return
    print(f"  {'setup':24} {'e2e msgs/s':>21} {'petrel CPU ms/msg':>21} {'redis CPU ms/msg':>21}")
    for title, d in entry["setups"].items():
        if d.get("error"):
            print(f"  {title:24} error: {d['error'][:80]}")
            continue
        sm = d["summary"]
        print(f"  {title:24} {fmt(sm['e2e_rate']):>21} {fmt(sm['cpu_ms_per_msg'], prec=2):>21} "
              f"{fmt(sm['redis_cpu_ms_per_msg'], prec=2):>21}")


def latency_scenario(args, relays, keys):
    sinkdir = tempfile.mkdtemp(prefix="sink-", dir=args.workdir)
    idlog = os.path.join(sinkdir, "ids.txt")
    sink = Sink(idlog=idlog)
    entry = {"messages": args.latency_messages, "gap_ms": args.latency_gap_ms, "relays": {}}
    try:
        for relay in relays:
            runs = []
            try:
                for i in range(args.runs):
                    r = latency_run(args, relay, sink, idlog, i, keys)
                    log(f"latency {relay} run {i}: p50 {r['p50_ms']:.2f} ms p99 {r['p99_ms']:.2f} ms")
                    runs.append(r)
                entry["relays"][relay] = {"runs": runs, "summary": {
                    k: summary([r[k] for r in runs]) for k in ("p50_ms", "p99_ms", "max_ms")}}
            except (BenchError, subprocess.TimeoutExpired) as e:
                log(f"latency {relay}: {e}")
                entry["relays"][relay] = {"runs": runs, "error": str(e)}
    finally:
        sink.stop()
        shutil.rmtree(sinkdir, ignore_errors=True)
    entry["ratio"] = ratios(entry["relays"], ("p50_ms", "p99_ms"))
    return entry


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenarios", default=",".join(DEFAULT_SCENARIOS),
                    help="comma list of headline,50k,rcpt100,4xx,starttls,dkim,latency "
                         "(default: %(default)s)")
    ap.add_argument("--relays", default="postfix,petrel", help="default: %(default)s")
    ap.add_argument("--runs", type=int, default=3, help="runs per figure (median, min, max)")
    ap.add_argument("--messages", type=int, default=10000, help="headline messages (default 10000)")
    ap.add_argument("--messages-50k", type=int, default=5000)
    ap.add_argument("--messages-dkim", type=int, default=2000)
    ap.add_argument("--messages-rcpt100", type=int, default=500,
                    help="messages of 100 recipients (default 500 = 50,000 deliveries)")
    ap.add_argument("--messages-4xx", type=int, default=5000)
    ap.add_argument("--messages-tls", type=int, default=3000)
    ap.add_argument("--messages-cluster", type=int, default=5000,
                    help="cluster scenario: messages per setup (local spool, Redis 1 and 3 nodes)")
    ap.add_argument("--latency-messages", type=int, default=200)
    ap.add_argument("--latency-gap-ms", type=int, default=20)
    ap.add_argument("--generator", choices=("smtp-source", "blast"), default="smtp-source",
                    help="load generator of the single-recipient scenarios")
    ap.add_argument("--reuse", action="store_true",
                    help="send the next message over the same connection (default: one "
                         "message per connection, as the DESIGN reference figures)")
    ap.add_argument("--no-ceiling", action="store_true", help="skip the sink ceiling runs")
    ap.add_argument("--scale", action="store_true", help="also run the scale scenario (petrel)")
    ap.add_argument("--scale-messages", type=int, default=1000000)
    ap.add_argument("--scale-memlimit", action="store_true",
                    help="scale: run petrel in a memory cgroup limited to 2x its RSS with the "
                         "backlog queued (max_queue_depth = --scale-messages), then send "
                         "--scale-extra more (452 expected, no OOM kill)")
    ap.add_argument("--scale-extra", type=int, default=20000)
    ap.add_argument("--quick", action="store_true", help="1 run, a tenth of the messages (smoke test)")
    ap.add_argument("--timeout", type=float, default=600, help="per step, seconds")
    ap.add_argument("--workdir", default="/var/tmp", help="parent of the temp dirs (disk, not tmpfs)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dirs")
    ap.add_argument("--petrel-smtp-threads", type=int, default=None,
                    help="petrel's SMTP event loops (default: petrel's own, half the cores)")
    ap.add_argument("--baseline", help="another petrel binary (e.g. a build of the previous "
                    "commit), run as relay 'baseline' beside petrel in the same run")
    ap.add_argument("--out", help="JSON output (default bench/results/YYYY-MM-DD.json)")
    args = ap.parse_args()
    global PETREL_SMTP_THREADS
    PETREL_SMTP_THREADS = args.petrel_smtp_threads

    if args.quick:
        args.runs = 1
        for k in ("messages", "messages_50k", "messages_rcpt100", "messages_4xx", "messages_tls",
                  "messages_dkim", "messages_cluster"):
            setattr(args, k, max(100, getattr(args, k) // 10))
        args.latency_messages = min(args.latency_messages, 50)
    if os.geteuid() != 0:
        sys.exit("bench.py must run as root (the private Postfix instance needs it)")
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))

    build_tools()
    relays = [r.strip() for r in args.relays.split(",") if r.strip()]
    if args.baseline:
        global BASELINE
        BASELINE = os.path.abspath(args.baseline)
        relays.append("baseline")
    if "petrel" in relays and not os.access(PETREL, os.X_OK):
        log(f"{PETREL} not built: running Postfix only")
        relays.remove("petrel")
    for tool in (SMTP_SOURCE, POSTFIX):
        if not os.access(tool, os.X_OK):
            sys.exit(f"{tool} missing: run `scripts/deps.sh bench` (installs postfix)")
    scen_list = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    for scen in scen_list:
        if scen not in ("latency", "cluster") and scen not in SCENARIOS:
            sys.exit(f"unknown scenario {scen}; known: "
                     f"{', '.join(list(SCENARIOS) + ['latency', 'cluster'])}")
    t_start = time.monotonic()
    results = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:]),
        "machine": machine_info(args.workdir),
        "settings": {k: v for k, v in vars(args).items()},
        "scenarios": {},
    }
    if results["machine"]["loadavg_start"][0] > 0.5:
        log(f"warning: load average {results['machine']['loadavg_start'][0]:.2f} at start; "
            "figures will be noisy")
    keys = Keys(args.workdir)
    try:
        if not args.no_ceiling:
            results["sink_ceiling"] = sink_ceiling(args)
        counts = {"headline": args.messages, "50k": args.messages_50k,
                  "rcpt100": args.messages_rcpt100, "4xx": args.messages_4xx,
                  "starttls": args.messages_tls, "dkim": args.messages_dkim, "shaping10k": args.messages}
        for scen in scen_list:
            if scen == "latency":
                results["scenarios"]["latency"] = latency_scenario(args, relays, keys)
            elif scen == "cluster":
                if "petrel" in relays:
                    results["cluster"] = cluster_scenario(args)
            elif scen in SCENARIOS:
                results["scenarios"][scen] = throughput_scenario(args, relays, scen, counts[scen], keys)
        if args.scale:
            if "petrel" in relays:
                try:
                    results["scale"] = scale_run(args)
                except (BenchError, subprocess.TimeoutExpired) as e:
                    log(f"scale: {e}")
                    results["scale"] = {"error": str(e), "messages": args.scale_messages}
            else:
                results["scale"] = {"error": "petrel not built", "messages": args.scale_messages}
    except KeyboardInterrupt:
        log("interrupted")
        results["interrupted"] = True
    finally:
        keys.remove()
    results["machine"]["loadavg_end"] = os.getloadavg()
    results["elapsed_s"] = time.monotonic() - t_start
    out = args.out or os.path.join(HERE, "results", datetime.date.today().isoformat() + ".json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(results, f, indent=1)
    m = results["machine"]
    print(f"\npetrel bench, {results['date']}: {m['nproc']} x {m['cpu']}, kernel {m['kernel']}, "
          f"Postfix {m['postfix_version']}, workdir fs {m['workdir_fs']}, load {m['loadavg_start'][0]:.2f}")
    print(f"command: {results['command']}   ({results['elapsed_s']:.0f} s; medians of {args.runs} runs [min-max])\n")
    print_table(results)
    if "cluster" in results:
        print_cluster(results["cluster"])
    print(f"\nresults: {os.path.relpath(out, ROOT)}")
    return 1 if results.get("interrupted") else 0


if __name__ == "__main__":
    sys.exit(main())
