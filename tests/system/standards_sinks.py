"""A recording next hop whose EHLO extensions are chosen by the test (CHUNKING,
8BITMIME, SMTPUTF8, PIPELINING, ...), for the outbound standards tests: it speaks
DATA and BDAT (RFC 3030), records every command line received verbatim and every
message with the way it arrived. Plain sockets and one thread per connection, on
loopback only; stopped by the world fixture like the other sinks.
"""

import re
import socket
import threading
import time


class CapsTxn:
    def __init__(self, mail_line, rcpts, data, via):
        self.mail_line = mail_line        # the MAIL command as sent
        self.rcpt_tos = rcpts
        self.data = data                  # DATA: unstuffed; BDAT: the chunks joined
        self.via = via                    # "DATA" or "BDAT"

    def header(self, name):
        head = self.data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
        head = re.sub(r"\r\n[ \t]+", " ", head)
        for line in head.split("\r\n"):
            k, sep, v = line.partition(":")
            if sep and k.strip().lower() == name.lower():
                return v.strip()
        return None

    @property
    def message_id(self):
        return self.header("Message-ID")


class CapsSink:
    """EHLO answers `250-<name>` then one line per extension of `exts`.
    rcpt_reply(address) -> reply text or None (250); final_reply: the reply to the
    end of a message (DATA's dot or BDAT LAST) instead of 250, nothing recorded. As
    RFC 3030 asks, a BDAT after a failed MAIL or with no accepted recipient gets
    554 5.5.1 and its octets are read and dropped."""

    def __init__(self, ip, port, exts=("PIPELINING", "8BITMIME", "CHUNKING"), name="caps.sink",
                 rcpt_reply=None, final_reply=None):
        self.ip, self.port, self.exts, self.name = ip, port, list(exts), name
        self.rcpt_reply, self.final_reply = rcpt_reply, final_reply
        self.commands = []        # every command line, in arrival order (bytes, no CRLF)
        self.txns = []
        self.lock = threading.Lock()
        self.sock = None
        self.stopping = False
        self.threads = []
        self.conns = []

    def start(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.ip, self.port))
        s.listen(16)
        s.settimeout(0.2)
        self.sock = s
        t = threading.Thread(target=self._accept_loop, daemon=True)
        t.start()
        self.threads.append(t)
        return self

    def stop(self):
        self.stopping = True
        for c in list(self.conns):
            try:
                c.close()
            except OSError:
                pass
        for t in self.threads:
            t.join(3)
        if self.sock:
            self.sock.close()
            self.sock = None

    def _accept_loop(self):
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            conn.settimeout(30)
            self.conns.append(conn)
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            t.start()
            self.threads.append(t)

    # ---- one connection ------------------------------------------------
    def _serve(self, conn):
        buf = bytearray()

        def fill():
            chunk = conn.recv(65536)
            if not chunk:
                raise ConnectionError
            buf.extend(chunk)

        def line():
            while b"\n" not in buf:
                fill()
            i = buf.index(b"\n")
            out = bytes(buf[:i]).rstrip(b"\r")
            del buf[:i + 1]
            return out

        def octets(n):
            while len(buf) < n:
                fill()
            out = bytes(buf[:n])
            del buf[:n]
            return out

        def send(text):
            conn.sendall(text.encode() + b"\r\n")

        mail, rcpts, chunks = None, [], []
        try:
            send(f"220 {self.name} ESMTP caps sink")
            while not self.stopping:
                cmd = line()
                with self.lock:
                    self.commands.append(cmd)
                verb = cmd.split(b" ", 1)[0].upper()
                if verb == b"EHLO":
                    lines = [self.name] + self.exts
                    for i, ext in enumerate(lines):
                        send(("250 " if i == len(lines) - 1 else "250-") + ext)
                elif verb == b"HELO":
                    send(f"250 {self.name}")
                elif verb == b"MAIL":
                    mail, rcpts, chunks = cmd, [], []
                    send("250 2.1.0 ok")
                elif verb == b"RCPT":
                    m = re.match(rb"RCPT TO:<([^>]*)>", cmd, re.I)
                    addr = m.group(1).decode("utf-8", "replace") if m else ""
                    refuse = self.rcpt_reply(addr) if self.rcpt_reply else None
                    if refuse:
                        send(refuse)
                    else:
                        rcpts.append(addr)
                        send("250 2.1.5 ok")
                elif verb == b"DATA":
                    send("354 go ahead")
                    lines_ = []
                    while True:
                        ln = line()
                        if ln == b".":
                            break
                        lines_.append(ln[1:] if ln.startswith(b".") else ln)
                    data = b"".join(x + b"\r\n" for x in lines_)
                    if self.final_reply:
                        send(self.final_reply)
                    else:
                        self._record(mail, rcpts, data, "DATA")
                        send("250 2.0.0 queued")
                    mail, rcpts = None, []
                elif verb == b"BDAT":
                    parts = cmd.split(b" ")
                    n = int(parts[1])
                    chunks.append(octets(n))
                    last = len(parts) > 2 and parts[2].upper() == b"LAST"
                    if mail is None or not rcpts:
                        send("554 5.5.1 no valid recipients")
                        mail, rcpts, chunks = None, [], []
                    elif last and self.final_reply:
                        send(self.final_reply)
                        mail, rcpts, chunks = None, [], []
                    elif last:
                        self._record(mail, rcpts, b"".join(chunks), "BDAT")
                        mail, rcpts, chunks = None, [], []
                        send("250 2.0.0 queued")
                    else:
                        send(f"250 2.0.0 {n} octets")
                elif verb == b"RSET":
                    mail, rcpts, chunks = None, [], []
                    send("250 2.0.0 ok")
                elif verb == b"QUIT":
                    send("221 2.0.0 bye")
                    return
                else:
                    send("502 5.5.1 not here")
        except (ConnectionError, OSError, ValueError, IndexError):
            return
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def _record(self, mail, rcpts, data, via):
        with self.lock:
            self.txns.append(CapsTxn(mail, list(rcpts), data, via))

    # ---- queries -------------------------------------------------------
    def messages(self):
        with self.lock:
            return list(self.txns)

    def command_lines(self):
        with self.lock:
            return list(self.commands)

    def wait_message(self, message_id, timeout=15):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for t in self.messages():
                if t.message_id == message_id:
                    return t
            time.sleep(0.05)
        raise AssertionError(f"{self.name}: no message {message_id} within {timeout}s; "
                             f"commands: {self.command_lines()[-20:]}")
