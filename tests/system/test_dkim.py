"""DKIM signing (configure_dkim_signing, DESIGN §4): mail whose From: domain is a
configured domain or below it leaves signed; the signatures are checked at the sink
by an independent verifier (Debian's python3-dkim) against the public keys; two keys
for one domain sign twice (RSA and Ed25519); signing happens after hook header edits;
other domains go out unsigned; a bad key is a startup error naming the file.
"""

import base64
import os
import subprocess
import time

import dkim
import pytest

from harness import Lua, make_message, msgid_of, wait_for


def genkey(path, kind):
    args = (["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"] if kind == "rsa"
            else ["-algorithm", "ED25519"])
    subprocess.run(["openssl", "genpkey", *args, "-out", path], check=True,
                   capture_output=True)
    der = subprocess.run(["openssl", "pkey", "-in", path, "-pubout", "-outform", "DER"],
                         check=True, capture_output=True).stdout
    if kind == "rsa":
        return b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)
    return b"v=DKIM1; k=ed25519; p=" + base64.b64encode(der[-32:])  # raw key (RFC 8463)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("dkim")
    rsa, ed = str(d / "rsa.pem"), str(d / "ed.pem")
    return {"rsa": rsa, "ed": ed,
            "dns": {b"s1._domainkey.sender.test.": genkey(rsa, "rsa"),
                    b"s2._domainkey.sender.test.": genkey(ed, "ed")}}


def signing_config(keys):
    return Lua(f'''
petrel.configure_dkim_signing {{ domain = "sender.test", selector = "s1",
  key_file = "{keys["rsa"]}" }}
petrel.configure_dkim_signing {{ domain = "sender.test", selector = "s2",
  key_file = "{keys["ed"]}", algorithm = "ed25519-sha256",
  headers = {{ "From", "To", "Subject", "Date", "Message-ID", "X-Added" }} }}
petrel.on("smtp_message_received", function(domain, meta)
  petrel.add_header("X-Added", "by a hook")
end)
''')


def verify_all(data, keys):
    def dnsfunc(name, timeout=5):
        return keys["dns"].get(name if name.endswith(b".") else name + b".")
    def one(i):
        try:
            return dkim.DKIM(data).verify(idx=i, dnsfunc=dnsfunc)
        except dkim.ValidationError:   # e.g. "body hash mismatch"
            return False
    sigs = [l for l in data.split(b"\r\n") if l.lower().startswith(b"dkim-signature:")]
    return [one(i) for i in range(len(sigs))], sigs


def test_signed_rsa_and_ed25519_verify_at_the_sink(world, keys):
    dest = world.mx_domain("dest.test", "127.0.0.2")
    world.mx_domain("sender.test", "127.0.0.3")
    p = world.petrel(extra=signing_config(keys))
    body = "Line one  with  spaces \r\n\r\ntrailing blank lines follow\r\n\r\n\r\n"
    for sender in ("alice@sender.test", "bob@mail.sender.test"):
        data = make_message(sender=sender, to=["u@dest.test"], subject="signed", body=body)
        p.send(sender, ["u@dest.test"], data)
        got = dest.wait_message(msgid_of(data)).data
        assert b"X-Added: by a hook" in got
        ok, sigs = verify_all(got, keys)
        assert len(sigs) == 2 and ok == [True, True], (ok, sigs)
        assert b"a=rsa-sha256" in got and b"a=ed25519-sha256" in got
        assert b"d=sender.test" in got
        # the check can fail: a changed body does not verify
        tampered = got.replace(b"Line one", b"Line 0ne")
        assert verify_all(tampered, keys)[0] == [False, False]


def test_other_domains_go_out_unsigned(world, keys):
    dest = world.mx_domain("dest.test", "127.0.0.2")
    world.mx_domain("elsewhere.test", "127.0.0.3")
    p = world.petrel(extra=signing_config(keys))
    for sender in ("carol@elsewhere.test", "dave@notsender.test"):
        data = make_message(sender=sender, to=["u@dest.test"])
        p.send(sender, ["u@dest.test"], data)
        got = dest.wait_message(msgid_of(data)).data
        assert b"dkim-signature" not in got.lower(), got[:400]


def test_bad_key_is_a_startup_error(world, keys, tmp_path):
    """A key that cannot be read, or an Ed25519 key where RSA is configured."""
    for key_file, name in ((f"{tmp_path}/missing.pem", "missing.pem"), (keys["ed"], "ed.pem")):
        p = world.petrel(start=False, extra=Lua(
            'petrel.configure_dkim_signing { domain = "sender.test", selector = "s", '
            f'key_file = "{key_file}" }}'))
        p.start(wait=False)
        assert p.proc.wait(10) != 0
        p.expected_exit = True
        assert name in p.stderr_text(), p.stderr_text()


def test_sign_dkim_hook_signs_per_message_and_defers_when_the_key_goes(world, keys, tmp_path):
    """sign_dkim(domain, selector, key_file) from a hook: that message leaves signed
    with that key (no configure_dkim_signing at all), only the messages the hook chose;
    a key file gone at delivery time defers the message, never sends it unsigned."""
    from test_http import http_petrel
    from test_http_inject import post
    dest = world.mx_domain("dest.test", "127.0.0.2")
    world.mx_domain("sender.test", "127.0.0.3")
    moving = tmp_path / "moving.pem"
    moving.write_bytes(open(keys["rsa"], "rb").read())
    p, (url,) = http_petrel(world, extra=Lua(f'''
petrel.on("smtp_message_received", function(domain, meta)
  if meta.headers.Subject == "sign me" then
    petrel.sign_dkim("sender.test", "s1", "{keys["rsa"]}")
  elseif meta.headers.Subject == "moving key" then
    petrel.sign_dkim("sender.test", "s1", "{moving}")
  end
end)
'''), queue={"retry_interval": "1s", "max_retry_interval": "1s"})
    signed = make_message(sender="alice@sender.test", to=["u@dest.test"], subject="sign me")
    plain = make_message(sender="alice@sender.test", to=["u@dest.test"], subject="leave me")
    p.send("alice@sender.test", ["u@dest.test"], signed)
    p.send("alice@sender.test", ["u@dest.test"], plain)
    got = dest.wait_message(msgid_of(signed)).data
    ok, sigs = verify_all(got, keys)
    assert len(sigs) == 1 and ok == [True], (ok, sigs)
    assert b"s=s1" in got and b"d=sender.test" in got
    assert b"dkim-signature" not in dest.wait_message(msgid_of(plain)).data.lower()
    # held by a suspension while the key disappears; a restart empties the key cache
    assert post(url, "/api/queue/suspend", {"domain": "dest.test", "duration": "10m"}).status == 200
    moving_msg = make_message(sender="alice@sender.test", to=["u@dest.test"], subject="moving key")
    p.send("alice@sender.test", ["u@dest.test"], moving_msg)
    p.stop()
    moving.unlink()
    p.start()
    assert post(url, "/api/queue/resume", {"domain": "dest.test"}).status == 200
    wait_for(lambda: "sign_dkim (sender.test, selector s1)" in p.stderr_text(), 30,
             "the deferral for the missing key")
    time.sleep(1)
    assert not dest.find(msgid_of(moving_msg))
    moving.write_bytes(open(keys["rsa"], "rb").read())
    got = dest.wait_message(msgid_of(moving_msg), timeout=30).data
    assert verify_all(got, keys)[0] == [True]
