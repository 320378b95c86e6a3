"""In-partition de-duplication by `message_id`: the first accepted (file name, then line) wins.

Seen ids are kept as two independent 64-bit hashes (16 bytes an id, a 2^-128 collision
chance) rather than as strings, so a day of millions of events costs megabytes, not
hundreds of them. Within a chunk the comparison is on the exact strings.
"""

from __future__ import annotations

import polars as pl

HASH_SEEDS = (0x74726163_6B686F75, 0x53454741_4D454E54)
RECHUNK_EVERY = 16


class SeenMessageIds:
    def __init__(self) -> None:
        self.seen = pl.DataFrame(schema={"h1": pl.UInt64, "h2": pl.UInt64})
        self.batches = 0

    @staticmethod
    def keys(message_ids: pl.Series) -> pl.DataFrame:
        h1, h2 = (message_ids.hash(seed) for seed in HASH_SEEDS)
        return pl.DataFrame({"h1": h1, "h2": h2})

    def mark_duplicates(self, message_ids: pl.Series) -> pl.Series:
        """True for each id already accepted in an earlier chunk or earlier in this one."""
        keys = self.keys(message_ids)
        earlier = keys.with_row_index("row").join(self.seen, on=["h1", "h2"], how="semi")["row"]
        duplicate = (~message_ids.is_first_distinct()).scatter(earlier, True) if len(earlier) else ~message_ids.is_first_distinct()
        self.seen = self.seen.vstack(keys.filter(~duplicate))
        self.batches += 1
        if self.batches % RECHUNK_EVERY == 0:
            self.seen = self.seen.rechunk()
        return duplicate
