"""The benchmark message: sender, sequence number and send time in fixed columns.

Receivers find the marker with ``bytes.find`` and slice the fields at fixed
offsets, so no frame is parsed as JSON or split into words: the load
generator must stay cheaper than the server it measures.
"""

MARK = b"~M"
SENDER_AT = len(MARK)
SEQ_AT = SENDER_AT + 6
TIME_AT = SEQ_AT + 10
FIELDS_END = TIME_AT + 20
MAX_SENDER = 999_999


def make_payload(sender: int, seq: int, t_ns: int, size: int) -> bytes:
    """Return a message of at least ``size`` bytes carrying the three fields.

    The padding is printable ASCII, so text servers relay it unchanged and
    Socket.IO needs no JSON escaping.
    """
    head = b"%s%06d%010d%020d " % (MARK, sender, seq, t_ns)
    return head + b"x" * max(0, size - len(head))


def read_fields(data: bytes, at: int) -> tuple[int, int, int]:
    """Return ``(sender, seq, t_ns)`` of the payload whose marker is at ``at``."""
    return (
        int(data[at + SENDER_AT : at + SEQ_AT]),
        int(data[at + SEQ_AT : at + TIME_AT]),
        int(data[at + TIME_AT : at + FIELDS_END]),
    )
