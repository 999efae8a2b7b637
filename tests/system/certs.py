"""Test certificates, generated at run time with the `openssl` CLI (nothing committed).

    pki = PKI(tmpdir)                       # a fresh CA: pki.ca_file
    cert, key = pki.leaf("mx.dest.test")    # signed by the CA, SAN DNS:mx.dest.test
    cert, key = pki.leaf("petrel.test", ips=["127.0.0.1"])
    cert, key = pki.self_signed("mx.dest.test")   # not signed by the CA

Keys are EC P-256 (fast to make); files are PEM, keys unencrypted PKCS#8. Leaves are
plain server certificates (CA:FALSE, serverAuth) valid from one day ago for two days.
"""

import os
import re
import secrets
import ssl
import subprocess

OPENSSL = "openssl"

_CA_EXT = """\
[ req ]
distinguished_name = dn
prompt = no
[ dn ]
CN = unused
[ v3_ca ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
"""

_LEAF_EXT = """\
[ req ]
distinguished_name = dn
prompt = no
[ dn ]
CN = unused
[ v3_leaf ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth, clientAuth
subjectKeyIdentifier = hash
subjectAltName = {san}
"""


def _run(args, cwd):
    r = subprocess.run([OPENSSL, *args], cwd=cwd, capture_output=True, timeout=60,
                       stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed ({r.returncode}):\n"
                           f"{r.stderr.decode('utf-8', 'replace')}")
    return r


def _safe(name):
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


class PKI:
    """A private CA in directory `path` that issues leaf certificates."""

    def __init__(self, path, ca_name="petrel test CA"):
        self.dir = str(path)
        os.makedirs(self.dir, exist_ok=True)
        self.ca_file = os.path.join(self.dir, "ca.pem")
        self.ca_key = os.path.join(self.dir, "ca.key")
        cnf = os.path.join(self.dir, "ca.cnf")
        with open(cnf, "w") as f:
            f.write(_CA_EXT)
        _run(["req", "-x509", "-new", "-config", cnf, "-extensions", "v3_ca",
              "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
              "-keyout", self.ca_key, "-out", self.ca_file, "-days", "2",
              "-subj", "/O=petrel tests/CN=" + ca_name, "-sha256"], self.dir)
        self._n = 0

    def _names(self, name, dns, ips):
        dns = [name] + [d for d in (dns or []) if d != name]
        san = ",".join([f"DNS:{d}" for d in dns] + [f"IP:{ip}" for ip in (ips or [])])
        return san

    def _paths(self, name, tag):
        self._n += 1
        base = os.path.join(self.dir, f"{self._n:02d}-{tag}-{_safe(name)}")
        return base + ".pem", base + ".key", base + ".cnf"

    def leaf(self, name, dns=None, ips=None):
        """(cert_file, key_file) for CN=name, SAN DNS:name (+ dns, + IP:ips), signed
        by this CA."""
        cert, key, cnf = self._paths(name, "leaf")
        with open(cnf, "w") as f:
            f.write(_LEAF_EXT.format(san=self._names(name, dns, ips)))
        csr = cert[:-4] + ".csr"
        _run(["req", "-new", "-config", cnf, "-newkey", "ec",
              "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key,
              "-out", csr, "-subj", "/O=petrel tests/CN=" + name], self.dir)
        _run(["x509", "-req", "-in", csr, "-CA", self.ca_file, "-CAkey", self.ca_key,
              "-set_serial", str(secrets.randbits(63)), "-days", "2", "-sha256",
              "-extfile", cnf, "-extensions", "v3_leaf", "-out", cert], self.dir)
        return cert, key

    def self_signed(self, name, dns=None, ips=None):
        """(cert_file, key_file): a self-signed server certificate for name, not
        issued by this CA."""
        cert, key, cnf = self._paths(name, "self")
        with open(cnf, "w") as f:
            f.write(_LEAF_EXT.format(san=self._names(name, dns, ips)))
        _run(["req", "-x509", "-new", "-config", cnf, "-extensions", "v3_leaf",
              "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
              "-keyout", key, "-out", cert, "-days", "2", "-sha256",
              "-subj", "/O=petrel tests/CN=" + name], self.dir)
        return cert, key

    # ---- Python contexts -------------------------------------------------
    def server_context(self, cert, key):
        """An ssl.SSLContext for a test server (sink) presenting cert/key."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        return ctx

    def client_context(self, verify=True, min_version=None, max_version=None):
        """An ssl.SSLContext for a test client; verify=True trusts only this CA and
        checks the host name (petrel's test cert names 127.0.0.1 and petrel.test)."""
        if verify:
            ctx = ssl.create_default_context(cafile=self.ca_file)
        else:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if min_version is not None:
            ctx.minimum_version = min_version
        if max_version is not None:
            ctx.maximum_version = max_version
        return ctx


def openssl_supports_tls11_client(tmpdir, pki):
    """True if the local openssl CLI can negotiate TLS 1.1 at all (its own client and
    server, SECLEVEL=0): the precondition for testing that petrel, not our client,
    refuses it. Starts an `openssl s_server`, and stops it by pid."""
    import socket
    import time
    cert, key = pki.leaf("tls11-probe.test", ips=["127.0.0.1"])
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    srv = subprocess.Popen([OPENSSL, "s_server", "-accept", f"127.0.0.1:{port}", "-cert", cert,
                            "-key", key, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0", "-quiet"],
                           cwd=str(tmpdir), stdin=subprocess.PIPE,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            r = subprocess.run([OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}",
                                "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0", "-brief"],
                               input=b"", capture_output=True, timeout=10)
            out = (r.stdout + r.stderr).decode("utf-8", "replace")
            if r.returncode == 0 and "TLSv1.1" in out:
                return True
            if "onnection refused" not in out:
                return False
            time.sleep(0.1)
        return False
    finally:
        if srv.poll() is None:
            srv.kill()
        srv.wait(5)


# ---- petrel's listener certificate ---------------------------------------

PETREL_NAME = "petrel.test"


def petrel_cert(pki):
    """(cert_file, key_file) for petrel's listeners: CN/SAN petrel.test + IP 127.0.0.1,
    issued by pki's CA (made once per PKI)."""
    pair = getattr(pki, "_petrel_pair", None)
    if pair is None:
        pair = pki._petrel_pair = pki.leaf(PETREL_NAME, ips=["127.0.0.1"])
    return pair


def listener_tls(pki, **extra):
    """The `tls = {...}` table of a petrel listener using petrel_cert(pki)."""
    cert, key = petrel_cert(pki)
    t = {"cert_file": cert, "key_file": key}
    t.update(extra)
    return t
