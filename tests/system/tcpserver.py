"""A thread-per-connection TCP listener for the raw next hops of the fault, soak and
smuggling tests: start() binds ip:port, each accepted socket goes to the subclass's
_session(sock) in its own thread, stop() closes the listener. Loopback only."""

import socket
import threading


class ThreadedTCPServer:
    def __init__(self, ip, port, backlog=128):
        self.ip, self.port, self.backlog = ip, port, backlog
        self.stop_ev = threading.Event()

    def start(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.ip, self.port))
        s.listen(self.backlog)
        s.settimeout(0.2)
        self.srv = s
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()
        return self

    def stop(self):
        self.stop_ev.set()
        self.thread.join(3)
        self.srv.close()

    def _accept(self):
        while not self.stop_ev.is_set():
            try:
                c, _ = self.srv.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._session, args=(c,), daemon=True).start()

    def _session(self, sock):
        raise NotImplementedError
