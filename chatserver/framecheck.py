"""RFC 6455 section 5.1: a server must close the connection on a client frame
that is not masked. aiohttp's reader accepts such frames, so the admission
wrapper (chatserver/admission.py) walks the frame headers of upgraded
connections on their way in and answers an unmasked one with close 1002.

Only headers are read; payloads are skipped by their length, so the cost is
one small step per frame.
"""

from __future__ import annotations

import struct
from typing import Final

UNMASKED_CLOSE: Final = (
    struct.pack("!BBH", 0x88, 2 + len(b"client frames must be masked"), 1002)
    + b"client frames must be masked"
)
MASK_BYTES: Final = 4


class MaskCheck:
    """Follows a client's frame stream; ``feed`` is False once a frame is unmasked."""

    __slots__ = ("_pending", "_skip")

    def __init__(self) -> None:
        self._pending = b""  # an incomplete frame header carried to the next chunk
        self._skip = 0  # payload bytes of the current frame still to come

    def feed(self, data: bytes) -> bool:
        if self._skip >= len(data):
            self._skip -= len(data)
            return True
        buf = self._pending + data[self._skip :]
        self._skip = 0
        pos, end = 0, len(buf)
        while end - pos >= 2:
            second = buf[pos + 1]
            if not second & 0x80:
                return False
            length, header = second & 0x7F, 2
            if length == 126:
                header = 4
            elif length == 127:
                header = 10
            if end - pos < header:
                break
            if header == 4:
                length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
            elif header == 10:
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
            frame_end = pos + header + MASK_BYTES + length
            if frame_end > end:
                self._skip = frame_end - end
                pos = end
                break
            pos = frame_end
        self._pending = buf[pos:]
        return True
