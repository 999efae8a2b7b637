#!/usr/bin/python3
"""Chaos run (issue 10, "Crash and restart"): a generator sends mail continuously over
SMTP and HTTP while petrel is killed with SIGKILL at random moments (and now and then
stopped with SIGTERM) and restarted at once; the next hop randomly refuses connections,
drops them mid-DATA and answers 4xx. At the end every message that got 250 (SMTP) or
200 (HTTP) must have arrived at the next hop at least once, the queue and the spool must
be empty; duplicates are counted, and each is checked against the kill times (the only
expected cause: a kill between the next hop's 250 and petrel's delete).

    tests/chaos/chaos.py [--kills 100] [--terms 5] [--seed N] [--json FILE]

Everything runs on loopback: a fake DNS server, the flaky next hop (a socket server in
this process) and build/petrel (PETREL_BIN), all stopped by pid. Exit status 0 when no
acknowledged message was lost and the spool ended empty; 1 otherwise.
"""

import argparse
import collections
import http.client
import json
import os
import random
import re
import smtplib
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "system"))

from fakedns import FakeDNS  # noqa: E402
from harness import Petrel, free_port, lua_config, lua_value  # noqa: E402
from tcpserver import ThreadedTCPServer  # noqa: E402

DOMAINS = ("alpha.test", "beta.test", "gamma.test")
MID_RE = re.compile(rb"^Message-ID:\s*<([^>]+)>", re.I | re.M)


# ---------------------------------------------------------------- the flaky next hop

class FlakyHop(ThreadedTCPServer):
    """A threaded SMTP server recording every Message-ID it accepted (with the time),
    injecting faults while `faults` is on: a 421 greeting, a 451 to RCPT, a connection
    dropped in the middle of DATA, a 451 after the final dot."""

    def __init__(self, ip, port, rng, p_refuse=0.05, p_rcpt4xx=0.03, p_drop=0.05, p_data4xx=0.05):
        super().__init__(ip, port, 128)
        self.rng = rng
        self.p = dict(refuse=p_refuse, rcpt4xx=p_rcpt4xx, drop=p_drop, data4xx=p_data4xx)
        self.faults = True
        self.injected = collections.Counter()
        self.deliveries = collections.defaultdict(list)    # msgid -> [time, ...]
        self.lock = threading.Lock()

    def _roll(self, what):
        with self.lock:
            hit = self.faults and self.rng.random() < self.p[what]
            if hit:
                self.injected[what] += 1
        return hit

    def _session(self, sock):
        sock.settimeout(30)
        buf = b""
        try:
            if self._roll("refuse"):
                sock.sendall(b"421 4.3.2 chaos: not now\r\n")
                return
            sock.sendall(b"220 hop.test ESMTP chaos\r\n")
            while not self.stop_ev.is_set():
                while b"\r\n" not in buf:
                    chunk = sock.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                line, _, buf = buf.partition(b"\r\n")
                verb = line[:4].upper()
                if verb in (b"EHLO", b"HELO"):
                    sock.sendall(b"250-hop.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
                elif verb == b"MAIL":
                    sock.sendall(b"250 2.1.0 ok\r\n")
                elif verb == b"RCPT":
                    sock.sendall(b"451 4.3.0 chaos: later\r\n" if self._roll("rcpt4xx")
                                 else b"250 2.1.5 ok\r\n")
                elif verb == b"DATA":
                    sock.sendall(b"354 go\r\n")
                    drop = self._roll("drop")
                    while b"\r\n.\r\n" not in b"\r\n" + buf:
                        if drop and len(buf) > 200:
                            sock.close()            # cut in the middle of DATA
                            return
                        chunk = sock.recv(65536)
                        if not chunk:
                            return
                        buf += chunk
                    data = b"\r\n" + buf
                    end = data.index(b"\r\n.\r\n")
                    payload, buf = data[2:end + 2], data[end + 5:]
                    if self._roll("data4xx"):
                        sock.sendall(b"451 4.3.0 chaos: try again\r\n")
                        continue
                    m = MID_RE.search(payload)
                    with self.lock:
                        self.deliveries[m.group(1).decode() if m else "?"].append(time.time())
                    sock.sendall(b"250 2.0.0 ok\r\n")
                elif verb == b"RSET" or verb == b"NOOP":
                    sock.sendall(b"250 ok\r\n")
                elif verb == b"QUIT":
                    sock.sendall(b"221 bye\r\n")
                    return
                else:
                    sock.sendall(b"502 5.5.1 no\r\n")
        except OSError:
            return
        finally:
            try:
                sock.close()
            except OSError:
                pass


# ---------------------------------------------------------------- generators

class Generator:
    """Sends continuously; `acked` maps each Message-ID petrel acknowledged (250 / 200)
    to the time of the acknowledgement."""

    def __init__(self, p, http_url, rng):
        self.p, self.http_url, self.rng = p, http_url, rng
        self.acked = {}
        self.attempts = collections.Counter()
        self.lock = threading.Lock()
        self.stop_ev = threading.Event()
        self.n = 0
        self.pace = 0.005          # per message and thread: a shared machine stays usable

    def _mid(self, kind):
        with self.lock:
            self.n += 1
            return f"chaos-{kind}-{self.n}-{os.getpid()}@gen.test"

    def _message(self, mid, rcpt):
        size = self.rng.choice((200, 2000, 20000))
        body = ("chaos line\r\n" * (size // 12))
        return (f"From: <gen@sender.test>\r\nTo: <{rcpt}>\r\nSubject: chaos\r\n"
                f"Message-ID: <{mid}>\r\n\r\n{body}").encode()

    def _ack(self, mid, kind):
        with self.lock:
            self.acked[mid] = time.time()
            self.attempts[kind + "_acked"] += 1

    def smtp_loop(self):
        while not self.stop_ev.is_set():
            try:
                s = smtplib.SMTP(self.p.host, self.p.port, local_hostname="gen.test", timeout=10)
            except (OSError, smtplib.SMTPException):
                time.sleep(0.05)
                continue
            try:
                for _ in range(self.rng.randint(1, 3)):
                    if self.stop_ev.is_set():
                        break
                    mid = self._mid("smtp")
                    rcpt = f"u{self.rng.randint(1, 50)}@{self.rng.choice(DOMAINS)}"
                    self.attempts["smtp"] += 1
                    time.sleep(self.pace)
                    try:
                        s.sendmail("gen@sender.test", [rcpt], self._message(mid, rcpt))
                        self._ack(mid, "smtp")
                    except smtplib.SMTPResponseException:
                        self.attempts["smtp_refused"] += 1
                s.quit()
            except (OSError, smtplib.SMTPException):
                self.attempts["smtp_cut"] += 1
            finally:
                try:
                    s.close()
                except OSError:
                    pass

    def http_loop(self):
        host, port = self.http_url.split("//")[1].split(":")
        while not self.stop_ev.is_set():
            mid = self._mid("http")
            rcpt = f"h{self.rng.randint(1, 50)}@{self.rng.choice(DOMAINS)}"
            doc = {"envelope_sender": "gen@sender.test",
                   "content": self._message(mid, rcpt).decode(),
                   "recipients": [{"email": rcpt}]}
            self.attempts["http"] += 1
            time.sleep(self.pace)
            try:
                c = http.client.HTTPConnection(host, int(port), timeout=10)
                c.request("POST", "/api/inject/v1", body=json.dumps(doc).encode(),
                          headers={"Content-Type": "application/json"})
                r = c.getresponse()
                body = r.read()
                c.close()
                if r.status == 200 and json.loads(body).get("success_count") == 1:
                    self._ack(mid, "http")
                else:
                    self.attempts["http_refused"] += 1
            except (OSError, http.client.HTTPException, ValueError):
                self.attempts["http_cut"] += 1
                time.sleep(0.05)


# ---------------------------------------------------------------- the run

def queue_total(url):
    host, port = url.split("//")[1].split(":")
    try:
        c = http.client.HTTPConnection(host, int(port), timeout=5)
        c.request("GET", "/api/queue")
        r = c.getresponse()
        doc = json.loads(r.read())
        c.close()
        return doc.get("total")
    except (OSError, http.client.HTTPException, ValueError):
        return None


def run(kills=100, terms=5, seed=None, workdir=None, pause=(0.2, 1.5), drain_timeout=180,
        out=print):
    seed = seed if seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    workdir = workdir or tempfile.mkdtemp(prefix="petrel-chaos-")
    dns = FakeDNS().start()
    mx_port = free_port(("127.0.0.1", "127.0.0.40"))
    hop = FlakyHop("127.0.0.40", mx_port, random.Random(seed + 1)).start()
    for d in DOMAINS:
        dns.add_mx(d, f"mx.{d}", 10)
        dns.add_a(f"mx.{d}", "127.0.0.40")
    smtp_port, http_port = free_port(), free_port()
    http_url = f"http://127.0.0.1:{http_port}"
    extra = "petrel.start_http_listener " + lua_value({"listen": f"127.0.0.1:{http_port}"})
    cfg = lua_config(
        listeners=[{"listen": f"127.0.0.1:{smtp_port}", "name": "chaos-in",
                    "hostname": "petrel.test"}],
        queue={"spool_dir": os.path.join(workdir, "spool"), "retry_interval": "1s",
               "max_retry_interval": "2s", "max_retry_age": "1h"},
        delivery={"smtp_port": mx_port, "connect_timeout": "3s", "helo_name": "petrel.test"},
        dns=[dns.addr], logging={"path": os.path.join(workdir, "log", "petrel.jsonl"),
                                 "level": "info"},
        extra=extra)
    p = Petrel(workdir, cfg, smtp_port)
    gen = Generator(p, http_url, random.Random(seed + 2))
    threads = []
    crashes, term_codes, ready_times = [], [], []
    t_start = time.time()
    kill_times = []
    try:
        p.start()
        threads = [threading.Thread(target=gen.smtp_loop, daemon=True) for _ in range(2)]
        threads.append(threading.Thread(target=gen.http_loop, daemon=True))
        for t in threads:
            t.start()
        plan = ["KILL"] * kills + ["TERM"] * terms
        rng.shuffle(plan)
        for i, sig in enumerate(plan):
            time.sleep(rng.uniform(*pause))
            rc = p.proc.poll()
            if rc is not None:
                crashes.append((i, rc))
                out(f"chaos: petrel died by itself (exit {rc}) before event {i}")
            elif sig == "KILL":
                kill_times.append(time.time())
                p.kill()
            else:
                kill_times.append(time.time())
                rc = p.stop(timeout=30, check=False)
                term_codes.append(rc)
            t0 = time.monotonic()
            p.start()
            ready_times.append(time.monotonic() - t0)
            if (i + 1) % 10 == 0:
                out(f"chaos: {i + 1}/{len(plan)} kills, {len(gen.acked)} acknowledged, "
                    f"{len(hop.deliveries)} delivered")
        gen.stop_ev.set()
        for t in threads:
            t.join(30)
        with hop.lock:
            hop.faults = False
        # Drain: everything acknowledged arrives, the queue empties.
        deadline = time.time() + drain_timeout
        while time.time() < deadline:
            with hop.lock:
                missing = [m for m in gen.acked if m not in hop.deliveries]
            if not missing and queue_total(http_url) == 0:
                break
            time.sleep(0.5)
        if p.proc.poll() is not None:
            crashes.append(("end", p.proc.returncode))
        rc_final = p.stop(timeout=30, check=False)
        # The spool is empty: a restart recovers no entry.
        p.start()
        m = None
        for ln in p.stderr_text().splitlines()[::-1]:
            m = re.search(r"recovered (\d+) queued entries", ln)
            if m:
                break
        spool_left = int(m.group(1)) if m else -1
        p.stop(timeout=30, check=False)
    finally:
        gen.stop_ev.set()
        try:
            p.kill()
        except Exception:
            pass
        hop.stop()
        dns.stop()

    with hop.lock:
        deliveries = {k: list(v) for k, v in hop.deliveries.items()}
    lost = sorted(m for m in gen.acked if m not in deliveries)
    dups = {m: t for m, t in deliveries.items() if len(t) > 1}
    explained = 0
    for m, times in dups.items():
        first = min(times)
        if any(first - 0.2 <= k <= first + 1.0 for k in kill_times):
            explained += 1
    unacked_delivered = sum(1 for m in deliveries if m not in gen.acked and m != "?")
    summary = {
        "seed": seed, "kills": kills, "terms": terms,
        "seconds": round(time.time() - t_start, 1),
        "acknowledged": len(gen.acked),
        "acknowledged_smtp": gen.attempts["smtp_acked"],
        "acknowledged_http": gen.attempts["http_acked"],
        "attempts": dict(gen.attempts),
        "delivered_unique": len(deliveries),
        "deliveries_total": sum(len(v) for v in deliveries.values()),
        "lost": len(lost), "lost_ids": lost[:20],
        "duplicates": len(dups), "duplicates_near_a_kill": explained,
        "delivered_but_not_acknowledged": unacked_delivered,
        "hop_faults_injected": dict(hop.injected),
        "crashes": crashes, "sigterm_exit_codes": sorted(set(term_codes)),
        "final_stop_exit": rc_final,
        "ready_after_restart_s": {
            "mean": round(sum(ready_times) / len(ready_times), 3) if ready_times else None,
            "max": round(max(ready_times), 3) if ready_times else None},
        "spool_entries_left": spool_left,
        "workdir": workdir,
    }
    summary["ok"] = (not lost and spool_left == 0 and not crashes and
                     all(c == 0 for c in term_codes) and rc_final == 0)
    return summary


def print_summary(s, out=print):
    out("")
    out("chaos summary")
    out(f"  seed {s['seed']}: {s['kills']} SIGKILLs + {s['terms']} SIGTERMs in {s['seconds']} s")
    out(f"  acknowledged {s['acknowledged']} (SMTP {s['acknowledged_smtp']}, "
        f"HTTP {s['acknowledged_http']}); attempts {s['attempts']}")
    out(f"  delivered {s['delivered_unique']} unique, {s['deliveries_total']} in all; "
        f"lost {s['lost']}; duplicates {s['duplicates']} "
        f"({s['duplicates_near_a_kill']} with a kill within 1 s after the first copy)")
    out(f"  delivered though never acknowledged (cut before the reply): "
        f"{s['delivered_but_not_acknowledged']}")
    out(f"  next-hop faults injected: {s['hop_faults_injected']}")
    out(f"  restarts: ready after {s['ready_after_restart_s']['mean']} s mean, "
        f"{s['ready_after_restart_s']['max']} s max; SIGTERM exits {s['sigterm_exit_codes']}; "
        f"crashes {s['crashes']}")
    out(f"  spool entries left after the drain: {s['spool_entries_left']}")
    out(f"  result: {'OK' if s['ok'] else 'FAILED'}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=100)
    ap.add_argument("--terms", type=int, default=5)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--json", help="also write the summary here")
    a = ap.parse_args()
    s = run(kills=a.kills, terms=a.terms, seed=a.seed)
    print_summary(s)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(s, f, indent=2)
    return 0 if s["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
