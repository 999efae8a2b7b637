"""sign_dkim from a hook loads a key that is not cached yet off the SMTP event
loop (issue 9, "nothing slow on an event loop"): while one session waits for its
key (a FIFO that is written only seconds later), another session on the same
listener and the same (only) SMTP thread is greeted and answered at once; the
first message then leaves signed (checked by python3-dkim). A client that leaves
while its key loads costs nothing; a bad key is still 451, never an unsigned send.
"""

import base64
import os
import subprocess
import threading
import time

import dkim

from harness import make_message, msgid_of, wait_for

KEY_DELAY = 3.0


def genkey(path):
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                    "rsa_keygen_bits:2048", "-out", str(path)], check=True, capture_output=True)
    der = subprocess.run(["openssl", "pkey", "-in", str(path), "-pubout", "-outform", "DER"],
                         check=True, capture_output=True).stdout
    return b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)


def hook(key_file):
    return (f'petrel.configure_process {{ smtp_threads = 1 }}\n'
            f'petrel.on("smtp_message_received", function(domain, meta)\n'
            f'  kumo.sign_dkim("sender.test", "s1", "{key_file}")\n'
            f'end)\n')


def fifo_writer(fifo, pem, delay, done):
    """Writes the key into the FIFO after delay seconds (petrel's open blocks until
    then); done is set once the key is written."""
    def run():
        time.sleep(delay)
        with open(fifo, "wb") as f:
            f.write(pem)
        done.set()
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def data_no_wait(c, data):
    """MAIL, RCPT, DATA and the message over a RawSMTP; the final reply is not read."""
    assert c.cmd("EHLO client.test")[0] == 250
    assert c.cmd("MAIL FROM:<alice@sender.test>")[0] == 250
    assert c.cmd("RCPT TO:<bob@dest.test>")[0] == 250
    assert c.cmd("DATA")[0] == 354
    c.send(data + b".\r\n")


def test_key_load_is_off_the_event_loop_and_the_message_leaves_signed(world, tmp_path):
    dest = world.mx_domain("dest.test", "127.0.0.2")
    keyfile = tmp_path / "s1.pem"
    txt = genkey(keyfile)
    pem = keyfile.read_bytes()
    fifo = tmp_path / "s1.fifo"
    os.mkfifo(fifo)
    p = world.petrel(extra=hook(fifo))
    assert "smtp_threads = 1" in open(p.cfg_path).read()   # both sessions share one loop
    done = threading.Event()
    data = make_message(sender="alice@sender.test", to=["bob@dest.test"], subject="signed")
    c1 = p.raw()
    writer = None
    try:
        data_no_wait(c1, data)
        writer = fifo_writer(fifo, pem, KEY_DELAY, done)
        time.sleep(0.5)            # petrel is now blocked in open() of the FIFO
        t0 = time.monotonic()
        c2 = p.raw(timeout=5)      # the 220 greeting
        try:
            code, _ = c2.cmd("NOOP", timeout=5)
            took = time.monotonic() - t0
            assert code == 250
            assert not done.is_set(), "the key was written before the second session ran"
            assert took < 1.0, f"greeting + NOOP took {took:.2f} s while a key was loading"
        finally:
            c2.close()
        code, text = c1.reply(timeout=30)
        assert done.is_set()
        assert code == 250, (code, text)
        c1.cmd("QUIT")
    finally:
        c1.close()
        if writer:
            writer.join(10)
    got = dest.wait_message(msgid_of(data)).data
    sigs = [x for x in got.split(b"\r\n") if x.lower().startswith(b"dkim-signature:")]
    assert len(sigs) == 1, got[:800]

    def dnsfunc(name, timeout=5):
        return txt if name.rstrip(b".") == b"s1._domainkey.sender.test" else None
    assert dkim.DKIM(got).verify(dnsfunc=dnsfunc), got[:800]


def test_client_leaving_while_its_key_loads_is_harmless(world, tmp_path):
    dest = world.mx_domain("dest.test", "127.0.0.2")
    keyfile = tmp_path / "s1.pem"
    genkey(keyfile)
    fifo = tmp_path / "s1.fifo"
    os.mkfifo(fifo)
    p = world.petrel(extra=hook(fifo))
    done = threading.Event()
    gone = make_message(sender="alice@sender.test", to=["bob@dest.test"], subject="gone")
    c1 = p.raw()
    data_no_wait(c1, gone)
    writer = fifo_writer(fifo, keyfile.read_bytes(), 1.5, done)
    time.sleep(0.5)
    c1.close()                     # leaves while the key loads
    writer.join(10)
    assert done.is_set()
    time.sleep(0.5)
    ok = make_message(sender="alice@sender.test", to=["bob@dest.test"], subject="after")
    p.send("alice@sender.test", ["bob@dest.test"], ok)   # the key is cached now
    dest.wait_message(msgid_of(ok))
    time.sleep(0.5)
    assert [m.header("Subject") for m in dest.messages()] == ["after"]
    assert p.proc.poll() is None


def test_a_bad_key_loaded_lazily_is_451_never_unsigned(world, tmp_path):
    dest = world.mx_domain("dest.test", "127.0.0.2")
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    p = world.petrel(extra=hook(bad))
    c = p.raw()
    try:
        data_no_wait(c, make_message(sender="alice@sender.test", to=["bob@dest.test"]))
        code, text = c.reply(timeout=30)
        assert code == 451 and text.startswith("4.3.0"), (code, text)
        assert c.cmd("NOOP")[0] == 250      # the session goes on
    finally:
        c.close()
    def lines():
        return [x for x in p.stderr_text().splitlines()
                if "smtp_message_received hook failed" in x]
    wait_for(lines, 10)
    line = lines()[-1]
    assert "sign_dkim(sender.test, s1)" in line and str(bad) in line, line
    time.sleep(0.5)
    assert dest.messages() == []


def test_bdat_last_waits_for_the_key_and_leaves_signed(world, tmp_path):
    dest = world.mx_domain("dest.test", "127.0.0.2")
    keyfile = tmp_path / "s1.pem"
    txt = genkey(keyfile)
    p = world.petrel(extra=hook(keyfile))
    data = make_message(sender="alice@sender.test", to=["bob@dest.test"], subject="bdat")
    c = p.raw()
    try:
        assert c.cmd("EHLO client.test")[0] == 250
        assert c.cmd("MAIL FROM:<alice@sender.test>")[0] == 250
        assert c.cmd("RCPT TO:<bob@dest.test>")[0] == 250
        c.send(b"BDAT %d LAST\r\n" % len(data) + data)
        code, text = c.reply(timeout=30)
        assert code == 250, (code, text)
        assert c.cmd("NOOP")[0] == 250
    finally:
        c.close()
    got = dest.wait_message(msgid_of(data)).data

    def dnsfunc(name, timeout=5):
        return txt if name.rstrip(b".") == b"s1._domainkey.sender.test" else None
    assert dkim.DKIM(got).verify(dnsfunc=dnsfunc), got[:800]
