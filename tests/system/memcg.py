"""A private memory cgroup for a test or the scale benchmark: made as a child of this
process's own cgroup, on cgroup v2 (memory controller delegated) or on v1's memory
hierarchy, with the same few readings and settings on both. Stdlib only (bench/bench.py
imports it too).

    cg, why = memcg.make("petrel-test")     # (None, reason) when neither is usable
    argv = cg.wrap(["build/petrel", "-c", cfg])   # joins the cgroup, then execs
    cg.set_limit(2 * working); cg.oom_kills(); cg.remove()
"""

import os
import shlex
import time


class Cgroup:
    def __init__(self, path, v2):
        self.path, self.v2 = path, v2

    def _file(self, name):
        return os.path.join(self.path, name)

    def _read(self, name):
        with open(self._file(name)) as f:
            return f.read()

    def _write(self, name, value):
        with open(self._file(name), "w") as f:
            f.write(str(value))

    def procs(self):
        return self._read("cgroup.procs").split()

    def wrap(self, argv):
        """argv run inside the cgroup: a shell joins it, then execs argv (so the PID
        the caller sees is argv's own)."""
        return ["/bin/sh", "-c", f'echo $$ > {self._file("cgroup.procs")} || exit 98; exec "$@"',
                "memcg"] + list(argv)

    def write_wrapper(self, path, binary):
        """An executable script at path that runs binary inside the cgroup: for
        harnesses that take a program path rather than an argv prefix."""
        line = " ".join(shlex.quote(a) for a in self.wrap([binary]))
        with open(path, "w") as f:
            f.write(f'#!/bin/sh\nexec {line} "$@"\n')
        os.chmod(path, 0o755)

    def current(self):
        """bytes charged now (process memory and the page cache it caused)"""
        return int(self._read("memory.current" if self.v2 else "memory.usage_in_bytes"))

    def peak(self):
        """the highest charge seen, or None where the kernel does not keep it"""
        name = "memory.peak" if self.v2 else "memory.max_usage_in_bytes"
        if not os.path.exists(self._file(name)):
            return None
        return int(self._read(name))

    def set_limit(self, limit):
        """The hard limit, swap barred (v2: memory.swap.max 0; v1: memsw = mem). On v1
        the kernel refuses (EBUSY) a limit it cannot reclaim down to at once; retried
        for a few seconds while page cache is written back."""
        if self.v2:
            self._write("memory.max", limit)
            if os.path.exists(self._file("memory.swap.max")):
                self._write("memory.swap.max", 0)
            return
        for attempt in range(50):
            try:
                self._write("memory.limit_in_bytes", limit)
                break
            except OSError:
                if attempt == 49:
                    raise
                time.sleep(0.1)
        if os.path.exists(self._file("memory.memsw.limit_in_bytes")):
            self._write("memory.memsw.limit_in_bytes", limit)

    def oom_kills(self):
        """processes the kernel OOM-killed in this cgroup so far"""
        text = self._read("memory.events" if self.v2 else "memory.oom_control")
        return {k: int(v) for k, v in (line.split() for line in text.splitlines())}.get(
            "oom_kill", 0)

    def remove(self):
        """rmdir once its processes have gone (waits up to 5 s)"""
        for _ in range(50):
            try:
                os.rmdir(self.path)
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.1)


def _own_dir(mnt, controller):
    """this process's cgroup directory under mount mnt (controller "" for v2's 0:: line)"""
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, names, rel = line.rstrip("\n").split(":", 2)
            if (controller == "" and names == "") or (controller and controller in names.split(",")):
                return os.path.join(mnt, rel.lstrip("/"))
    return mnt


def _parent():
    """(directory, is_v2, None) where a child with a memory limit can be made, or
    (None, None, why not)"""
    v2 = v1 = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            pre, _, post = line.partition(" - ")
            fs = post.split()
            if fs[:1] == ["cgroup2"] and v2 is None:
                v2 = pre.split()[4]
            elif fs[:1] == ["cgroup"] and len(fs) > 2 and "memory" in fs[2].split(","):
                v1 = pre.split()[4]
    whys = []
    if v2 is not None:
        parent = _own_dir(v2, "")
        try:
            with open(os.path.join(parent, "cgroup.subtree_control")) as f:
                if "memory" in f.read().split():
                    return parent, True, None
            whys.append(f"the memory controller is not delegated to children of {parent}")
        except OSError as e:
            whys.append(f"cgroup v2 {parent} is not readable: {e}")
    if v1 is not None:
        parent = _own_dir(v1, "memory")
        if os.access(parent, os.W_OK):
            return parent, False, None
        whys.append(f"the cgroup v1 memory directory {parent} is not writable")
    if not whys:
        whys.append("no cgroup filesystem with the memory controller is mounted")
    return None, None, "; ".join(whys)


def make(prefix):
    """(Cgroup, None) for a new child cgroup named prefix-PID-NS, or (None, why not)."""
    parent, v2, why = _parent()
    if parent is None:
        return None, why
    path = os.path.join(parent, f"{prefix}-{os.getpid()}-{time.monotonic_ns()}")
    try:
        os.mkdir(path)
    except OSError as e:
        return None, f"cannot make a cgroup under {parent}: {e}"
    limit_file = "memory.max" if v2 else "memory.limit_in_bytes"
    if not os.path.exists(os.path.join(path, limit_file)):
        os.rmdir(path)
        return None, f"{path} has no {limit_file}"
    return Cgroup(path, v2), None
