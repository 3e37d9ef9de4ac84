"""A real SMTP server on 127.0.0.1 for tests (aiosmtpd), recording what it receives.

    with LocalSmtpServer() as smtp:
        app.config.update(smtp.config)          # SMTP_HOST, SMTP_PORT, SMTP_SENDER
        ...                                     # the app sends e-mail
        smtp.wait_for(2)                        # -> the parsed messages

`refuse` makes it answer every RCPT TO with a permanent 550, to test bounce handling.
"""

from __future__ import annotations

import email
import email.policy
import socket
import threading
import time
from email.message import EmailMessage
from types import TracebackType
from typing import Any

from aiosmtpd.controller import Controller


def free_port() -> int:
    """Return a TCP port nothing listens on right now (bound once, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Handler:
    def __init__(self, server: LocalSmtpServer) -> None:
        self.server = server

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any
    ) -> str:
        if self.server.refuse:
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(
        self, server: Any, session: Any, envelope: Any
    ) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        with self.server.lock:
            self.server.messages.append((list(envelope.rcpt_tos), message))
        return "250 OK"


class LocalSmtpServer:
    """An aiosmtpd server on a free local port for the duration of a `with` block."""

    def __init__(self, *, refuse: bool = False, port: int | None = None) -> None:
        self.refuse = refuse
        self.port = port or free_port()
        self.messages: list[tuple[list[str], EmailMessage]] = []
        self.lock = threading.Lock()
        self._controller = Controller(_Handler(self), hostname="127.0.0.1", port=self.port)

    @property
    def config(self) -> dict[str, object]:
        return {
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": self.port,
            "SMTP_SENDER": "dtx-trials@example.org",
        }

    def __enter__(self) -> LocalSmtpServer:
        self._controller.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._controller.stop()

    def wait_for(self, n: int, timeout: float = 10.0) -> list[tuple[list[str], EmailMessage]]:
        """Return the received messages once there are at least n (fail after `timeout`)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.messages) >= n:
                    return list(self.messages)
            time.sleep(0.02)
        raise AssertionError(f"expected {n} message(s), got {len(self.messages)}")
