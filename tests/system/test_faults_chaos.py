"""The short chaos run (tests/chaos/chaos.py, `make chaos` runs the long one): mail
over SMTP and HTTP while petrel is SIGKILLed 5 times and SIGTERMed once, the next hop
refusing, dropping mid-DATA and answering 4xx at random. Every acknowledged message
arrives at least once and the spool ends empty.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "chaos"))

import chaos  # noqa: E402


def test_chaos_short(tmp_path):
    lines = []
    s = chaos.run(kills=5, terms=1, seed=20261205, workdir=str(tmp_path / "chaos"),
                  out=lines.append)
    chaos.print_summary(s, out=lines.append)
    report = "\n".join(lines)
    assert s["acknowledged"] > 0, report
    assert s["lost"] == 0, report
    assert s["spool_entries_left"] == 0, report
    assert not s["crashes"], report
    assert s["ok"], report
