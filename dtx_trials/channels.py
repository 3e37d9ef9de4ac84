"""Delivery channels of the notification outbox: e-mail over SMTP, SMS through a provider.

A channel sends one `OutgoingMessage` and returns the provider's id for it (the SMTP
Message-ID, an SMS gateway's message id), or raises `DeliveryError` — `permanent=True` when
trying again cannot help (a refused recipient), so the outbox stops retrying at once.

SMS has no built-in gateway: a deployment names a factory for its provider in
`DTX_SMS_PROVIDER` (``package.module:factory``); the factory receives the app config and
returns an object with ``send_sms(phone, text) -> str | None`` (`SmsProvider`). Example::

    # mycompany/sms.py
    class AliyunSms:
        def __init__(self, config): self.client = ...   # credentials from config
        def send_sms(self, phone, text): return self.client.send(phone, text).message_id

    def provider(config): return AliyunSms(config)

    DTX_SMS_PROVIDER=mycompany.sms:provider
"""

from __future__ import annotations

import importlib
import smtplib
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any, Protocol


@dataclass(frozen=True)
class OutgoingMessage:
    """One message of the outbox, as a channel sends it."""

    notification_id: int
    address: str
    subject: str
    body: str


class DeliveryError(Exception):
    """A message was not delivered; `permanent` when a retry cannot succeed."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class Channel(Protocol):
    """Sends messages of one kind (`name`: the outbox's channel column, e.g. ``email``)."""

    name: str

    def send(self, message: OutgoingMessage) -> str | None:
        """Send the message; return the provider's id for it, or raise DeliveryError."""


class SmtpChannel:
    """E-mail through an SMTP server (plain, STARTTLS or implicit TLS; optional login)."""

    name = "email"

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        *,
        username: str | None = None,
        password: str | None = None,
        security: str = "none",  # none | starttls | tls
        timeout: float = 10.0,
    ) -> None:
        if security not in ("none", "starttls", "tls"):
            raise ValueError(f"SMTP security must be none, starttls or tls, got {security!r}")
        if not sender or "@" not in sender:
            raise ValueError("the SMTP sender must be an e-mail address (DTX_SMTP_SENDER)")
        self.host, self.port, self.sender = host, int(port), sender
        self.username, self.password = username, password
        self.security, self.timeout = security, timeout

    def message_id(self, notification_id: int) -> str:
        """Return a stable Message-ID: a retried message keeps it, so receivers can dedupe."""
        return f"<dtx-notification-{notification_id}@{self.sender.rsplit('@', 1)[1]}>"

    def send(self, message: OutgoingMessage) -> str | None:
        """Send one e-mail; SMTP 5xx replies are permanent failures, the rest transient."""
        email = EmailMessage()
        email["From"] = self.sender
        email["To"] = message.address
        email["Subject"] = message.subject
        email["Date"] = formatdate(usegmt=True)
        email["Message-ID"] = self.message_id(message.notification_id)
        email.set_content(message.body)
        try:
            client: smtplib.SMTP
            if self.security == "tls":
                client = smtplib.SMTP_SSL(
                    self.host, self.port, timeout=self.timeout,
                    context=ssl.create_default_context(),
                )
            else:
                client = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            with client:
                if self.security == "starttls":
                    client.starttls(context=ssl.create_default_context())
                if self.username:
                    client.login(self.username, self.password or "")
                client.send_message(email)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            raise DeliveryError(
                f"SMTP refused the recipient ({', '.join(map(str, codes))})",
                permanent=all(code >= 500 for code in codes),
            ) from exc
        except smtplib.SMTPResponseException as exc:
            raise DeliveryError(
                f"SMTP {exc.smtp_code}: {_reply_text(exc.smtp_error)}",
                permanent=exc.smtp_code >= 500,
            ) from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"SMTP server unreachable: {type(exc).__name__}") from exc
        return str(email["Message-ID"])


def _reply_text(reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    return text[:200]


class SmsProvider(Protocol):
    """An SMS gateway adapter (see the module docstring for how a deployment installs one)."""

    def send_sms(self, phone: str, text: str) -> str | None:
        """Send `text` to `phone`; return the gateway's message id; raise DeliveryError."""


class SmsChannel:
    """Text messages through an `SmsProvider`; the subject is the text (SMS has no subject)."""

    name = "sms"

    def __init__(self, provider: SmsProvider, *, max_length: int = 300) -> None:
        self.provider = provider
        self.max_length = max_length

    def send(self, message: OutgoingMessage) -> str | None:
        """Send the message's subject, cut to `max_length` characters."""
        text = message.subject[: self.max_length]
        try:
            return self.provider.send_sms(message.address, text)
        except DeliveryError:
            raise
        except OSError as exc:
            raise DeliveryError(f"SMS provider unreachable: {type(exc).__name__}") from exc


def _load_factory(path: str) -> Callable[[Mapping[str, Any]], SmsProvider]:
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"DTX_SMS_PROVIDER must be 'package.module:factory', got {path!r}")
    factory = getattr(importlib.import_module(module_name), attribute)
    if not callable(factory):
        raise ValueError(f"DTX_SMS_PROVIDER {path!r} is not callable")
    return factory  # type: ignore[no-any-return]


def channels_from_config(config: Mapping[str, Any]) -> dict[str, Channel]:
    """Return the channels the configuration enables: `email` when SMTP_HOST is set, `sms`
    when SMS_PROVIDER names a provider factory. A channel left out keeps its messages pending.
    """
    channels: dict[str, Channel] = {}
    if config.get("SMTP_HOST"):
        channels["email"] = SmtpChannel(
            str(config["SMTP_HOST"]),
            int(config.get("SMTP_PORT") or 25),
            str(config.get("SMTP_SENDER") or ""),
            username=config.get("SMTP_USERNAME") or None,
            password=config.get("SMTP_PASSWORD") or None,
            security=str(config.get("SMTP_SECURITY") or "none"),
        )
    if config.get("SMS_PROVIDER"):
        channels["sms"] = SmsChannel(_load_factory(str(config["SMS_PROVIDER"]))(config))
    return channels
