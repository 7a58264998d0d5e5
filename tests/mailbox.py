"""A real SMTP server for the tests that send e-mail (alerts, scheduled reports)."""

from __future__ import annotations

from typing import Any

from aiosmtpd.controller import Controller

from devstack.servers import free_port


class Mailbox:
    """A real SMTP server (aiosmtpd) on a free loopback port, keeping what it receives."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], str]] = []
        mailbox = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 (aiosmtpd)
                mailbox.messages.append(
                    (envelope.mail_from, envelope.rcpt_tos, envelope.content.decode(errors="replace"))
                )
                return "250 OK"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    @property
    def url(self) -> str:
        return f"mailto://127.0.0.1:{self.port}?from=bridge@lab.example&to=coldroom@lab.example"
