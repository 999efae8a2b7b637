"""contrib/ checked with the real tools Debian offers (DESIGN §11): promtool runs
the alert rules' unit tests, systemd-analyze verifies the unit and its ExecStart
line runs petrel, yamllint lints the YAML, the Helm chart's templates parse (no
helm here: placeholders stand for the template expressions) and its generated
petrel.lua passes --check, every Grafana expression names only metrics that a real
petrel /metrics scrape has."""

import glob
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
import urllib.request

import pytest
import yaml

from harness import PETREL_BIN, REPO, free_port, wait_for

CONTRIB = os.path.join(REPO, "contrib")


def need(tool):
    path = shutil.which(tool)
    if not path:
        pytest.skip(f"{tool} not installed (scripts/deps.sh test)")
    return path


# ---------------------------------------------------------------- Prometheus rules

def test_promtool_rules():
    promtool = need("promtool")
    d = os.path.join(CONTRIB, "prometheus")
    r = subprocess.run([promtool, "check", "rules", "alerts.yml"], cwd=d, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([promtool, "test", "rules", "rules_test.yml"], cwd=d, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr
    rules = yaml.safe_load(open(os.path.join(d, "alerts.yml")))["groups"][0]["rules"]
    alerts = {x["alert"] for x in rules if "alert" in x}
    assert {"PetrelDown", "PetrelQueueBacklog", "PetrelQueueDepthCritical",
            "PetrelDeliveryLatencyHigh", "PetrelSmtpErrorRateHigh", "PetrelTlsFailureRateHigh",
            "PetrelAuthFailures", "PetrelUpstreamRejecting", "PetrelBounceRateHigh"} <= alerts
    tested = set(re.findall(r"alertname: (\w+)", open(os.path.join(d, "rules_test.yml")).read()))
    assert alerts <= tested, alerts - tested


def test_yamllint():
    yl = need("yamllint")
    files = [os.path.join(CONTRIB, "prometheus", f) for f in ("alerts.yml", "rules_test.yml")]
    files += [os.path.join(CONTRIB, "kubernetes", "petrel", f) for f in ("Chart.yaml", "values.yaml")]
    files.append(os.path.join(CONTRIB, "kubernetes", "prometheus-adapter.yaml"))
    r = subprocess.run([yl, "-s", "-c", os.path.join(CONTRIB, ".yamllint"), *files],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


# ---------------------------------------------------------------- systemd

def unit_for_here(tmp_path):
    text = open(os.path.join(CONTRIB, "systemd", "petrel.service")).read()
    text = text.replace("/usr/local/sbin/petrel", PETREL_BIN)
    path = tmp_path / "petrel.service"
    path.write_text(text)
    return path, text


def test_systemd_unit_verifies(tmp_path):
    sa = need("systemd-analyze")
    path, text = unit_for_here(tmp_path)
    r = subprocess.run([sa, "verify", "--man=no", str(path)], capture_output=True, text=True,
                       timeout=120, cwd=str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    for line in ("Type=notify", "ExecReload=/bin/kill -HUP $MAINPID", "ProtectSystem=strict",
                 "NoNewPrivileges=yes", "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
                 "PrivateTmp=yes", "LimitNOFILE=", "ReadWritePaths=/var/lib/petrel /var/log/petrel"):
        assert line in text, line


def test_systemd_execstart_line_runs(world, tmp_path):
    """The unit's ExecStartPre/ExecStart lines, with the config path pointed at a test
    config: --check passes, petrel starts, ExecReload's SIGHUP reloads, SIGTERM stops."""
    path, text = unit_for_here(tmp_path)
    p = world.petrel(start=False)
    def line(key):
        cmd = shlex.split(re.search(rf"^{key}=(.*)$", text, re.M).group(1))
        return [p.cfg_path if a == "/etc/petrel/petrel.lua" else a for a in cmd]
    r = subprocess.run(line("ExecStartPre"), capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "config ok" in r.stdout, r.stderr
    proc = subprocess.Popen(line("ExecStart"), stderr=subprocess.PIPE, cwd=p.workdir)
    try:
        buf = b""
        deadline = time.time() + 10
        while b"petrel ready" not in buf and time.time() < deadline:
            buf += proc.stderr.readline()
        assert b"petrel ready" in buf, buf
        reload = line("ExecReload")
        assert reload[:2] == ["/bin/kill", "-HUP"]
        os.kill(proc.pid, signal.SIGHUP)        # $MAINPID
        time.sleep(0.5)
        assert proc.poll() is None
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def test_sd_notify_ready_and_stopping(world, tmp_path):
    """Type=notify: petrel sends READY=1 after 'petrel ready' and STOPPING=1 on
    SIGTERM to $NOTIFY_SOCKET."""
    import socket
    sock_path = str(tmp_path / "notify.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(sock_path)
    s.settimeout(10)
    p = world.petrel(start=False)
    proc = subprocess.Popen([PETREL_BIN, "-c", p.cfg_path], cwd=p.workdir,
                            env=dict(os.environ, NOTIFY_SOCKET=sock_path),
                            stderr=subprocess.DEVNULL)
    try:
        assert b"READY=1" in s.recv(4096)
        os.kill(proc.pid, signal.SIGTERM)
        msgs = b""
        while b"STOPPING=1" not in msgs:
            msgs += s.recv(4096)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        s.close()


# ---------------------------------------------------------------- Helm chart

CHART = os.path.join(CONTRIB, "kubernetes", "petrel")


def parse_template(path):
    """Parses a Helm template as YAML without helm: control lines ({{- if }},
    {{- end }}, {{- range }}, toYaml blocks) are dropped, other {{ ... }} become a
    placeholder scalar."""
    out = []
    for line in open(path):
        s = line.strip()
        if re.fullmatch(r"\{\{-?\s*(if|else|end|range|with)\b.*\}\}", s) or "nindent" in s:
            continue
        out.append(re.sub(r"\{\{-?.*?-?\}\}", "PLACEHOLDER", line))
    return [d for d in yaml.safe_load_all("".join(out)) if d]


def test_helm_chart_parses_and_config_checks(tmp_path):
    docs = []
    for t in sorted(glob.glob(os.path.join(CHART, "templates", "*.yaml"))):
        docs += parse_template(t)
    kinds = {d["kind"]: d for d in docs}
    assert {"StatefulSet", "Deployment", "Service", "ConfigMap", "Secret",
            "PodDisruptionBudget", "HorizontalPodAutoscaler"} <= set(kinds)
    assert "volumeClaimTemplates" not in kinds["Deployment"]["spec"]
    c = kinds["StatefulSet"]["spec"]["template"]["spec"]["containers"][0]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["lifecycle"]["preStop"]["exec"]["command"]
    assert kinds["StatefulSet"]["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "spool"
    hpa = kinds["HorizontalPodAutoscaler"]["spec"]
    assert hpa["metrics"][0]["pods"]["metric"]["name"] == "petrel_queue_depth"
    adapter = yaml.safe_load(open(os.path.join(CONTRIB, "kubernetes", "prometheus-adapter.yaml")))
    assert adapter["rules"]["custom"][0]["name"]["as"] == "petrel_queue_depth"
    # the ConfigMap's petrel.lua with the chart's default values is a valid config
    values = yaml.safe_load(open(os.path.join(CHART, "values.yaml")))
    tpl = open(os.path.join(CHART, "templates", "configmap.yaml")).read()
    lua = tpl.split("petrel.lua: |\n", 1)[1]
    lua = re.sub(r"\{\{- if eq \.Values\.queueBackend \"redis\" \}\}.*?\{\{- else \}\}\n(.*?)"
                 r"\s*\{\{- end \}\}\n", r"\1\n", lua, flags=re.S)
    lua = re.sub(r"\{\{- range \.Values\.(\w+) \}\} \"\{\{ \. \}\}\", \{\{- end \}\}",
                 lambda m: " ".join(f'"{v}",' for v in values[m.group(1)]), lua)
    lua = re.sub(r"\{\{ \.Values\.(\w+) \}\}", lambda m: str(values[m.group(1)]), lua)
    lua = re.sub(r"\s*\{\{- \.Values\.extraConfig.*\}\}", "\n", lua)
    lua = "\n".join(l[4:] for l in lua.splitlines())
    assert "{{" not in lua, lua
    lua = lua.replace("/var/lib/petrel", str(tmp_path))
    cfg = tmp_path / "petrel.lua"
    cfg.write_text(lua)
    r = subprocess.run([PETREL_BIN, "--check", "-c", str(cfg)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr + lua


# ---------------------------------------------------------------- Grafana

PROMQL_WORDS = {"sum", "rate", "irate", "increase", "by", "without", "topk", "bottomk",
                "histogram_quantile", "clamp_min", "clamp_max", "time", "avg", "max", "min",
                "count", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
                "offset", "bool", "label_values", "vector", "abs"}


def metric_names(expr):
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)          # strings
    e = re.sub(r"\{[^}]*\}", "", e)                         # label matchers
    e = re.sub(r"\[[^\]]*\]", "", e)                        # ranges
    e = re.sub(r"\bby\s*\([^)]*\)", "", e)                  # grouping labels
    names = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", e))
    return {n for n in names if n not in PROMQL_WORDS and not re.fullmatch(r"e\d*", n)}


def dashboards():
    files = sorted(glob.glob(os.path.join(CONTRIB, "grafana", "*.json")))
    assert len(files) == 4, files
    out = {}
    for f in files:
        d = json.load(open(f))
        exprs = [t["expr"] for p in d["panels"] for t in p.get("targets", [])]
        out[os.path.basename(f)] = (d, exprs)
    return out


def test_grafana_expressions_use_exported_metrics(world):
    hport = free_port()
    world.mx_domain("gmail.com", "127.0.0.2")
    p = world.petrel(extra=f'petrel.start_http_listener {{ listen = "127.0.0.1:{hport}" }}')
    p.send_message("a@sender.test", ["b@gmail.com"])
    with urllib.request.urlopen(f"http://127.0.0.1:{hport}/metrics", timeout=10) as r:
        text = r.read().decode()
    exported = set(re.findall(r"^# TYPE (\S+) (\S+)", text, re.M))
    names = set()
    for n, typ in exported:
        names.add(n)
        if typ == "histogram":
            names |= {n + "_bucket", n + "_sum", n + "_count"}
    titles = set()
    for fname, (d, exprs) in dashboards().items():
        titles.add(d["title"])
        assert exprs, fname
        for e in exprs:
            unknown = metric_names(e) - names
            assert not unknown, f"{fname}: {e}: not exported by petrel: {unknown}"
    assert any("Delivery" in t for t in titles) and any("Queue" in t for t in titles)
    assert any("Infrastructure" in t for t in titles) and any("ISP" in t for t in titles)
