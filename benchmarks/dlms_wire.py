"""The DLMS benchmarks' transport: the agent's own TCP wrapper transport, counting what
crosses the wire (requests, and bytes both ways with the 8-byte wrapper headers)."""

from __future__ import annotations

from agent.drivers.dlms.transport import WrapperTransport

WRAPPER_HEADER = 8


class CountingTransport(WrapperTransport):
    """The agent's TCP wrapper transport, counting what crosses the wire (class-wide, so a
    transport the driver makes itself is counted too); ``reset()`` before a measured run."""

    sent = 0
    received = 0
    requests = 0

    @classmethod
    def reset(cls) -> None:
        CountingTransport.sent = CountingTransport.received = CountingTransport.requests = 0

    async def request(self, apdu: bytes, what: str) -> bytes:
        answer = await super().request(apdu, what)
        CountingTransport.sent += len(apdu) + WRAPPER_HEADER
        CountingTransport.received += len(answer) + WRAPPER_HEADER
        CountingTransport.requests += 1
        return answer
