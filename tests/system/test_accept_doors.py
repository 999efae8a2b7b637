"""One set of acceptance rules for both doors (policy/accept.c): a recipient routed to
"error:" is refused the same way over SMTP (at RCPT) and HTTP (rejected), and a spool
that went read-only on a full disk refuses new mail at both (SMTP 452 4.3.1 at MAIL,
HTTP 503 + Retry-After) while petrel stays up."""

import os

import pytest

from test_faults_disk import fill, small_fs, try_send  # noqa: F401 (fixture)
from test_http import assert_json_error, http_petrel
from test_http_inject import post

ROUTES = {"blocked.example": "error:550 5.1.1 local delivery disabled"}


def test_error_route_refused_alike_at_both_doors(world):
    world.mx_domain("dest.test", "127.0.0.2")
    p, (url,) = http_petrel(world, transport=ROUTES)
    s = p.smtp()
    try:
        s.mail("alice@sender.test")
        code, msg = s.rcpt("bob@blocked.example")
        assert (code, msg) == (550, b"5.1.1 local delivery disabled"), (code, msg)
    finally:
        s.quit()
    r = post(url, "/v1/message", {"from": "alice@sender.test",
                                  "to": ["bob@blocked.example", "carol@dest.test"],
                                  "subject": "s", "text": "t"})
    assert r.json()["rejected"] == ["bob@blocked.example"] and r.json()["accepted"] == 1, r.json()
    r = post(url, "/api/inject/v1", {"envelope_sender": "alice@sender.test",
                                     "content": "Subject: x\r\n\r\nx\r\n",
                                     "recipients": [{"email": "bob@blocked.example"}]})
    assert r.json()["failed_recipients"] == ["bob@blocked.example"], r.json()
    assert r.json()["errors"] == ["bob@blocked.example: 550 5.1.1 local delivery disabled"]


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_full_disk_refused_at_both_doors(world, small_fs):  # noqa: F811
    world.mx_domain("dest.test", "127.0.0.2", sink=False)
    p, (url,) = http_petrel(world, queue={"spool_dir": os.path.join(small_fs, "spool")})
    assert try_send(p, "first@dest.test")[0] == 250
    fill(small_fs)
    codes = [try_send(p, f"full{i}@dest.test")[0] for i in range(3)]
    assert codes[-1] == 452, codes           # read-only now: refused at MAIL
    r = post(url, "/v1/message", {"from": "alice@sender.test", "to": ["b@dest.test"],
                                  "subject": "s", "text": "t"})
    err = assert_json_error(r, 503)
    assert "spool disk full" in err and r.header("Retry-After") == "60", (err, r)
    p.assert_alive()
