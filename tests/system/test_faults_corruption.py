"""Spool corruption (issue 10, "Crash and restart"): a torn WAL tail (power loss) is
recovered silently, as it can only hold unacknowledged writes; damage inside the WAL
makes petrel refuse to start with a clear message and the recovery setting rather
than say ready with a silently half-read queue; a spool from a newer petrel format is
refused by name. A damaged table file (.sst) never yields a queue silently cut at
the damage either: petrel starts with every entry or refuses with the repair setting,
which keeps every readable table.
"""

import glob
import os
import re
import shutil

import pytest

from harness import HarnessError


def newest_wal(spool):
    logs = sorted(glob.glob(os.path.join(spool, "*.log")), key=os.path.getmtime)
    assert logs, os.listdir(spool)
    return logs[-1]


def queue_some(world, n=20):
    world.mx_domain("dest.test", "127.0.0.2", sink=False)
    p = world.petrel()
    mids = [p.send_message("alice@sender.test", [f"r{i}@dest.test"], body="x" * 900 + "\r\n" + "y" * 900 + "\r\n")
            for i in range(n)]
    p.kill()
    return p, mids


def recovered(p):
    m = re.findall(r"recovered (\d+) queued entries", p.stderr_text())
    return int(m[-1]) if m else None


def start_recovering(p, mode):
    """Starts petrel (after a refused start) with PETREL_SPOOL_RECOVERY=mode."""
    p.proc = None
    os.environ["PETREL_SPOOL_RECOVERY"] = mode
    try:
        p.start()
    finally:
        del os.environ["PETREL_SPOOL_RECOVERY"]


def damage(path, offset, pattern):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(pattern)


def test_torn_wal_tail_recovers(world):
    p, mids = queue_some(world)
    wal = newest_wal(p.spool_dir)
    size = os.path.getsize(wal)
    with open(wal, "r+b") as f:
        f.truncate(size - 700)               # the last record cut short, as by power loss
    p.start()
    n = recovered(p)
    assert n is not None and len(mids) - 2 <= n < len(mids), (n, p.stderr_tail(20))
    sink = world.sink("127.0.0.2")
    sink.wait_count(n, 30)
    p.assert_alive()


def test_damaged_wal_refuses_to_start_with_the_remedy(world):
    p, mids = queue_some(world)
    wal = newest_wal(p.spool_dir)
    size = os.path.getsize(wal)
    damage(wal, size // 3, b"\xde\xad\xbe\xef" * 64)   # in the middle: later records intact
    with pytest.raises(HarnessError):
        p.start()
    p.expected_exit = True                   # refusing to start is the point
    err = p.stderr_text()
    assert "PETREL_SPOOL_RECOVERY" in err, err[-2000:]
    assert "orruption" in err, err[-2000:]
    # The remedy named in the message works: start with what can be read.
    start_recovering(p, "skip-corrupted")
    n = recovered(p)
    assert n is not None and 0 < n < len(mids), n
    assert "recovering with skip-corrupted" in p.stderr_text()
    p.assert_alive()


def test_newer_spool_format_refused(world):
    p = world.petrel()
    p.stop()
    with open(os.path.join(p.spool_dir, "PETREL_SPOOL_FORMAT"), "w") as f:
        f.write("99\n")
    with pytest.raises(HarnessError):
        p.start()
    p.expected_exit = True
    err = p.stderr_text()
    assert re.search(r"format 99.*newer", err), err[-2000:]


def this_start(p):
    """The stderr of the latest start only."""
    return p.stderr_text().rsplit("===== start #", 1)[-1]


def flushed_batch(world, p, n, tag):
    """n messages (distinct, incompressible bodies) queued, then kill -9 and a start:
    RocksDB writes the replayed WAL to a new table file at open."""
    mids = [p.send_message("alice@sender.test", [f"{tag}{i}@dest.test"],
                           body=os.urandom(400).hex() + "\r\n" + os.urandom(400).hex() + "\r\n")
            for i in range(n)]
    p.kill()
    p.start()
    return mids


def test_damaged_table_never_a_silently_cut_queue(world):
    world.mx_domain("dest.test", "127.0.0.2", sink=False)
    p = world.petrel()
    first = flushed_batch(world, p, 15, "a")
    second = flushed_batch(world, p, 15, "b")
    total = len(first) + len(second)
    assert recovered(p) == total, this_start(p)[-2000:]
    p.stop()
    spool = p.spool_dir
    tables = sorted(glob.glob(os.path.join(spool, "*.sst")), key=os.path.getmtime)
    assert len(tables) >= 2, os.listdir(spool)
    newest = os.path.basename(tables[-1])
    pristine = spool + ".pristine"
    shutil.copytree(spool, pristine)

    # Damage the newest table at one offset after another: every start either reads
    # the whole queue or refuses with the remedy; never a ready petrel with a part.
    refused = started = 0
    refused_at = None
    size = os.path.getsize(os.path.join(pristine, newest))
    for off in range(0, size - 64, 1024):
        shutil.rmtree(spool)
        shutil.copytree(pristine, spool)
        damage(os.path.join(spool, newest), off, b"\xde\xad\xbe\xef" * 16)
        p.proc = None
        try:
            p.start()
        except HarnessError:
            p.expected_exit = True
            err = this_start(p)
            assert "PETREL_SPOOL_RECOVERY=repair" in err, (off, err[-2000:])
            assert "orruption" in err, (off, err[-2000:])
            refused += 1
            refused_at = refused_at if refused_at is not None else off
            continue
        n = recovered(p)
        assert n == total, (off, n, this_start(p)[-2000:])
        started += 1
        p.stop()
    assert refused, f"no damage in {size} bytes was noticed at start ({started} starts)"

    # The remedy named works: the damaged table goes to lost/, the rest is served.
    shutil.rmtree(spool)
    shutil.copytree(pristine, spool)
    damage(os.path.join(spool, newest), refused_at, b"\xde\xad\xbe\xef" * 16)
    start_recovering(p, "repair")
    err = this_start(p)
    assert "repairing" in err, err[-2000:]
    n = recovered(p)
    assert n is not None and len(first) <= n < total, (n, err[-2000:])
    assert os.listdir(os.path.join(spool, "lost")), "the damaged table was not kept aside"
    sink = world.sink("127.0.0.2")
    # the first batch's table is intact: all of it goes out (an entry of the second
    # batch whose content was in the damaged table is logged by id and dropped)
    sink.wait_count(len(first), 30)
    p.assert_alive()
