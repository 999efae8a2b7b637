#!/usr/bin/python3
"""make fuzz-long: each fuzz target for a budget of its own CPU time (user + system,
read from /proc), JOBS targets at a time, its corpus kept and grown in
tests/fuzz/corpus/<target>/. A target is stopped with SIGINT when it has used its
budget (libFuzzer then prints its final stats). A target that stops by itself has
found something (crash, leak, timeout): the tail of its log and its artifact are
printed, and the run exits 1 when all are done.

One line per target is appended to --record (TSV): target, CPU s, wall s, result,
start, commit, so a long run can be quoted in README.

Do not SIGSTOP a running fuzzer: libFuzzer measures a unit's time on the wall
clock, and a pause longer than -timeout is reported as a timeout."""
import argparse
import os
import signal
import subprocess
import sys
import time

TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """user + system CPU of the whole process (all its threads)"""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TCK


def interrupt(p):
    """Stops fuzzer p as libFuzzer expects (SIGINT: it prints its final stats and
    exits 72); killed if it has not gone within 2 minutes. Returns its exit code."""
    p.send_signal(signal.SIGINT)
    try:
        return p.wait(120)
    except subprocess.TimeoutExpired:
        p.kill()
        return p.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("targets", nargs="+", help="fuzz binaries (build/fuzz/fuzz_*)")
    ap.add_argument("--cpu-seconds", type=float, default=3600)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--corpus", default="tests/fuzz/corpus")
    ap.add_argument("--artifacts", default="build/fuzz")
    ap.add_argument("--timeout", type=int, default=30, help="libFuzzer -timeout per unit")
    ap.add_argument("--record", default="build/fuzz/fuzz-long.tsv")
    a = ap.parse_args()

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "-"
    os.makedirs(a.artifacts, exist_ok=True)
    todo = list(a.targets)
    running = {}   # name -> (Popen, log path, start time, start stamp, last cpu)
    failed = []

    def finish(name, result):
        p, logp, t0, stamp, used = running.pop(name)
        line = (f"{name}\t{used:.0f}\t{time.time() - t0:.0f}\t{result}\t{stamp}\t{commit}")
        with open(a.record, "a") as f:
            f.write(line + "\n")
        print(f"== {name}: {used:.0f} CPU s, {result} (log {logp})", flush=True)
        if result not in ("clean", "stopped"):
            failed.append(name)
            with open(logp, errors="replace") as f:
                print("".join(f.readlines()[-40:]), flush=True)

    # SIGINT or SIGTERM to the runner (the end of a session): every running target is
    # stopped as at the end of its budget and recorded as "stopped" with the CPU time
    # it used, which still counts toward its hour; nothing further starts.
    stop = []
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))

    while todo or running:
        if stop:
            todo.clear()
            for name in list(running):
                p = running[name][0]
                try:
                    running[name][4] = cpu_seconds(p.pid)
                except (OSError, IndexError, ValueError):
                    pass
                rc = interrupt(p)
                finish(name, "stopped" if rc in (0, 72, -signal.SIGINT) else f"exit {rc}")
            break
        while todo and len(running) < a.jobs:
            binary = todo.pop(0)
            name = os.path.basename(binary)
            corpus = os.path.join(a.corpus, name)
            os.makedirs(corpus, exist_ok=True)
            logp = f"{binary}.long.log"
            log = open(logp, "w")
            p = subprocess.Popen([binary, corpus, "-max_total_time=10000000",
                                  "-print_final_stats=1", f"-timeout={a.timeout}",
                                  f"-artifact_prefix={a.artifacts}/{name}-"],
                                 stdout=log, stderr=log)
            log.close()
            running[name] = [p, logp, time.time(), time.strftime("%Y-%m-%d %H:%M"), 0.0]
            print(f"== {name}: started ({a.cpu_seconds:.0f} CPU s, corpus {corpus})", flush=True)
        for name in list(running):
            entry = running[name]
            p = entry[0]
            if p.poll() is not None:
                # 72: libFuzzer's exit on a SIGINT from outside (a person stopping it)
                finish(name, "stopped" if p.returncode in (72, -signal.SIGINT)
                       else f"exit {p.returncode}" if p.returncode else "clean")
                continue
            try:
                entry[4] = cpu_seconds(p.pid)
            except (OSError, IndexError, ValueError):
                continue
            if entry[4] >= a.cpu_seconds:
                rc = interrupt(p)
                # libFuzzer exits 72 (or 0) after SIGINT; anything else it reported
                finish(name, "clean" if rc in (0, 72, -signal.SIGINT) else f"exit {rc}")
        time.sleep(2)
    if failed:
        print("FAILED: " + " ".join(failed), flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
