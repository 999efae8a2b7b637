"""Property tests for the operator tools' parsers (STYLE: every parser gets a fuzz
target or a property test): `petrelctl report` over random and truncated log lines,
and `petrel-sendmail -t` over random messages, never crash or hang, and answer with
their documented exit codes."""

import json
import os
import random
import subprocess

from harness import PETRELCTL_BIN, REPO, free_port

SENDMAIL = os.path.join(REPO, os.environ.get("PETREL_SENDMAIL_BIN", "build/petrel-sendmail"))
SEED = int(os.environ.get("PETREL_PROPERTY_SEED", "1405"))


def random_line(rng):
    rec = {"type": rng.choice(["Reception", "Delivery", "Bounce", "TransientFailure",
                               "Expiration", "Rejection", "AuthFailure", 7, None]),
           "timestamp": rng.choice(["2026-12-05T08:00:00.000Z", "2026-12-05T08:00:00+02:00",
                                    "2026-13-45T99:99:99Z", "", None, 12,
                                    "2026-12-05T08:00:00.123456789-11:30"]),
           "sender": rng.choice(["a@b", "", None, "\u00e9@x", "x" * 3000]),
           "queue": rng.choice(["d.test", None, "", "q" * 500]),
           "response": rng.choice(["550 no", None, "\t" * 10]),
           "delay": rng.choice([0.5, -1, None, "x", 1e308])}
    line = json.dumps(rec)
    mode = rng.random()
    if mode < 0.2:
        line = line[:rng.randrange(len(line) + 1)]
    elif mode < 0.3:
        line = bytes(rng.randrange(256) for _ in range(rng.randrange(200))).decode("latin-1")
    return line


def test_report_never_crashes_on_random_logs(tmp_path):
    rng = random.Random(SEED)
    for i in range(30):
        lines = [random_line(rng) for _ in range(rng.randrange(1, 60))]
        log = tmp_path / f"log{i}.jsonl"
        log.write_bytes("\n".join(lines).encode("utf-8", "surrogateescape"))
        for args in (["--json"], [], ["--json", "--since", "1h"]):
            r = subprocess.run([PETRELCTL_BIN, "report", *args, str(log)], capture_output=True,
                               timeout=30)
            assert r.returncode == 0, (i, args, r.stderr)
            if "--json" in args:
                doc = json.loads(r.stdout)
                assert all(doc[k] >= 0 for k in ("received", "delivered", "bounced", "expired",
                                                 "deferred", "rejected"))


def test_sendmail_never_crashes_on_random_messages(world, tmp_path):
    rng = random.Random(SEED)
    p, dest, _ = world.basic()
    down = free_port()
    for i in range(25):
        head = []
        for _ in range(rng.randrange(0, 8)):
            name = rng.choice(["To", "Cc", "Bcc", "From", "Subject", "X-A", "to", "BCC", ""])
            val = rng.choice(["bob@dest.test", '"x, y" <carol@dest.test>, dave@dest.test',
                              "(comment) <eve@dest.test>", "group: a@dest.test;", "<>", "",
                              "<unterminated@dest.test", "x" * 700, "a@dest.test\n\tb@dest.test"])
            head.append(f"{name}: {val}")
        body = "".join(rng.choice(["line\n", ".\n", "..\n", "\r\n", "x" * 1200 + "\n", "\0\n"])
                       for _ in range(rng.randrange(0, 10)))
        msg = ("\n".join(head) + "\n\n" + body).encode()
        for port in (p.port, down):
            env = dict(os.environ, PETREL_SMTP=f"127.0.0.1:{port}")
            r = subprocess.run([SENDMAIL, "-t", "-i", "-f", "a@sender.test"], input=msg,
                               capture_output=True, timeout=60, env=env)
            assert r.returncode in (0, 64, 65, 67, 69, 75), (i, r.returncode, r.stderr)
            if port == down:
                assert r.returncode in (64, 65, 75), r.stderr
            if r.returncode == 0:
                assert not r.stderr
    p.assert_alive()
