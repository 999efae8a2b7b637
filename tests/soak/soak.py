#!/usr/bin/python3
"""Soak run (issue 10, "Soak"): petrel under a steady mixed load for DURATION, with its
RSS, open fds, threads, queue depth and SMTP latency sampled every INTERVAL seconds.

    tests/soak/soak.py --duration 1h [--rate 20] [--interval 10] [--out build/soak]

The mix: messages of 2 KB and 100 KB (4:1), 1-100 recipients over five destination
domains, STARTTLS on a third of the inbound connections; the next hop answers 5% of
transactions with 451 and 1% with 550 (petrel retries the first and bounces the second,
the DSNs going to a sink too). Writes OUT/soak.tsv (one row per sample), OUT/soak.png
(gnuplot-free: matplotlib from Debian) and OUT/summary.json, and prints a table and the
drift after warm-up (the first quarter of the run): RSS, fds and threads min/max against
their mean, and p99 latency per window. Exit status 1 if petrel died, an acknowledged
message never arrived, or (with --strict) RSS moved more than 10% after warm-up.
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

from certs import PKI, listener_tls  # noqa: E402
from fakedns import FakeDNS  # noqa: E402
from harness import Petrel, free_port, lua_config, lua_value  # noqa: E402
from tcpserver import ThreadedTCPServer  # noqa: E402

DOMAINS = [f"d{i}.soak.test" for i in range(5)]
MID_RE = re.compile(rb"^Message-ID:\s*<([^>]+)>", re.I | re.M)


def parse_duration(text):
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", str(text))
    if not m:
        raise ValueError(f"bad duration {text!r} (e.g. 90s, 2m, 1h)")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


class Hop(ThreadedTCPServer):
    """Next hop: accepts, answers 451 / 550 to a share of transactions, records ids."""

    def __init__(self, ip, port, rng, p4=0.05, p5=0.01):
        super().__init__(ip, port, 256)
        self.rng, self.p4, self.p5 = rng, p4, p5
        self.lock = threading.Lock()
        self.delivered = collections.Counter()
        self.answers = collections.Counter()

    def _session(self, sock):
        sock.settimeout(60)
        buf = b""
        try:
            sock.sendall(b"220 hop.soak.test ESMTP\r\n")
            while True:
                while b"\r\n" not in buf:
                    chunk = sock.recv(262144)
                    if not chunk:
                        return
                    buf += chunk
                line, _, buf = buf.partition(b"\r\n")
                verb = line[:4].upper()
                if verb in (b"EHLO", b"HELO"):
                    sock.sendall(b"250-hop.soak.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
                elif verb in (b"MAIL", b"RCPT", b"RSET", b"NOOP"):
                    sock.sendall(b"250 ok\r\n")
                elif verb == b"DATA":
                    sock.sendall(b"354 go\r\n")
                    while b"\r\n.\r\n" not in b"\r\n" + buf:
                        chunk = sock.recv(262144)
                        if not chunk:
                            return
                        buf += chunk
                    data = b"\r\n" + buf
                    end = data.index(b"\r\n.\r\n")
                    payload, buf = data[2:end + 2], data[end + 5:]
                    r = self.rng.random()
                    if r < self.p5:
                        answer = b"550 5.7.1 soak: refused\r\n"
                        kind = "5xx"
                    elif r < self.p5 + self.p4:
                        answer = b"451 4.3.0 soak: later\r\n"
                        kind = "4xx"
                    else:
                        answer = b"250 2.0.0 ok\r\n"
                        kind = "250"
                    with self.lock:
                        self.answers[kind] += 1
                        if kind == "250":
                            m = MID_RE.search(payload)
                            self.delivered[m.group(1).decode() if m else "?"] += 1
                    sock.sendall(answer)
                elif verb == b"QUIT":
                    sock.sendall(b"221 bye\r\n")
                    return
                else:
                    sock.sendall(b"502 no\r\n")
        except OSError:
            return
        finally:
            sock.close()


class Load:
    """Fixed-rate sender: `rate` messages a second, each on its own connection
    (a third with STARTTLS), latency = MAIL..250 after DATA."""

    def __init__(self, p, rate, rng, tls_ctx, workers=8):
        self.p, self.rate, self.rng, self.tls_ctx = p, rate, rng, tls_ctx
        self.lock = threading.Lock()
        self.latencies = []                 # (time, seconds) of acknowledged messages
        self.acked = {}                     # msgid -> n recipients
        self.counts = collections.Counter()
        self.stop_ev = threading.Event()
        self.sem = threading.Semaphore(workers)
        self.n = 0
        self.big = "x" * 98 + "\r\n"
        self.small = "y" * 98 + "\r\n"

    def _message(self, mid, rcpts):
        lines = 1000 if self.rng.random() < 0.2 else 20          # 100 KB or 2 KB
        body = (self.big if lines == 1000 else self.small) * lines
        return (f"From: <gen@sender.soak.test>\r\nTo: <{rcpts[0]}>\r\nSubject: soak\r\n"
                f"Message-ID: <{mid}>\r\n\r\n{body}").encode()

    def _one(self, mid, rcpts, data, tls):
        try:
            t0 = time.monotonic()
            s = smtplib.SMTP(self.p.host, self.p.port, local_hostname="gen.soak.test", timeout=60)
            try:
                s.ehlo()
                if tls:
                    s.starttls(context=self.tls_ctx)
                    s.ehlo()
                t1 = time.monotonic()
                s.sendmail("gen@sender.soak.test", rcpts, data)
                lat = time.monotonic() - t1
                with self.lock:
                    self.acked[mid] = len(rcpts)
                    self.latencies.append((time.time(), lat))
                    self.counts["acked"] += 1
                    self.counts["tls" if tls else "plain"] += 1
                s.quit()
            finally:
                s.close()
            del t0
        except (OSError, smtplib.SMTPException) as e:
            with self.lock:
                self.counts["failed"] += 1
                self.counts["failed:" + type(e).__name__] += 1
        finally:
            self.sem.release()

    def run(self):
        period = 1.0 / self.rate
        next_t = time.monotonic()
        while not self.stop_ev.is_set():
            now = time.monotonic()
            if now < next_t:
                self.stop_ev.wait(next_t - now)
                continue
            next_t += period
            if not self.sem.acquire(timeout=5):
                with self.lock:
                    self.counts["skipped_busy"] += 1
                continue
            self.n += 1
            mid = f"soak-{self.n}-{os.getpid()}@gen.soak.test"
            k = self.rng.choice((1, 1, 1, 2, 5, 10, 100)) if self.rng.random() < 0.9 else \
                self.rng.randint(1, 100)
            rcpts = [f"r{i}@{DOMAINS[i % len(DOMAINS)]}" for i in range(k)]
            data = self._message(mid, rcpts)
            tls = self.rng.random() < 1 / 3
            threading.Thread(target=self._one, args=(mid, rcpts, data, tls), daemon=True).start()


def proc_sample(pid):
    with open(f"/proc/{pid}/status") as f:
        st = f.read()
    rss = int(re.search(r"VmRSS:\s+(\d+)", st).group(1)) * 1024
    threads = int(re.search(r"Threads:\s+(\d+)", st).group(1))
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    cpu = (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")
    return rss, fds, threads, cpu


def queue_total(url):
    host, port = url.split("//")[1].split(":")
    try:
        c = http.client.HTTPConnection(host, int(port), timeout=5)
        c.request("GET", "/api/queue")
        doc = json.loads(c.getresponse().read())
        c.close()
        return doc.get("total")
    except (OSError, http.client.HTTPException, ValueError):
        return None


def pct(xs, q):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def run(duration=3600.0, rate=20.0, interval=10.0, out_dir="build/soak", seed=1, out=print,
        drain_timeout=120.0):
    rng = random.Random(seed)
    os.makedirs(out_dir, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="petrel-soak-")
    pki = PKI(os.path.join(workdir, "pki"))
    dns = FakeDNS().start()
    mx_port = free_port(("127.0.0.1", "127.0.0.41"))
    hop = Hop("127.0.0.41", mx_port, random.Random(seed + 1)).start()
    for d in DOMAINS + ["sender.soak.test"]:
        dns.add_mx(d, f"mx.{d}", 10)
        dns.add_a(f"mx.{d}", "127.0.0.41")
    smtp_port, http_port = free_port(), free_port()
    http_url = f"http://127.0.0.1:{http_port}"
    cfg = lua_config(
        listeners=[{"listen": f"127.0.0.1:{smtp_port}", "name": "soak-in",
                    "hostname": "petrel.test", "tls": listener_tls(pki),
                    "max_recipients": 1000}],
        queue={"spool_dir": os.path.join(workdir, "spool"), "retry_interval": "2s",
               "max_retry_interval": "10s", "max_retry_age": "1h"},
        delivery={"smtp_port": mx_port, "connect_timeout": "5s", "helo_name": "petrel.test"},
        dns=[dns.addr], logging={"path": os.path.join(workdir, "log", "petrel.jsonl"),
                                 "level": "warn"},
        extra="petrel.start_http_listener " + lua_value({"listen": f"127.0.0.1:{http_port}"}))
    p = Petrel(workdir, cfg, smtp_port)
    load = Load(p, rate, random.Random(seed + 2), pki.client_context(verify=True))
    rows = []
    died = None
    try:
        p.start()
        t_load = threading.Thread(target=load.run, daemon=True)
        t0 = time.time()
        t_load.start()
        next_sample = t0
        last_lat = 0
        last_cpu = proc_sample(p.pid)[3]
        while True:
            now = time.time()
            if now >= next_sample:
                if not p.alive():
                    died = p.proc.returncode
                    break
                rss, fds, threads, cpu = proc_sample(p.pid)
                with load.lock:
                    lats = [x for _, x in load.latencies[last_lat:]]
                    last_lat = len(load.latencies)
                    acked = load.counts["acked"]
                with hop.lock:
                    delivered = sum(hop.delivered.values())
                rows.append({
                    "t": round(now - t0, 1), "rss_mb": round(rss / 2**20, 1), "fds": fds,
                    "threads": threads, "cpu_pct": round(100 * (cpu - last_cpu) / interval, 1),
                    "queue": queue_total(http_url), "acked": acked, "delivered": delivered,
                    "p50_ms": round(1000 * pct(lats, 0.5), 1) if lats else None,
                    "p99_ms": round(1000 * pct(lats, 0.99), 1) if lats else None,
                })
                last_cpu = cpu
                r = rows[-1]
                out(f"{r['t']:8.0f}s rss {r['rss_mb']:7.1f} MB fds {r['fds']:4d} threads "
                    f"{r['threads']:3d} cpu {r['cpu_pct']:5.1f}% queue {r['queue']} acked "
                    f"{r['acked']} delivered {r['delivered']} p50 {r['p50_ms']} ms "
                    f"p99 {r['p99_ms']} ms")
                next_sample += interval
                if now - t0 >= duration:
                    break
            time.sleep(min(0.5, max(0.0, next_sample - time.time())))
        load.stop_ev.set()
        t_load.join(10)
        # Let in-flight sends finish, then drain what was acknowledged.
        deadline = time.time() + drain_timeout
        missing = []
        while time.time() < deadline and p.alive():
            with load.lock:
                acked = dict(load.acked)
            with hop.lock:
                missing = [m for m in acked if m not in hop.delivered]
            # a 550 at the hop bounces: such a message may legitimately never arrive
            if len(missing) <= hop.answers["5xx"] and queue_total(http_url) == 0:
                break
            time.sleep(1)
        if died is None and not p.alive():
            died = p.proc.returncode
        if died is None:
            p.stop(timeout=30, check=False)
    finally:
        load.stop_ev.set()
        p.kill()
        hop.stop()
        dns.stop()

    summary = summarize(rows, load, hop, died, missing, duration, rate, interval)
    write_outputs(rows, summary, out_dir)
    print_table(rows, summary, out)
    return summary


def drift(vals):
    vals = [v for v in vals if v is not None]
    if not vals:
        return None
    mean = sum(vals) / len(vals)
    return {"mean": round(mean, 2), "min": min(vals), "max": max(vals),
            "min_pct": round(100 * (min(vals) - mean) / mean, 1) if mean else 0.0,
            "max_pct": round(100 * (max(vals) - mean) / mean, 1) if mean else 0.0}


def summarize(rows, load, hop, died, missing, duration, rate, interval):
    warm = rows[max(1, len(rows) // 4):] or rows
    lat = [x for _, x in load.latencies]
    s = {
        "duration_s": duration, "rate_per_s": rate, "interval_s": interval,
        "samples": len(rows), "petrel_died": died,
        "acknowledged": len(load.acked), "counts": dict(load.counts),
        "hop_answers": dict(hop.answers),
        "missing_after_drain": len(missing),
        "rss_mb": drift([r["rss_mb"] for r in warm]),
        "fds": drift([r["fds"] for r in warm]),
        "threads": drift([r["threads"] for r in warm]),
        "p99_ms_per_window": drift([r["p99_ms"] for r in warm]),
        "latency_ms": {"p50": round(1000 * pct(lat, 0.5), 1) if lat else None,
                       "p99": round(1000 * pct(lat, 0.99), 1) if lat else None,
                       "max": round(1000 * max(lat), 1) if lat else None},
    }
    rss = s["rss_mb"]
    s["rss_flat_10pct"] = bool(rss and rss["max_pct"] <= 10 and rss["min_pct"] >= -10)
    # a 550 bounces the message: up to that many may never arrive, by design
    s["ok"] = died is None and len(missing) <= hop.answers["5xx"] and len(load.acked) > 0
    return s


def write_outputs(rows, s, out_dir):
    cols = ["t", "rss_mb", "fds", "threads", "cpu_pct", "queue", "acked", "delivered",
            "p50_ms", "p99_ms"]
    with open(os.path.join(out_dir, "soak.tsv"), "w") as f:
        f.write("\t".join(cols) + "\n")
        for r in rows:
            f.write("\t".join("" if r[c] is None else str(r[c]) for c in cols) + "\n")
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(s, f, indent=2)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    t = [r["t"] / 60 for r in rows]
    fig, ax = plt.subplots(4, 1, figsize=(9, 10), sharex=True)
    ax[0].plot(t, [r["rss_mb"] for r in rows])
    ax[0].set_ylabel("RSS (MB)")
    ax[1].plot(t, [r["fds"] for r in rows], label="fds")
    ax[1].plot(t, [r["threads"] for r in rows], label="threads")
    ax[1].legend()
    ax[2].plot(t, [r["p50_ms"] for r in rows], label="p50")
    ax[2].plot(t, [r["p99_ms"] for r in rows], label="p99")
    ax[2].set_ylabel("SMTP latency (ms)")
    ax[2].legend()
    ax[3].plot(t, [r["queue"] for r in rows])
    ax[3].set_ylabel("queued entries")
    ax[3].set_xlabel("minutes")
    fig.suptitle(f"petrel soak: {s['rate_per_s']:g} msg/s for {s['duration_s'] / 60:.0f} min")
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "soak.png"), dpi=90)
    plt.close(fig)


def print_table(rows, s, out):
    out("")
    out("| t (s) | RSS (MB) | fds | threads | CPU % | queue | acked | delivered | p50 ms | p99 ms |")
    out("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    step = max(1, len(rows) // 24)
    for r in rows[::step]:
        out(f"| {r['t']:.0f} | {r['rss_mb']} | {r['fds']} | {r['threads']} | {r['cpu_pct']} | "
            f"{r['queue']} | {r['acked']} | {r['delivered']} | {r['p50_ms']} | {r['p99_ms']} |")
    out("")
    out(f"after warm-up: RSS {s['rss_mb']}, fds {s['fds']}, threads {s['threads']}, "
        f"p99 per window {s['p99_ms_per_window']}")
    out(f"latency overall {s['latency_ms']}; acknowledged {s['acknowledged']}; "
        f"hop answers {s['hop_answers']}; missing after drain {s['missing_after_drain']}; "
        f"RSS flat within 10%: {s['rss_flat_10pct']}; result {'OK' if s['ok'] else 'FAILED'}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", default="1h")
    ap.add_argument("--rate", type=float, default=20.0, help="messages per second")
    ap.add_argument("--interval", type=float, default=10.0)
    ap.add_argument("--out", default="build/soak")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--strict", action="store_true", help="fail unless RSS is flat within 10%%")
    a = ap.parse_args()
    s = run(parse_duration(a.duration), a.rate, a.interval, a.out, a.seed)
    ok = s["ok"] and (s["rss_flat_10pct"] or not a.strict)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
