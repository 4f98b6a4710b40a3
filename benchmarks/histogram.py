"""Latency histogram with bounded relative error (log-linear buckets).

Counting into buckets keeps memory constant however many deliveries a run
makes, and histograms of several worker processes merge by adding counts.
Values below :data:`FAST_LIMIT` are counted in a plain list first, the
cheapest thing the per-frame hot path can do, and folded into buckets by
:meth:`Histogram.compact` before the histogram travels.
"""

SUB_BUCKETS = 1024  # per power of two: relative error below 0.1 %
LINEAR = 2 * SUB_BUCKETS  # values below this get one bucket each
# Up to ~1.05 s: scenario 1's closed loop puts most latencies near 100 ms, which a
# 65 ms limit sent down the slower bucket path (8 MiB per receiving process).
FAST_LIMIT = 1 << 20


def bucket_of(value: int) -> int:
    """Return the bucket index of a non-negative value."""
    if value < LINEAR:
        return value
    shift = value.bit_length() - SUB_BUCKETS.bit_length()
    return LINEAR + (shift - 1) * SUB_BUCKETS + ((value >> shift) - SUB_BUCKETS)


def value_of(bucket: int) -> int:
    """Return the midpoint of a bucket: the inverse of :func:`bucket_of`."""
    if bucket < LINEAR:
        return bucket
    shift, offset = divmod(bucket - LINEAR, SUB_BUCKETS)
    shift += 1
    return ((offset + SUB_BUCKETS) << shift) + (1 << (shift - 1))


class Histogram:
    """Counts of non-negative integer latencies (microseconds)."""

    __slots__ = ("counts", "fast", "maximum")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}  # bucket -> count
        self.fast: list[int] = []  # value -> count, for values below FAST_LIMIT
        self.maximum = 0

    def enable_fast(self) -> None:
        """Allocate the list the hot path counts small values into."""
        if not self.fast:
            self.fast = [0] * FAST_LIMIT

    def add(self, value: int) -> None:
        """Count one value (negative values, from clock skew, count as 0)."""
        value = max(value, 0)
        bucket = bucket_of(value)
        self.counts[bucket] = self.counts.get(bucket, 0) + 1
        if value > self.maximum:
            self.maximum = value

    def compact(self) -> "Histogram":
        """Fold the fast list into buckets so the histogram pickles small."""
        for value, count in enumerate(self.fast):
            if count:
                bucket = bucket_of(value)
                self.counts[bucket] = self.counts.get(bucket, 0) + count
                self.maximum = max(self.maximum, value)
        self.fast = []
        return self

    @property
    def total(self) -> int:
        """Number of values counted."""
        return sum(self.counts.values()) + sum(self.fast)

    def merge(self, other: "Histogram") -> None:
        """Add the counts of ``other`` (compacted) into this histogram."""
        for bucket, count in other.compact().counts.items():
            self.counts[bucket] = self.counts.get(bucket, 0) + count
        self.maximum = max(self.maximum, other.maximum)

    def percentile(self, fraction: float) -> int:
        """Return the value below which ``fraction`` (0..1) of the counts fall."""
        self.compact()
        total = self.total
        if total == 0:
            return 0
        rank = max(1, round(fraction * total))
        seen = 0
        for bucket in sorted(self.counts):
            seen += self.counts[bucket]
            if seen >= rank:
                return min(value_of(bucket), self.maximum)
        return self.maximum
