#!/usr/bin/python3
# Fake DNS server for the dns.c unit tests: serves a fixed zone on loopback UDP+TCP and
# misbehaves on request (SERVFAIL, REFUSED, silence, garbage). Never forwards a query.
# SPDX-License-Identifier: Apache-2.0
"""Usage: dns_fixture.py --port N [--zone FILE] [--log FILE] [--bind ADDR]

--port 0 picks a free port that is free for both UDP and TCP. Once both sockets are
bound, one line "ready PORT" goes to stdout. Every query received is appended to the
--log file as "udp|tcp QNAME QTYPE" (lower-case name without the trailing dot), so a
test can count what reached the server.

The zone (dnslib zone-file syntax, one record per line) is built in unless --zone is
given. Names whose first label is one of the words below trigger a behaviour instead
of a zone lookup:
  servfail.*  -> SERVFAIL          refused.*  -> REFUSED
  drop.*      -> no answer at all  garbage.*  -> a reply whose header and question
                                                 match but whose answer is junk
A UDP answer larger than 512 bytes is sent truncated (TC), so clients retry on TCP.
The server exits on SIGTERM/SIGINT, or when its parent process goes away.
"""

import argparse
import os
import signal
import socket
import struct
import sys
import threading
import time

from dnslib import DNSRecord, QTYPE, RCODE, RR

BUILTIN_ZONE = """
two.test.            300 IN MX   10 mx1.two.test.
two.test.            300 IN MX   20 mx2.two.test.
mx1.two.test.        300 IN A    192.0.2.1
mx2.two.test.        300 IN A    192.0.2.2
mx2.two.test.        300 IN AAAA 2001:db8::2
eq.test.             300 IN MX   10 a.eq.test.
eq.test.             300 IN MX   10 b.eq.test.
eq.test.             300 IN MX   10 c.eq.test.
a.eq.test.           300 IN A    192.0.2.11
b.eq.test.           300 IN A    192.0.2.12
c.eq.test.           300 IN A    192.0.2.13
nomx.test.           300 IN A    192.0.2.20
v6only.test.         300 IN AAAA 2001:db8::6
alias.test.          300 IN CNAME nomx.test.
nullmx.test.         300 IN MX   0 .
iplit.test.          300 IN MX   10 192.0.2.5.
iplit.test.          300 IN MX   20 mx1.two.test.
iponly.test.         300 IN MX   10 192.0.2.5.
deadmx.test.         300 IN MX   10 nohost.deadmx.test.
deadmx.test.         300 IN MX   20 nohost2.deadmx.test.
tempmx.test.         300 IN MX   10 servfail.tempmx.test.
tempmx.test.         300 IN MX   20 refused.tempmx.test.
partial.test.        300 IN MX   10 servfail.partial.test.
partial.test.        300 IN MX   20 mx1.two.test.
cached.test.         300 IN MX   10 mx.cached.test.
mx.cached.test.      300 IN A    192.0.2.30
coal.test.           300 IN MX   10 mx.coal.test.
mx.coal.test.        300 IN A    192.0.2.31
"""


def big_zone():
    # 40 MX records of equal preference: too large for a 512-byte UDP answer.
    lines = []
    for i in range(40):
        lines.append("big.test. 300 IN MX 10 mx%02d.big.test." % i)
        lines.append("mx%02d.big.test. 300 IN A 192.0.2.%d" % (i, 100 + i))
    return "\n".join(lines)


class Zone:
    def __init__(self, text):
        self.records = {}
        for rr in RR.fromZone(text):
            self.records.setdefault(str(rr.rname).lower(), []).append(rr)

    def answer(self, request):
        reply = request.reply()
        q = request.q
        name = str(q.qname).lower()
        seen = set()
        while name not in seen:
            seen.add(name)
            rrs = self.records.get(name)
            if rrs is None:
                if not reply.rr:
                    reply.header.rcode = RCODE.NXDOMAIN
                return reply
            cname = None
            for rr in rrs:
                if rr.rtype == q.qtype or q.qtype == QTYPE.ANY:
                    reply.add_answer(rr)
                elif rr.rtype == QTYPE.CNAME:
                    cname = rr
            if cname is None or q.qtype == QTYPE.CNAME:
                return reply
            reply.add_answer(cname)
            name = str(cname.rdata.label).lower()
        return reply


class Server:
    def __init__(self, zone, log_path):
        self.zone = zone
        self.log_path = log_path
        self.lock = threading.Lock()

    def log(self, transport, request):
        if not self.log_path:
            return
        line = "%s %s %s\n" % (transport, str(request.q.qname).lower().rstrip("."),
                               QTYPE.get(request.q.qtype))
        with self.lock, open(self.log_path, "a") as f:
            f.write(line)
            f.flush()

    def handle(self, data, transport):
        """Returns the reply bytes, or None to stay silent."""
        try:
            request = DNSRecord.parse(data)
        except Exception:
            return None
        if not request.questions:
            return None
        self.log(transport, request)
        first = str(request.q.qname).lower().split(".")[0]
        if first == "drop":
            return None
        if first == "garbage":
            return self.garbage(request)
        if first in ("servfail", "refused"):
            reply = request.reply()
            reply.header.rcode = RCODE.SERVFAIL if first == "servfail" else RCODE.REFUSED
            return reply.pack()
        packed = self.zone.answer(request).pack()
        if transport == "udp" and len(packed) > 512:
            reply = request.reply()
            reply.header.tc = 1
            packed = reply.pack()
        return packed

    @staticmethod
    def garbage(request):
        # Right id, flags and question (so the client accepts it), one announced
        # answer record made of junk.
        reply = request.reply()
        head = bytearray(reply.pack())
        struct.pack_into("!H", head, 6, 1)
        return bytes(head) + b"\xc0\x0c\x00\x0f\x00\x01\xff\xff\xff\xff\x01\x00\x07junk"


def bind_pair(addr, port):
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    for _ in range(100):
        udp = socket.socket(family, socket.SOCK_DGRAM)
        udp.bind((addr, port))
        chosen = udp.getsockname()[1]
        tcp = socket.socket(family, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            tcp.bind((addr, chosen))
        except OSError:
            udp.close()
            tcp.close()
            if port != 0:
                raise
            continue
        tcp.listen(16)
        return udp, tcp, chosen
    raise OSError("no free port for UDP and TCP")


def serve_udp(server, sock):
    while True:
        data, peer = sock.recvfrom(65535)
        reply = server.handle(data, "udp")
        if reply is not None:
            sock.sendto(reply, peer)


def recv_exact(conn, n):
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def serve_tcp_conn(server, conn):
    with conn:
        while True:
            head = recv_exact(conn, 2)
            if head is None:
                return
            data = recv_exact(conn, struct.unpack("!H", head)[0])
            if data is None:
                return
            reply = server.handle(data, "tcp")
            if reply is not None:
                conn.sendall(struct.pack("!H", len(reply)) + reply)


def serve_tcp(server, sock):
    while True:
        conn, _ = sock.accept()
        threading.Thread(target=serve_tcp_conn, args=(server, conn), daemon=True).start()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--bind", default="127.0.0.1")
    ap.add_argument("--zone")
    ap.add_argument("--log")
    args = ap.parse_args()

    if args.zone:
        with open(args.zone) as f:
            text = f.read()
    else:
        text = BUILTIN_ZONE + big_zone()
    server = Server(Zone(text), args.log)
    udp, tcp, port = bind_pair(args.bind, args.port)

    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    signal.signal(signal.SIGINT, lambda *_: os._exit(0))
    threading.Thread(target=serve_udp, args=(server, udp), daemon=True).start()
    threading.Thread(target=serve_tcp, args=(server, tcp), daemon=True).start()
    sys.stdout.write("ready %d\n" % port)
    sys.stdout.flush()

    parent = os.getppid()
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)


if __name__ == "__main__":
    main()
