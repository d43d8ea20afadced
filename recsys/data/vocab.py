"""Vocab: a stable, append-only map from raw ids to dense integer indices.

Models, embeddings and logged metrics refer to users and items by index. If re-ingesting moved an
index, yesterday's model would score the wrong items; so an index, once given, never changes and new
ids are only ever appended. Saved as Parquet with columns (<id>, <idx>[, block]).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from recsys.data.parquet_out import write_table
from recsys.data.sorting import sort_in_parallel
from recsys.errors import DataError

BLOCK = "block"
UNKNOWN_BLOCK = -1
CODE_DTYPE = pl.UInt32
"""Integer ids are carried through ingest as their value (see `decimal_codes`) instead of as text."""
WIDE_CODE_DTYPE = pl.UInt64
"""The same for integer ids of which some do not fit 32 bits (64-bit user ids, hashed ids): the value
still identifies the id, but two of them no longer pack into one 64-bit pair key."""
CODE_DTYPES = (CODE_DTYPE, WIDE_CODE_DTYPE)
MAX_CODE = (1 << 32) - 1
"""The largest id a CODE_DTYPE code holds."""


def decimal_codes(text: pl.Expr, dtype: pl.DataType = CODE_DTYPE) -> tuple[pl.Expr, pl.Expr]:
    """(value as `dtype`, whether `text` is exactly that value's decimal spelling) for an id column.

    Most logs number their users and items. Where every id is a canonical decimal in [0, 2**32)
    (no sign, no leading zero, no whitespace) the number identifies the id exactly: its decimal
    text is the id, so grouping, joining and hashing the 4-byte value gives the same answer as the
    string, without building a string dictionary (Categorical), the slowest step of ingest on
    large logs. Ids such as "007" or "+7" are not canonical, so they can never be merged with "7".
    With `WIDE_CODE_DTYPE` the same holds for canonical decimals in [0, 2**64)."""
    code = text.str.to_integer(strict=False, dtype=dtype)
    canonical = code.is_not_null() & (~text.str.starts_with("0") | (text == "0")) & ~text.str.starts_with("+")
    return code, canonical


class Vocab:
    """id -> idx for one entity (users or items). `id_name` / `idx_name` are the column names used in
    frames and on disk (user_id / user_idx, item_id / item_idx)."""

    def __init__(
        self,
        table: pl.DataFrame | None = None,
        *,
        id_name: str = "id",
        idx_name: str = "idx",
        codes: pl.DataFrame | None = None,
    ) -> None:
        """`codes` is for `extend` only: (code, idx) of every entry whose id is a canonical
        decimal, already known (see `_decimal_entries`); a table it passes is valid by construction,
        so it is not checked again."""
        self.id_name, self.idx_name = id_name, idx_name
        if table is None:
            table = pl.DataFrame(schema={id_name: pl.String, idx_name: pl.Int32})
        self.table = table.select(
            pl.col(id_name).cast(pl.String),
            pl.col(idx_name).cast(pl.Int32),
            *([pl.col(BLOCK).cast(pl.Int32)] if BLOCK in table.columns else []),
        )
        self._codes = codes
        if codes is None:
            self._check()

    def _check(self) -> None:
        idx = self.table.get_column(self.idx_name)
        if not idx.sort().equals(pl.Series(self.idx_name, np.arange(len(idx), dtype=np.int32))):
            raise DataError(f"vocab {self.id_name}: indices are not 0..{len(idx) - 1}")
        if self.table.get_column(self.id_name).n_unique() != len(idx):
            raise DataError(f"vocab {self.id_name}: repeated ids")

    def __len__(self) -> int:
        return self.table.height

    @property
    def has_blocks(self) -> bool:
        return BLOCK in self.table.columns

    @property
    def all_decimal(self) -> bool:
        """Whether every id is known, without a pass over the table, to be a canonical decimal
        (`decimal_codes`): a vocab built by `extend` from decimal codes. False when not known (a
        loaded vocab until `_decimal_entries` parsed it), so checks that look for other spellings
        (`recsys.data.suspicions.float_spelled_twins`) skip only what cannot hold them."""
        return self._codes is not None and self._codes.height == self.table.height

    def extend(self, candidates: pl.DataFrame, order: str | None = None) -> Vocab:
        """A new vocab with every id of `candidates[id_name]` not yet known appended, in order of
        `order` (first appearance) then id, so the result does not depend on row order within ties.
        Old ids keep their index. Vectorised: group-by, anti-join, sort, arange.

        Ids given as decimal codes (CODE_DTYPES) keep their codes beside the new entries, so
        `index` joins them without parsing the vocab's text back (a million-id vocab: ~0.1 s)."""
        dtype = candidates.schema[self.id_name]
        # Group before casting to String: a Categorical (or decimal-code, see `decimal_codes`) id
        # column then groups on 4-byte codes, and only the distinct ids are turned into strings.
        fresh = (
            candidates.lazy()
            .select(pl.col(self.id_name), *([pl.col(order)] if order else []))
            .group_by(self.id_name)
            .agg(pl.col(order).min() if order else pl.len())
        )
        if len(self):
            if dtype in CODE_DTYPES:  # compare values, so no candidate needs its text first
                known = self._decimal_entries(dtype).select(self.id_name)
            else:
                fresh = fresh.with_columns(pl.col(self.id_name).cast(pl.String))
                known = self.table.lazy().select(self.id_name)
            fresh = fresh.join(known, on=self.id_name, how="anti")
        fresh = self._first_appearance_order(fresh.collect(), order)
        start = len(self)
        fresh = fresh.with_columns(pl.int_range(start, start + fresh.height, dtype=pl.Int32).alias(self.idx_name))
        codes = None
        if dtype in CODE_DTYPES:
            new_codes = fresh.select(pl.col(self.id_name).cast(WIDE_CODE_DTYPE), self.idx_name)
            codes = pl.concat([self._decimal_entries(WIDE_CODE_DTYPE).collect(), new_codes])
        fresh = fresh.select(pl.col(self.id_name).cast(pl.String), self.idx_name)
        if self.has_blocks:
            fresh = fresh.with_columns(pl.lit(UNKNOWN_BLOCK, dtype=pl.Int32).alias(BLOCK))
        table = pl.concat([self.table, fresh], how="vertical")
        if codes is None:
            return Vocab(table, id_name=self.id_name, idx_name=self.idx_name)
        return Vocab(table, id_name=self.id_name, idx_name=self.idx_name, codes=codes)

    def _first_appearance_order(self, fresh: pl.DataFrame, order: str | None) -> pl.DataFrame:
        """`fresh` (distinct new ids, with `order` when given) in the order new indices are given:
        by `order`, ties broken by the id's text. Ingest's orders are distinct (one per source
        row), so a one-key numeric sort decides and the text is only compared where ties exist."""
        by_text = pl.col(self.id_name).cast(pl.String)
        threads = sort_in_parallel()  # on one thread beside ingest's writer on 2 cores
        if order is None:
            return fresh.sort(by_text, multithreaded=threads)
        fresh = fresh.sort(order, multithreaded=threads)
        if fresh.height > 1 and fresh.select((pl.col(order).diff() == 0).any()).item():
            fresh = fresh.sort([pl.col(order), by_text], multithreaded=threads)
        return fresh

    def with_blocks(self, labels: pl.DataFrame | None) -> Vocab:
        """Attach block labels from an (id, block) frame: labelled ids take the new label, others keep
        theirs (or -1 when unknown). The id column may be named like the vocab's or be the first."""
        if labels is None:
            return self
        if BLOCK not in labels.columns or labels.width < 2:
            raise DataError(
                f"{self.id_name} labels need an id column and a 'block' column; got {labels.columns}"
            )
        id_col = (
            self.id_name if self.id_name in labels.columns else next(c for c in labels.columns if c != BLOCK)
        )
        given = labels.select(
            pl.col(id_col).cast(pl.String).alias(self.id_name), pl.col(BLOCK).cast(pl.Int32).alias("_new")
        )
        given = given.unique(self.id_name, keep="last", maintain_order=True)
        table = self.table.join(given, on=self.id_name, how="left", maintain_order="left")
        old = pl.col(BLOCK) if self.has_blocks else pl.lit(UNKNOWN_BLOCK, dtype=pl.Int32)
        table = table.with_columns(pl.coalesce("_new", old).alias(BLOCK)).drop("_new")
        return Vocab(table, id_name=self.id_name, idx_name=self.idx_name, codes=self._codes)

    def _decimal_entries(self, dtype: pl.DataType) -> pl.LazyFrame:
        """(id as a `dtype` code, idx) of every entry whose id is a canonical decimal that fits
        `dtype`: what a code column joins against, so "007" in the vocab never matches the id 7.
        Entries added from codes by `extend` are known already; older ones are parsed once."""
        if self._codes is None:
            code, canonical = decimal_codes(pl.col(self.id_name), WIDE_CODE_DTYPE)
            self._codes = self.table.filter(canonical).select(code.alias(self.id_name), self.idx_name)
        entries = self._codes.lazy()
        if dtype != WIDE_CODE_DTYPE:
            entries = entries.filter(pl.col(self.id_name) <= MAX_CODE)
        return entries.select(pl.col(self.id_name).cast(dtype), self.idx_name)

    def index(self, frame: pl.LazyFrame, *, keep_order: bool = True) -> pl.LazyFrame:
        """Replace `id_name` by `idx_name` in `frame` (inner join: ids must be in the vocab).
        A Categorical id column is joined on its codes against the vocab cast to the same type; a
        CODE_DTYPES column (ids that are canonical decimals, see `decimal_codes`) against the vocab
        ids that are canonical decimals (`_decimal_entries`).

        `keep_order=False` lets the rows come out in any order, for a caller that sorts them
        afterwards: keeping `frame`'s order costs the join a second pass (two such joins over the
        2.5M pairs of a 10M-row log: ~0.6 CPU-s against ~0.2)."""
        order = "left" if keep_order else "none"
        dtype = frame.collect_schema().get(self.id_name)
        if dtype in CODE_DTYPES:
            numbers = self._decimal_entries(dtype)
            return frame.join(numbers, on=self.id_name, how="inner", maintain_order=order).drop(self.id_name)
        if dtype == pl.Categorical:
            codes = self.table.lazy().select(pl.col(self.id_name).cast(pl.Categorical), self.idx_name)
            return frame.join(codes, on=self.id_name, how="inner", maintain_order=order).drop(self.id_name)
        return frame.join(
            self.table.lazy().select(self.id_name, self.idx_name),
            on=self.id_name,
            how="inner",
            maintain_order=order,
        ).drop(self.id_name)

    def id_column(self) -> pl.Series:
        """Raw ids ordered by index, as a polars Series (no per-id Python objects)."""
        return self.table.sort(self.idx_name).get_column(self.id_name)

    def ids(self) -> np.ndarray:
        """Raw ids ordered by index: ids()[i] is the id of index i."""
        return self.id_column().to_numpy()

    def blocks(self) -> np.ndarray | None:
        """Block label per index (-1 unknown), or None when no labels were ever given."""
        if not self.has_blocks:
            return None
        return (
            self.table.sort(self.idx_name)
            .get_column(BLOCK)
            .fill_null(UNKNOWN_BLOCK)
            .to_numpy()
            .astype(np.int64)
        )

    def save(self, path: str | Path) -> None:
        write_table(self.table.sort(self.idx_name), Path(path), raw_ids=(), unique=(self.id_name,))

    @classmethod
    def load(cls, path: str | Path, *, id_name: str = "id", idx_name: str = "idx") -> Vocab:
        path = Path(path)
        if not path.is_file():
            return cls(id_name=id_name, idx_name=idx_name)
        try:
            table = pl.read_parquet(path)
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise DataError(f"{path}: unreadable vocab ({exc})") from None
        missing = {id_name, idx_name} - set(table.columns)
        if missing:
            raise DataError(f"{path}: vocab lacks columns {sorted(missing)}")
        return cls(table, id_name=id_name, idx_name=idx_name)
