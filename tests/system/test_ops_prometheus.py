"""A real Prometheus (Debian `prometheus`, private config and storage, loopback,
stopped by pid) scraping petrel every second, with contrib/prometheus/alerts.yml
loaded: after known traffic, rate() of petrel_messages_delivered_total and the
latency histogram's quantile come out as expected through the HTTP API, every
alert rule evaluates without error, and every Grafana panel query runs."""

import glob
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

from harness import REPO, free_port, make_message, msgid_of, wait_for

PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(not PROMETHEUS, reason="prometheus (Debian package) missing")


class Prometheus:
    def __init__(self, workdir, target):
        self.port = free_port()
        os.makedirs(workdir, exist_ok=True)
        shutil.copy(os.path.join(REPO, "contrib", "prometheus", "alerts.yml"), workdir)
        cfg = os.path.join(workdir, "prometheus.yml")
        with open(cfg, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                    "rule_files: [alerts.yml]\n"
                    "scrape_configs:\n  - job_name: petrel\n"
                    f"    static_configs: [{{targets: ['{target}']}}]\n")
        self.log = open(os.path.join(workdir, "prometheus.log"), "wb")
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={cfg}", f"--storage.tsdb.path={workdir}/data",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=workdir)

    def api(self, path, **params):
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=10) as r:
            doc = json.load(r)
        assert doc["status"] == "success", doc
        return doc["data"]

    def query(self, q):
        return self.api("query", query=q)["result"]

    def scalar(self, q):
        res = self.query(q)
        return float(res[0]["value"][1]) if res else None

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


def test_prometheus_scrapes_rates_and_dashboards(world, tmp_path):
    dest = world.mx_domain("dest.test", "127.0.0.2")
    hport = free_port()
    p = world.petrel(extra=f'petrel.start_http_listener {{ listen = "127.0.0.1:{hport}" }}')
    # the series exists before the traffic that rate() must see
    dest.wait_message(p.send_message("a@sender.test", ["first@dest.test"]))
    prom = Prometheus(str(tmp_path / "prom"), f"127.0.0.1:{hport}")
    try:
        def up():
            try:
                return prom.scalar('up{job="petrel"}') == 1
            except OSError:
                assert prom.proc.poll() is None, open(prom.log.name).read()
                return False
        wait_for(up, 30, "prometheus scraping petrel", interval=0.5)
        wait_for(lambda: prom.scalar("sum(petrel_messages_delivered_total)") == 1, 15,
                 "the first delivery in prometheus")
        time.sleep(2)
        n = 20
        s = p.smtp()
        for i in range(n):
            data = make_message("a@sender.test", [f"r{i}@dest.test"])
            p.send("a@sender.test", [f"r{i}@dest.test"], data, smtp=s)
        s.quit()
        dest.wait_count(n + 1)
        wait_for(lambda: prom.scalar("sum(petrel_messages_delivered_total)") == n + 1, 15,
                 f"{n + 1} deliveries in prometheus")
        time.sleep(2)
        inc = prom.scalar("sum(increase(petrel_messages_delivered_total[1m]))")
        rate = prom.scalar("sum(rate(petrel_messages_delivered_total[1m]))")
        assert inc is not None and n * 0.9 <= inc <= n * 1.6, inc
        assert rate is not None and abs(rate * 60 - inc) < 0.05 * inc, (rate, inc)
        q50 = prom.scalar("histogram_quantile(0.5, sum by (le) "
                          "(rate(petrel_delivery_latency_seconds_bucket[1m])))")
        assert q50 is not None and 0 < q50 < 1.0, q50     # loopback delivery: well under 1 s
        got = prom.scalar("sum(increase(petrel_messages_received_total[1m]))")
        assert got is not None and n * 0.9 <= got <= n * 1.6, got
        # alert rules: loaded and evaluating cleanly; nothing fires on a healthy relay
        groups = prom.api("rules")["groups"]
        rules = [r for g in groups for r in g["rules"]]
        assert len(rules) >= 17
        for r in rules:
            assert r["health"] in ("ok", "unknown"), r
        wait_for(lambda: all(r["health"] == "ok" for g in prom.api("rules")["groups"]
                             for r in g["rules"]), 10, "every rule evaluated")
        firing = [a for a in prom.api("alerts")["alerts"] if a["state"] == "firing"]
        assert firing == [], firing
        # every Grafana panel query is valid PromQL and finds data where petrel has it
        empty = []
        for f in sorted(glob.glob(os.path.join(REPO, "contrib", "grafana", "*.json"))):
            for panel in json.load(open(f))["panels"]:
                found = False
                for t in panel["targets"]:
                    expr = t["expr"].replace("$instance", ".*")
                    found = bool(prom.query(expr)) or found   # raises on invalid PromQL
                if not found:
                    empty.append((os.path.basename(f), panel["title"]))
        # with no error, TLS or AUTH traffic, only these panels may be empty
        for fname, title in empty:
            assert fname == "per-isp.json" or any(w in title for w in (
                "errors", "TLS failures", "AUTH", "retrying")), \
                (fname, title)
    finally:
        prom.stop()
