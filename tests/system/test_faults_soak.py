"""The short soak (tests/soak/soak.py; `make soak DURATION=1h` runs the long one): one
minute of the mixed load (2 KB / 100 KB, 1-100 recipients, STARTTLS on a third of the
connections, 5% 451 and 1% 550 at the next hop), sampled every 10 s. petrel stays up,
every acknowledged message arrives (or was bounced by a 550), and fds and threads
stay flat.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "soak"))

import soak  # noqa: E402


def test_soak_short(tmp_path):
    lines = []
    s = soak.run(duration=60, rate=10, interval=10, out_dir=str(tmp_path / "soak"),
                 out=lines.append)
    report = "\n".join(lines)
    assert s["petrel_died"] is None, report
    assert s["acknowledged"] >= 300, report        # the rate was held (10/s for 60 s)
    assert s["ok"], report
    assert s["fds"]["max"] - s["fds"]["min"] <= 20, report
    assert s["threads"]["max"] == s["threads"]["min"], report
    assert os.path.getsize(tmp_path / "soak" / "soak.png") > 1000
