"""Process metrics and build info on /metrics (DESIGN §11): values agree with what
/proc says about the real petrel process, every family has HELP and TYPE, and
Debian's promtool accepts the whole exposition."""

import os
import re
import shutil
import subprocess
import time
import urllib.request

import pytest

from harness import PETREL_BIN, free_port


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return r.read().decode()


def value(text, name):
    m = re.search(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M)
    assert m, f"no {name} in:\n{text}"
    return float(m.group(1))


def test_process_metrics_and_build_info(world):
    hport = free_port()
    t0 = time.time()
    p = world.petrel(extra=f'petrel.start_http_listener {{ listen = "127.0.0.1:{hport}" }}')
    text = scrape(hport)
    for name, typ in (("process_resident_memory_bytes", "gauge"), ("process_open_fds", "gauge"),
                      ("process_start_time_seconds", "gauge"),
                      ("process_cpu_seconds_total", "counter"), ("petrel_build_info", "gauge")):
        assert f"# TYPE {name} {typ}\n" in text, name
        assert re.search(rf"^# HELP {name} \S", text, re.M), name
    version = subprocess.run([PETREL_BIN, "--version"], capture_output=True,
                             text=True).stdout.split()[-1]
    assert f'petrel_build_info{{version="{version}"}} 1\n' in text
    pid = p.pid
    with open(f"/proc/{pid}/status") as f:
        vmrss = int(re.search(r"^VmRSS:\s+(\d+) kB", f.read(), re.M).group(1)) * 1024
    rss = value(text, "process_resident_memory_bytes")
    assert 0.5 * vmrss <= rss <= 2 * vmrss, (rss, vmrss)
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    assert abs(value(text, "process_open_fds") - fds) <= 4, (value(text, "process_open_fds"), fds)
    start = value(text, "process_start_time_seconds")
    assert t0 - 5 <= start <= time.time() + 1, (start, t0)
    cpu1 = value(text, "process_cpu_seconds_total")
    for _ in range(20):
        p.send_message("alice@sender.test", ["bob@nowhere.test"])
    cpu2 = value(scrape(hport), "process_cpu_seconds_total")
    assert 0 <= cpu1 <= cpu2


@pytest.mark.skipif(not shutil.which("promtool"), reason="promtool (Debian prometheus) missing")
def test_promtool_accepts_exposition(world):
    hport = free_port()
    world.petrel(extra=f'petrel.start_http_listener {{ listen = "127.0.0.1:{hport}" }}')
    text = scrape(hport)
    r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                       text=True)
    # promtool lints naming conventions too; only a parse error fails here
    assert "error while linting" not in r.stderr and "text format parsing error" not in r.stderr, \
        r.stderr
