"""TLS close_notify on every orderly close (issue 9): after QUIT, and when petrel
hangs up with a 421, the client sees a close_notify before the TCP close, so
`openssl s_client` does not end with "unexpected eof" and Python's ssl reads a clean
end of stream instead of SSLEOFError.
"""

import os
import smtplib
import ssl
import subprocess

import pytest

from certs import PKI, listener_tls


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return PKI(tmp_path_factory.mktemp("pki"))


def s_client(port, ca_file, lines, starttls=True):
    args = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-crlf", "-ign_eof",
            "-nocommands", "-quiet", "-CAfile", ca_file]
    if starttls:
        args[2:2] = ["-starttls", "smtp"]
    return subprocess.run(args, input="".join(l + "\n" for l in lines).encode(),
                          capture_output=True, timeout=30)


@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "implicit"])
def test_quit_ends_with_close_notify_openssl(world, pki, implicit):
    p = world.petrel(listener={"tls": listener_tls(pki, implicit=implicit)})
    r = s_client(p.port, pki.ca_file, ["EHLO client.test", "QUIT"], starttls=not implicit)
    out, err = r.stdout.decode(), r.stderr.decode()
    assert "221 2.0.0" in out, (out, err)
    assert "unexpected eof" not in err, err
    assert "errno" not in err, err


def strict_ctx(pki):
    """A client context that reports a missing close_notify (Python's default
    ignores an unexpected EOF)."""
    ctx = pki.client_context()
    ctx.options &= ~getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)
    return ctx


def read_to_end(tls_sock):
    """Reads until the end of the stream; SSLEOFError means no close_notify."""
    data = b""
    while True:
        chunk = tls_sock.recv(4096)
        if not chunk:
            return data
        data += chunk


def test_quit_close_notify_python_ssl(world, pki):
    p = world.petrel(listener={"tls": listener_tls(pki, implicit=True)})
    ctx = strict_ctx(pki)
    s = smtplib.SMTP_SSL("127.0.0.1", p.port, local_hostname="client.test", timeout=10,
                         context=ctx)
    s.ehlo()
    s.sock.sendall(b"QUIT\r\n")
    rest = read_to_end(s.sock)       # raises ssl.SSLEOFError without close_notify
    assert rest.startswith(b"221 "), rest
    s.close()


def test_hangup_421_ends_with_close_notify(world, pki):
    """petrel closing on its own (too many bad commands: 421) also ends TLS cleanly."""
    p = world.petrel(listener={"tls": listener_tls(pki, implicit=True)})
    ctx = strict_ctx(pki)
    s = smtplib.SMTP_SSL("127.0.0.1", p.port, local_hostname="client.test", timeout=10,
                         context=ctx)
    s.ehlo()
    s.sock.sendall(b"BOGUS\r\n" * 25)
    rest = read_to_end(s.sock)
    assert b"421 4.7.0" in rest, rest
    s.close()
    p.assert_alive()
