"""Sinks with TLS and AUTH for the outbound TLS tests (built on sinks.Sink).

TLSSink: the recording aiosmtpd Sink, plus
  tls_context      offer STARTTLS with this server context (certs.PKI.server_context)
  require_starttls refuse MAIL etc. before STARTTLS (530)
  users            {login: password}: offer AUTH PLAIN/LOGIN and check against it
  auth_required    refuse MAIL before AUTH (530 5.7.0)
  auth_require_tls offer/accept AUTH only after STARTTLS (default True)
  broken_starttls  "garbage" | "alert" | "close": offer STARTTLS, answer it with 220,
                   then send junk (or a TLS handshake_failure alert, or nothing) and
                   close; a session that does not ask for STARTTLS works normally
Every accepted transaction (Txn) also carries .tls ("TLSv1.3:TLS_AES_256_GCM_SHA384"
as seen by the sink, or None in clear) and .auth_user (the AUTH login, or None).
The sink records .auth_attempts [(mechanism, login, password, ok)] and
.starttls_attempts (STARTTLS commands received).
"""

from aiosmtpd.smtp import AuthResult, LoginPassword

from sinks import NULL_SENDER, Sink, Txn, _Controller, _Handler, _RecordingSMTP


def _tls_of(session):
    info = getattr(session, "ssl", None)
    if not info:
        return None
    obj = info.get("ssl_object") if isinstance(info, dict) else None
    if obj is None:
        return "unknown"
    cipher = obj.cipher()
    return f"{obj.version()}:{cipher[0] if cipher else '?'}"


def _decode(v):
    return v.decode("utf-8", "replace") if isinstance(v, (bytes, bytearray)) else v


class _TLSRecordingSMTP(_RecordingSMTP):
    async def smtp_STARTTLS(self, arg):
        sink = self._sink
        with sink._lock:
            sink.starttls_attempts += 1
        mode = sink.broken_starttls
        if not mode:
            return await super().smtp_STARTTLS(arg)
        await self.push("220 2.0.0 Ready to start TLS")
        if mode == "garbage":
            self.transport.write(b"this is not TLS at all\r\n\x00\xff\xfe junk junk\r\n" * 8)
        elif mode == "alert":
            # A TLS 1.2 record: alert, fatal, handshake_failure.
            self.transport.write(b"\x15\x03\x03\x00\x02\x02\x28")
        self.transport.close()


class _TLSHandler(_Handler):
    async def handle_DATA(self, server, session, envelope):
        import asyncio
        sink = self.sink
        if sink.delay:
            await asyncio.sleep(sink.delay)
        mail_from = "" if envelope.mail_from == NULL_SENDER else envelope.mail_from
        txn = Txn(mail_from, envelope.rcpt_tos, envelope.original_content,
                  session.peer[0], server._conn_no, envelope.mail_options)
        txn.tls = _tls_of(session)
        auth = getattr(session, "auth_data", None)
        txn.auth_user = _decode(getattr(auth, "login", None)) if session.authenticated else None
        reply = sink.data_reply(txn) if sink.data_reply else None
        with sink._lock:
            if reply:
                sink.rejected.append((txn, reply))
                return reply
            sink.transactions.append(txn)
            n = len(sink.transactions)
        return f"250 2.0.0 OK queued as sink-{n}"


class _TLSController(_Controller):
    def factory(self):
        return _TLSRecordingSMTP(self._sink, self.handler, **self.SMTP_kwargs)


class TLSSink(Sink):
    def __init__(self, ip, port, tls_context=None, require_starttls=False, users=None,
                 auth_required=False, auth_require_tls=True, broken_starttls=None, **kw):
        kw.setdefault("name", f"tls-sink-{ip}")
        super().__init__(ip, port, **kw)
        self.tls_context = tls_context
        self.require_starttls = require_starttls
        self.users = dict(users) if users is not None else None
        self.auth_required = auth_required
        self.auth_require_tls = auth_require_tls
        assert broken_starttls in (None, "garbage", "alert", "close"), broken_starttls
        self.broken_starttls = broken_starttls
        if broken_starttls and tls_context is None:
            import ssl
            # aiosmtpd offers STARTTLS only with a context; it is never used here.
            self.tls_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.auth_attempts = []
        self.starttls_attempts = 0

    def _authenticate(self, server, session, envelope, mechanism, auth_data):
        if not isinstance(auth_data, LoginPassword):
            with self._lock:
                self.auth_attempts.append((mechanism, None, None, False))
            return AuthResult(success=False, handled=False)
        login, password = _decode(auth_data.login), _decode(auth_data.password)
        ok = self.users is not None and self.users.get(login) == password
        with self._lock:
            self.auth_attempts.append((mechanism, login, password, ok))
        return AuthResult(success=ok, handled=False, auth_data=auth_data)

    def start(self):
        assert self._ctl is None, "sink already running"
        kw = dict(hostname=self.ip, port=self.port, server_hostname=self.name,
                  ready_timeout=5, enable_SMTPUTF8=True)
        if self.tls_context is not None:
            kw["tls_context"] = self.tls_context
            kw["require_starttls"] = self.require_starttls
        if self.users is not None:
            kw["authenticator"] = self._authenticate
            kw["auth_required"] = self.auth_required
            kw["auth_require_tls"] = self.auth_require_tls
        self._ctl = _TLSController(self, _TLSHandler(self), **kw)
        self._ctl.start()
        return self


def tls_sink(world, ip=None, port=None, start=True, **kw):
    """A TLSSink registered with the world (stopped at teardown); default: a fresh
    loopback IP on the MX port."""
    s = TLSSink(ip or world.new_ip(), port or world.mx_port, **kw)
    world.sinks.append(s)
    if start:
        s.start()
    return s


def tls_mx_domain(world, domain, ip=None, mx_name=None, pref=10, **kw):
    """Publishes `domain MX mx_name` + `mx_name A ip` in the fake DNS and starts a
    TLSSink at ip on the MX port."""
    ip = ip or world.new_ip()
    mx_name = mx_name or f"mx.{domain}"
    world.dns.add_mx(domain, mx_name, pref)
    world.dns.add_a(mx_name, ip)
    return tls_sink(world, ip, **kw)
