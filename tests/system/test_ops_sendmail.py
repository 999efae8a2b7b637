"""build/petrel-sendmail (DESIGN §11) fed the way cron, PHP's mail() and git
send-email call sendmail(8), against a real petrel delivering to sinks: exit 0 only
on 250, 75 when petrel is down or answers 4xx, another non-zero code plus the
relay's text on 5xx."""

import os
import subprocess
import uuid

from harness import REPO, free_port, wait_for

SENDMAIL = os.path.abspath(os.path.join(REPO, os.environ.get("PETREL_SENDMAIL_BIN",
                                                             "build/petrel-sendmail")))


def sendmail(p, args, stdin, port=None):
    env = dict(os.environ, PETREL_SMTP=f"127.0.0.1:{port or p.port}")
    r = subprocess.run([SENDMAIL, *args], input=stdin, capture_output=True, env=env,
                       timeout=30)
    return r.returncode, r.stderr.decode()


def mid():
    return f"<{uuid.uuid4().hex}@app.test>"


def test_php_mail_t_i(world):
    p, dest, _ = world.basic()
    m = mid()
    # what PHP's mail() pipes into "sendmail -t -i"
    msg = (f"To: Bob <bob@dest.test>, carol@dest.test\nCc: \"Dave, D.\" <dave@dest.test>\n"
           f"Bcc: eve@dest.test\nSubject: order 42\nMessage-ID: {m}\n"
           f"X-PHP-Originating-Script: 1000:shop.php\n\nThanks for your order.\n.\nline after a dot\n")
    rc, err = sendmail(p, ["-t", "-i", "-f", "shop@sender.test"], msg.encode())
    assert rc == 0, err
    t = dest.wait_message(m)
    assert sorted(t.rcpt_tos) == ["bob@dest.test", "carol@dest.test", "dave@dest.test",
                                  "eve@dest.test"]
    assert t.mail_from == "shop@sender.test"
    assert t.header("Bcc") is None
    assert b"\r\n.\r\nline after a dot\r\n" in t.data          # -i: the dot line is data
    assert t.header("Date") and t.header("From") == "<shop@sender.test>"


def test_cron_style(world):
    p, dest, _ = world.basic()
    # Debian cron: sendmail -FCronDaemon -i -B8BITMIME -oem root-like address
    msg = ("From: root (Cron Daemon)\nTo: bob@dest.test\nSubject: Cron <root@host> job\n"
           "Content-Type: text/plain; charset=UTF-8\n\ndone: 3 files\n")
    rc, err = sendmail(p, ["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "bob@dest.test"],
                       msg.encode())
    assert rc == 0, err
    t = wait_for(lambda: next((x for x in dest.messages() if b"done: 3 files" in x.data), None),
                 15, "cron mail")
    assert t.rcpt_tos == ["bob@dest.test"]
    assert t.header("Message-ID")                              # added for the application


def test_body_only_and_fullname(world):
    p, dest, _ = world.basic()
    rc, err = sendmail(p, ["-F", "Backup Job", "-f", "backup@sender.test", "--", "bob@dest.test"],
                       b"backup finished\nno errors\n")
    assert rc == 0, err
    t = wait_for(lambda: next((x for x in dest.messages() if b"backup finished" in x.data), None),
                 15, "body-only mail")
    assert t.header("From") == '"Backup Job" <backup@sender.test>'
    assert t.header("Date") and t.header("Message-ID")
    assert t.data.split(b"\r\n\r\n", 1)[1].startswith(b"backup finished\r\nno errors")
    # -F is often fed from application data: no header injection, quotes escaped
    rc, err = sendmail(p, ["-F", 'Eve "x"\nBcc: victim@dest.test', "-f", "e@sender.test",
                           "bob@dest.test"], b"injected?\n")
    assert rc == 0, err
    t = wait_for(lambda: next((x for x in dest.messages() if b"injected?" in x.data), None),
                 15, "the -F message")
    assert t.header("Bcc") is None and t.rcpt_tos == ["bob@dest.test"]
    assert t.header("From") == '"Eve \\"x\\"Bcc: victim@dest.test" <e@sender.test>'


def test_git_send_email_style_and_dot_end(world):
    p, dest, _ = world.basic()
    m = mid()
    # git send-email: sendmail -i -f FROM RCPT... with the patch on stdin
    patch = (f"From: Dev <dev@sender.test>\nTo: bob@dest.test\nSubject: [PATCH] fix\n"
             f"Message-ID: {m}\n\n---\n.hidden | 1 +\n..\n")
    rc, err = sendmail(p, ["-i", "-f", "dev@sender.test", "bob@dest.test", "carol@dest.test"],
                       patch.encode())
    assert rc == 0, err
    t = dest.wait_message(m)
    assert sorted(t.rcpt_tos) == ["bob@dest.test", "carol@dest.test"]
    assert t.data.endswith(b".hidden | 1 +\r\n..\r\n")
    # without -i a lone dot ends the message: what follows is not sent
    m2 = mid()
    rc, err = sendmail(p, ["bob@dest.test"],
                       f"Subject: dot\nMessage-ID: {m2}\n\nkept\n.\nnot sent\n".encode())
    assert rc == 0, err
    t = dest.wait_message(m2)
    assert b"kept" in t.data and b"not sent" not in t.data
    wait_for(lambda: len(p.records("Reception")) >= 3, 10, "3 receptions")


def test_down_4xx_5xx_exit_codes(world):
    p, dest, _ = world.basic(transport={
        "later.test": "error:451 4.3.0 try again later",
        "never.test": "error:550 5.1.1 no such domain here",
    })
    down = free_port()
    rc, err = sendmail(p, ["bob@dest.test"], b"Subject: x\n\nx\n", port=down)
    assert rc == 75, err
    assert "cannot connect" in err and "message not sent" in err
    rc, err = sendmail(p, ["bob@dest.test", "x@later.test"], b"Subject: x\n\nx\n")
    assert rc == 75, err
    assert "451 4.3.0 try again later" in err
    rc, err = sendmail(p, ["x@never.test"], b"Subject: x\n\nx\n")
    assert rc not in (0, 75), err
    assert "550 5.1.1 no such domain here" in err
    rc, err = sendmail(p, [], b"Subject: x\n\nx\n")
    assert rc == 64 and "no recipients" in err
    rc, err = sendmail(p, ["-X"], b"")
    assert rc == 64 and "usage" in err
    assert p.records("Reception") == []                       # nothing was taken


def test_bs_smtp_on_stdin(world):
    p, dest, _ = world.basic()
    m = mid()
    script = ("EHLO app.test\r\nMAIL FROM:<a@sender.test>\r\nRCPT TO:<bob@dest.test>\r\nDATA\r\n"
              f"Subject: bs\r\nMessage-ID: {m}\r\n\r\nvia -bs\r\n.\r\nQUIT\r\n")
    env = dict(os.environ, PETREL_SMTP=f"127.0.0.1:{p.port}")
    r = subprocess.run([SENDMAIL, "-bs"], input=script.encode(), capture_output=True, env=env,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    assert b"250 2.0.0 Ok: queued as" in r.stdout and r.stdout.rstrip().endswith(b"closing connection")
    dest.wait_message(m)
