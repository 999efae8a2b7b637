"""Fake authoritative DNS server for the system tests (dnslib on UDP and TCP).

It answers every name itself, so petrel pointed at it (configure_dns { resolvers =
{ "127.0.0.1:PORT" } }) never reaches the machine's resolver. Unknown names get
NXDOMAIN; a name that has some record but not the asked type gets NODATA (NOERROR,
empty answer). Per-name fault modes: nxdomain, servfail, refused, drop (no answer),
garbage (random bytes that keep the query id), malformed (a valid header and question
but a broken answer record). Every query is logged in `queries`. With `ad = True` answers carry the AD bit (a
validating resolver's verdict), except the types/names given to set_insecure.
"""

import os
import random
import socket
import struct
import threading

from dnslib import AAAA, CNAME, MX, QTYPE, RCODE, RR, TLSA, TXT, A, DNSRecord

MODES = ("nxdomain", "servfail", "refused", "drop", "garbage", "malformed")


def _norm(name):
    return str(name).rstrip(".").lower()


class FakeDNS:
    def __init__(self, host="127.0.0.1", ttl=1):
        self.host = host
        self.ttl = ttl
        self.port = None
        self._records = {}        # name -> list of (qtype, rdata)
        self._modes = {}          # (name, qtype or None) -> mode
        self.queries = []         # (name, qtype string, "udp"|"tcp")
        self.ad = False           # True: set the AD bit (as a validating resolver would)
        self._insecure = set()    # (name or None, qtype): answered without AD even so
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = []
        self._udp = self._tcp = None

    # ---- records -------------------------------------------------------
    def add_mx(self, domain, host, pref=10):
        self._add(domain, QTYPE.MX, MX(host, pref))

    def set_mx(self, domain, mxes):
        """Replaces the MX set of domain: mxes = [(pref, host), ...]."""
        with self._lock:
            recs = self._records.setdefault(_norm(domain), [])
            recs[:] = [r for r in recs if r[0] != QTYPE.MX]
            for pref, host in mxes:
                recs.append((QTYPE.MX, MX(host, pref)))

    def set_null_mx(self, domain):
        """RFC 7505 null MX: a single MX 0 "."."""
        self.set_mx(domain, [(0, ".")])

    def add_a(self, name, ip):
        self._add(name, QTYPE.A, A(ip))

    def add_aaaa(self, name, ip):
        self._add(name, QTYPE.AAAA, AAAA(ip))

    def add_txt(self, name, *strings):
        """One TXT record of name made of the given character-strings."""
        self._add(name, QTYPE.TXT, TXT([x.encode() if isinstance(x, str) else x
                                        for x in strings]))

    def set_txt(self, name, *records):
        """Replaces the TXT records of name: each record a str (one string)."""
        with self._lock:
            recs = self._records.setdefault(_norm(name), [])
            recs[:] = [r for r in recs if r[0] != QTYPE.TXT]
            for text in records:
                recs.append((QTYPE.TXT, TXT([text.encode()])))

    def add_tlsa(self, name, usage, selector, mtype, data):
        """One TLSA record (RFC 6698) of name; data = the association bytes."""
        self._add(name, QTYPE.TLSA, TLSA(usage, selector, mtype, data))

    def add_cname(self, name, target):
        self._add(name, QTYPE.CNAME, CNAME(target))

    def remove(self, name):
        """Forgets every record and mode of name (it becomes NXDOMAIN)."""
        with self._lock:
            self._records.pop(_norm(name), None)
            for k in [k for k in self._modes if k[0] == _norm(name)]:
                del self._modes[k]

    def _add(self, name, qtype, rdata):
        with self._lock:
            self._records.setdefault(_norm(name), []).append((qtype, rdata))

    # ---- faults --------------------------------------------------------
    def set_mode(self, name, mode, qtype=None):
        """Fault for name (all query types, or only qtype like "MX")."""
        assert mode in MODES, mode
        with self._lock:
            self._modes[(_norm(name), qtype)] = mode

    def set_nxdomain(self, name):
        self.set_mode(name, "nxdomain")

    def clear_mode(self, name, qtype=None):
        with self._lock:
            self._modes.pop((_norm(name), qtype), None)

    def set_insecure(self, qtype, name=None):
        """Answers of qtype (e.g. "MX"), for name or every name, come without the AD
        bit even when self.ad is set: an insecure (unsigned) zone behind a validating
        resolver."""
        with self._lock:
            self._insecure.add((_norm(name) if name else None, qtype))

    # ---- query log -----------------------------------------------------
    def queried(self, name, qtype=None):
        with self._lock:
            return [q for q in self.queries
                    if q[0] == _norm(name) and (qtype is None or q[1] == qtype)]

    # ---- server --------------------------------------------------------
    @property
    def addr(self):
        return f"{self.host}:{self.port}"

    def start(self):
        last = None
        for _ in range(50):
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.bind((self.host, 0))
            port = udp.getsockname()[1]
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                tcp.bind((self.host, port))
            except OSError as e:
                last = e
                udp.close()
                tcp.close()
                continue
            tcp.listen(16)
            self._udp, self._tcp, self.port = udp, tcp, port
            break
        else:
            raise RuntimeError(f"fakedns: no port free for UDP and TCP: {last}")
        self._udp.settimeout(0.2)
        self._tcp.settimeout(0.2)
        for target in (self._serve_udp, self._serve_tcp):
            t = threading.Thread(target=target, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join(2)
        for s in (self._udp, self._tcp):
            if s:
                s.close()

    def _serve_udp(self):
        while not self._stop.is_set():
            try:
                data, peer = self._udp.recvfrom(65535)
            except socket.timeout:
                continue
            except OSError:
                return
            out = self.answer(data, "udp")
            if out is not None:
                if len(out) > 512:   # classic UDP limit: truncate, client retries on TCP
                    try:
                        r = DNSRecord.parse(out)
                        out = r.truncate().pack()
                    except Exception:
                        out = out[:512]
                try:
                    self._udp.sendto(out, peer)
                except OSError:
                    pass

    def _serve_tcp(self):
        while not self._stop.is_set():
            try:
                conn, _ = self._tcp.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            t = threading.Thread(target=self._tcp_conn, args=(conn,), daemon=True)
            t.start()

    def _tcp_conn(self, conn):
        conn.settimeout(5)
        try:
            while not self._stop.is_set():
                hdr = self._recv_exact(conn, 2)
                if not hdr:
                    return
                (n,) = struct.unpack("!H", hdr)
                data = self._recv_exact(conn, n)
                if data is None:
                    return
                out = self.answer(data, "tcp")
                if out is None:
                    continue
                conn.sendall(struct.pack("!H", len(out)) + out)
        except OSError:
            pass
        finally:
            conn.close()

    @staticmethod
    def _recv_exact(conn, n):
        buf = b""
        while len(buf) < n:
            chunk = conn.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return buf

    # ---- answers -------------------------------------------------------
    def answer(self, data, proto="udp"):
        """The reply bytes for one query packet, or None to send nothing."""
        try:
            req = DNSRecord.parse(data)
        except Exception:
            return None
        if not req.questions:
            return None
        q = req.questions[0]
        name = _norm(q.qname)
        qtype = QTYPE[q.qtype]
        with self._lock:
            self.queries.append((name, qtype, proto))
            mode = self._modes.get((name, qtype)) or self._modes.get((name, None))
            recs = list(self._records.get(name, []))
            insecure = (name, qtype) in self._insecure or (None, qtype) in self._insecure
        if mode == "drop":
            return None
        if mode == "garbage":
            return data[:2] + os.urandom(random.randint(1, 200))
        reply = req.reply(ra=1, aa=1)
        # reply() copies the query's flags: AD only when this "resolver" validated
        reply.header.ad = 1 if self.ad and not insecure else 0
        if mode == "nxdomain":
            reply.header.rcode = RCODE.NXDOMAIN
            return reply.pack()
        if mode == "servfail":
            reply.header.rcode = RCODE.SERVFAIL
            return reply.pack()
        if mode == "refused":
            reply.header.rcode = RCODE.REFUSED
            return reply.pack()
        if mode == "malformed":
            reply.add_answer(RR(q.qname, QTYPE.MX, rdata=MX("mx.broken.test", 10), ttl=self.ttl))
            packed = reply.pack()
            # Cut into the answer's RDATA: the header still claims one answer.
            return packed[:-7]
        if not recs:
            reply.header.rcode = RCODE.NXDOMAIN
            return reply.pack()
        for rtype, rdata in recs:
            if rtype == q.qtype or (rtype == QTYPE.CNAME and q.qtype != QTYPE.CNAME):
                reply.add_answer(RR(q.qname, rtype, rdata=rdata, ttl=self.ttl))
        return reply.pack()
