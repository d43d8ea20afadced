"""Delimited text (CSV, TSV, `::` MovieLens files, RecBole `.inter`, one-space files): a header
or position mapping per file, the lazy read of every mapped column as text, and the typed read
(`RawSource.typed`) that validation keeps only when a `ByteLayout` proves it lost nothing.

Rows are numbered by position after the read (a row index in the streaming scan cost ~15% of
the read). Each file of a directory is read with its own separator (monthly exports change it),
and a header whose separator the rows below it do not share is refused, naming the rows' one.
"""

from __future__ import annotations

import codecs
import csv
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

import polars as pl

from recsys.config import ColumnMap
from recsys.data.readers.base import (
    _EXTRA,
    _MAP_FIELDS,
    _POSITIONAL,
    _SNIFF_BYTES,
    AUTO_NAMES,
    EXTRA_FIELDS,
    READ_ERROR,
    ROW,
    ByteLayout,
    DataFile,
    RawSource,
)
from recsys.data.readers.frames import (
    _concat,
    _local,
    _same_roles,
    _select,
    _unmapped_files,
    first_error_line,
    open_decompressed,
)
from recsys.data.readers.naming import _head_rows, _headerless_hint, _suggested_names, map_columns
from recsys.data.readers.parquet_files import PARTITION_DAY, folder_days
from recsys.data.readers.sniff import (
    _CSV_SEPARATORS,
    _QUOTED,
    _base_name,
    _csv_separator,
    _hash_header,
    _head_lines,
    _header_lines,
    _is_number,
    _looks_like_data,
    _read_head,
    _some,
    data_files,
)
from recsys.data.readers.time_parts import combine, combined_name, date_and_clock, date_parts
from recsys.data.schema import ITEM, TIME, USER
from recsys.errors import DataError, NoDataRows


def _csv_header(path: Path, separator: str, quote: str | None) -> list[str]:
    try:
        return (
            pl.scan_csv(
                path, separator=separator, has_header=True, infer_schema=False, quote_char=quote, n_rows=0
            )
            .collect_schema()
            .names()
        )
    except pl.exceptions.PolarsError as exc:
        raise DataError(f"{path}: cannot read header ({first_error_line(exc)})") from None


def _scan_delimited(
    path: Path,
    separator: str,
    has_header: bool,
    quote: str | None,
    new_columns: list[str] | None = None,
    numbered: bool = False,
    dtypes: dict[str, pl.DataType] | None = None,
    header: tuple[str, ...] = (),
) -> pl.LazyFrame:
    """Every field as text, except the columns `dtypes` names (by source or given name), which
    polars' CSV parser reads as those types, raising on a value it cannot read. numbered=True adds
    ROW in the scan; delimited files leave it out (see `number_rows`) because a row index costs the
    streaming CSV read ~15% more.

    A row with more fields than the header fails the read (polars raises), so it is never cut
    short without a word; rows with fewer fields are padded with nulls. `header` (the file's
    columns) asks for the rebuild that validation then reads instead (`RawSource.exact`): all
    text, such rows kept whole enough to be quarantined, the first field past the header in
    `_EXTRA` (for `::` files, past the empty field between the two colons)."""
    dtypes = dtypes or {}
    schema = None
    if header:
        gap = ("_gap_extra",) if any(name.startswith("_gap_") for name in header) else ()
        schema = dict.fromkeys((*header, *gap, _EXTRA), pl.String())
        return pl.scan_csv(
            path, separator=separator, has_header=False, skip_rows=1 if has_header else 0, schema=schema,
            quote_char=quote, truncate_ragged_lines=True, missing_columns="insert",
        ).drop(gap)  # fmt: skip
    # Headerless and typed: a schema names and types every field at once. Rows with too few
    # fields read as on the text route (padded with nulls), and the byte proof fails on them (a
    # null last column). A header renamed by `new_columns` (`#user,...`) takes the overrides
    # under its new names instead: a schema would be checked against the header's own.
    if new_columns is not None and dtypes and not has_header:
        schema, new_columns = {name: dtypes.get(name, pl.String()) for name in new_columns}, None
    return pl.scan_csv(
        path,
        separator=separator,
        has_header=has_header,
        infer_schema=False,
        schema=schema,
        schema_overrides=dtypes if has_header and dtypes else None,
        quote_char=quote,
        row_index_name=ROW if numbered else None,
        row_index_offset=1,
        truncate_ragged_lines=False,
        new_columns=new_columns,
    )


def _extra_fields() -> pl.Expr:
    """READ_ERROR of a rebuilt delimited row: EXTRA_FIELDS where a field past the header holds
    text (a trailing separator, or one followed by spaces only, loses nothing)."""
    found = pl.col(_EXTRA).str.strip_chars() != ""
    return pl.when(found).then(pl.lit(EXTRA_FIELDS)).otherwise(pl.lit(None, dtype=pl.String)).alias(READ_ERROR)


@dataclass(frozen=True)
class _TextFile:
    """How one delimited file is scanned: enough to scan it again with some columns typed."""

    file: DataFile
    separator: str
    has_header: bool
    quote: str | None
    names: list[str] | None  # headerless files: the names given to the fields
    mapping: dict[str, str]
    columns: tuple[str, ...]  # every column of the file: its header, or `names`
    time_parts: tuple[str, ...] = ()  # the columns the time is combined from (see `time_parts`)

    def scan(self, dtypes: dict[str, pl.DataType], rebuild: bool = False) -> pl.LazyFrame:
        """The file's read (`rebuild`: the all-text rebuild that finds rows with extra fields)."""
        by_source = {self.mapping[canon]: dtype for canon, dtype in dtypes.items()}
        frame = _scan_delimited(
            _local(self.file), self.separator, self.has_header, self.quote, self.names, dtypes=by_source,
            header=self.columns if rebuild else (),
        )  # fmt: skip
        return frame.with_columns(combine(self.time_parts)) if self.time_parts else frame


def _positional(file: DataFile, separator: str, first_line: str) -> _TextFile:
    """Headerless files (u.data, ratings.dat, numeric CSV): columns are user, item[, rating[, time]]."""
    if separator == "::":
        # polars needs a one-byte separator: split on ':' and keep every other field (the odd
        # ones are the empty strings between the two colons).
        n_fields = first_line.count("::") + 1
        names = [f"field_{i // 2}" if i % 2 == 0 else f"_gap_{i // 2}" for i in range(2 * n_fields - 1)]
    else:
        n_fields = len(first_line.split(separator))
        names = [f"field_{i}" for i in range(n_fields)]
    if n_fields < 2:
        raise DataError(
            f"{_local(file)}: expected at least user and item columns separated by {separator!r}, found one column"
        )
    mapping = dict(zip(_POSITIONAL, [f"field_{i}" for i in range(n_fields)], strict=False))
    if n_fields == 3 and _UNIX_TIME.match(first_line.split(separator)[2].strip()):
        # `user item time` (Behance's appreciates, a check-in log without places): the third field
        # is a Unix time in seconds or milliseconds, not a rating (it was read as weights of ~1.3e9).
        mapping = {USER: "field_0", ITEM: "field_1", TIME: "field_2"}
    return _TextFile(file, ":" if separator == "::" else separator, False, None, names, mapping, tuple(names))


_UNIX_TIME = re.compile(r"^[1-9](?:\d{9}|\d{12})$")  # 2001-2286 in seconds, or in milliseconds


_KNOWN_NAMES = frozenset(name for names in AUTO_NAMES.values() for name in names)


def _is_header(line: str, separator: str) -> bool:
    """Whether `line`, a file's first line, is a header: no field is a number or a date
    (`_looks_like_data`) and one names a role as AUTO_NAMES spell it (`user_id`, `#userId`), so a
    headerless file's first row of text ids (`u7,i3`) is not taken for one."""
    fields = [f.strip().strip('"').lstrip("#").strip() for f in line.split(separator)]
    named = [f for f in fields if f]  # an empty name is allowed: pandas' index column has one
    return not _looks_like_data(named) and any(_base_name(f) in _KNOWN_NAMES for f in named)


def _refuse_many_fields(file: DataFile, separator: str, first_line: str) -> None:
    """DataError for a headerless file of more than four fields. Read by position, LFM-1b's
    `user artist album track time` took the album for the rating and the track for the time, and
    Epinions' `user product category rating helpfulness time` the category for the rating: by
    position, only u.data's two to four are known."""
    row = [v.strip() for v in first_line.split(separator)]
    n_fields = len(row)
    if n_fields > len(_POSITIONAL):
        rows = _head_rows(_local(file), separator)
        raise DataError(
            f"{_local(file)}: no header line and {n_fields} fields ({first_line.strip()[:60]!r}): a headerless "
            f"file is read by position only with 2 to 4 fields (user, item[, rating[, timestamp]], as in u.data), "
            f"so which of these is the item, the rating and the time is unknown; "
            f"{_headerless_hint(row, separator, _local(file), rows)}",
            setting="data.header",
            value=",".join(_suggested_names(row, rows)),
        )


def _refuse_column_options(
    label: Path | str, first_path: Path, first: str, separator: str, columns: ColumnMap | None
) -> None:
    """DataError for a column option (`--weight-col`, `data.columns.*`) given for a headerless file
    read by position: its columns have no names, so the option named none and was ignored without
    a word (`--weight-col column_4` on ML-10M's `tags.dat`, `user::movie::tag::time`, still read the
    tag as the rating, and the error that followed asked for `--weight-col NAME` again). Naming
    the fields with data.header makes the options apply."""
    named = {attr: getattr(columns, attr) for attr in _MAP_FIELDS.values()} if columns else {}
    given = [f"{{option:data.columns.{attr}={value}}}" for attr, value in named.items() if value is not None]
    if not given:
        return
    row = _split_line(first, separator)
    raise DataError(
        f"{label}: has no header line (its first line is data: {first.strip()[:60]!r}), so its columns are read "
        f"by position (user, item[, rating[, timestamp]]) and have no names for {', '.join(given)} "
        "to pick: name its fields with {option} (one name per field, in order; rename each to "
        "what it holds), which the column options then map from, or leave the options out",
        setting="data.header",
        value=",".join(_suggested_names(row, _head_rows(first_path, separator))),
    )


def _positional_files(
    label: Path | str, files: list[DataFile], separator: str, first: str
) -> list[_TextFile]:
    """Headerless files, each laid out by its own first line; files of one source must have the
    same number of fields, or a directory such as an unzipped MovieLens 1M (ratings.dat beside
    users.dat and movies.dat, all `::`-separated) would fail deep in the read, or worse, mix
    user or movie records into the ratings."""
    texts = [_positional(files[0], separator, first)]
    for f in files[1:]:
        lines = _head_lines(_local(f), _read_head(_local(f)))
        if lines and _is_header(lines[0], separator):
            raise DataError(
                f"{_local(f)}: starts with a header line ({lines[0][:80]!r}) while {files[0].name} of the same "
                f"source has none (its first line is data: {first[:60]!r}), so its columns would be taken by "
                "position and its header read as a row: files of one source must all have a header line, "
                "or none; if the others' columns come in that order, name them with {option} (a file whose "
                "first line is those names reads it as its header), or add that header line to them (e.g. "
                f"`sed -i '1i {lines[0]}' FILE`), or "
                "ingest the file on its own with --append",
                setting="data.header",
                value=_header_value(_split_line(lines[0], separator)),
            )
        texts.append(_positional(f, separator, lines[0] if lines else first))
    shapes: dict[int, list[str]] = {}
    for t in texts:
        shapes.setdefault(len(t.columns), []).append(t.file.name)
    if len(shapes) > 1:
        n_fields = {n if separator != "::" else (n + 1) // 2: names for n, names in shapes.items()}
        listing = "; ".join(f"{n} fields: {_some(names)}" for n, names in n_fields.items())
        raise DataError(
            f"{label}: its headerless files have different numbers of fields ({listing}), so they are "
            "not all interaction logs; ingest the interaction file on its own (e.g. ratings.dat), "
            "or move the others out"
        )
    _refuse_many_fields(files[0], separator, first)
    return texts


def _colon_header_files(label: Path | str, files: list[DataFile], columns: ColumnMap | None) -> list[_TextFile]:
    """`::` files whose first line names the columns (`user_id::item_id::rating::timestamp`, as
    exports of ML-1M-shaped logs often add): each file's header is mapped like a CSV header. The
    file is split on ':' as for headerless ones, so a name may not hold a ':' itself."""
    texts, unmapped = [], []
    for f in files:
        lines = _header_lines(_local(f))
        header = [name.strip() for name in lines[0].split("::")] if lines else []
        if not header or _looks_like_data(header) or any(":" in name for name in header):
            raise DataError(
                f"{_local(f)}: a `::`-separated file whose first line is neither a header of plain "
                f"names nor a data row ({(lines or [''])[0][:60]!r}); files of one source must all have "
                "a header line, or none"
            )
        try:
            mapping = map_columns(_local(f), header, columns, separator="::")
        except DataError as exc:
            unmapped.append((f, exc))
            continue
        names = [header[i // 2] if i % 2 == 0 else f"_gap_{i // 2}" for i in range(2 * len(header) - 1)]
        texts.append(_TextFile(f, ":", True, None, names, mapping, tuple(names)))
    if unmapped:
        raise _unmapped_files(label, unmapped, [(t.file, t.mapping) for t in texts])
    _same_roles(label, [(t.file, t.mapping) for t in texts])
    return texts


def _header_value(names: list[str]) -> str:
    """`names` as data.header's comma-separated value, an empty one (pandas' index column) named
    by its position, so the value the message gives is one the setting takes."""
    return ",".join(name or f"column_{n + 1}" for n, name in enumerate(names))


def _split_line(line: str, separator: str) -> list[str]:
    """A delimited line's fields, quotes read as CSV reads them (Steam's `"The Elder Scrolls V
    Skyrim"`), so a separator inside a quoted field does not count; `::` split as it is."""
    if separator == "::":
        return [f.strip() for f in line.split("::")]
    return [f.strip() for f in next(csv.reader([line], delimiter=separator, quotechar='"'), [])]


def _named_files(
    label: Path | str, files: list[DataFile], separator: str, header: list[str], columns: ColumnMap | None
) -> list[_TextFile]:
    """Files read under the names data.header gives their fields (a headerless YOOCHOOSE, Last.fm
    or Taobao log left as it is: read-only, in a landing directory, gzip'd). Each file of a
    directory is checked on its own: a first line that spells those names (compared as column
    names are) is the file's header and is skipped; one that reads as another header (plain names,
    no number or date, naming a role or one of the given names) is refused rather than read as a
    row; a first line of another number of fields is refused, naming both counts and the line."""
    given = [_base_name(name) for name in header]
    colons = separator == "::"
    names = [header[i // 2] if i % 2 == 0 else f"_gap_{i // 2}" for i in range(2 * len(header) - 1)] if colons else header
    shapes = []
    for f in files:
        lines = _header_lines(_local(f))
        first = lines[0] if lines else ""
        fields = _split_line(first, separator) if first else []
        own = [_base_name(field.lstrip("#")) for field in fields]
        has_header = own == given
        if fields and not has_header and not _looks_like_data(fields):
            if _is_header(first, separator) or set(own) & set(given):
                raise DataError(
                    f"{_local(f)}: starts with a header line ({first[:80]!r}) other than the names data.header "
                    f"gives ({','.join(header)}), which would be read as a row: leave data.header unset to read "
                    "the file's own header, or give its names in its order"
                )
        if fields and len(fields) != len(header):
            raise DataError(
                f"{_local(f)}: data.header gives {len(header)} names ({','.join(header)}) but the file's first line "
                f"has {len(fields)} fields ({first[:80]!r}): give one name per field, in order"
            )
        shapes.append((f, has_header))
    mapping = map_columns(label, header, columns)  # after the counts: a name short is no missing role
    sep, quote = (":", None) if colons else (separator, '"')
    return [_TextFile(f, sep, has_header, quote, list(names), mapping, tuple(names)) for f, has_header in shapes]


def _scan_text(
    label: Path | str,
    files: list[DataFile],
    fmt: str,
    columns: ColumnMap | None,
    per_file: bool,
    header: list[str] | None = None,
) -> RawSource:
    first_path = _local(files[0])
    lines = _header_lines(first_path)
    if not lines:
        raise NoDataRows(f"{label}: empty file")
    first = lines[0]
    notes: list[str] = []  # for ingest's warnings
    if fmt == "movielens-dat":
        if "::" not in first:
            raise DataError(f"{label}: format movielens-dat expects 'user::item::rating::timestamp' lines")
        if header is not None:
            texts = _named_files(label, files, "::", header, columns)
        elif _looks_like_data(first.split("::")):
            _refuse_column_options(label, first_path, first, "::", columns)
            texts = _positional_files(label, files, "::", first)
        else:
            texts = _colon_header_files(label, files, columns)
    else:
        # A directory's files may be `.csv` and `.tsv` months (`_one_format`): a tab is each one's
        # separator there, while a single file forced to csv keeps to `, ; |` or a space.
        separator = "\t" if fmt in {"tsv", "movielens", "recbole"} else (_delimiter if per_file else _csv_separator)(lines)
        _same_separator(label, lines, separator)
        fields = first.split(separator)
        headerless = header is None and (
            fmt == "movielens" or (fmt in {"csv", "tsv"} and len(fields) >= 2 and all(_is_number(f) for f in fields))
        )
        if headerless:
            if len(fields) < 2:
                raise DataError(
                    f"{label}: format {fmt} expects {separator!r}-separated columns, found one column"
                )
            _refuse_column_options(label, first_path, first, separator, columns)
            texts = _positional_files(label, files, separator, first)
        elif header is not None:
            texts = _named_files(label, files, separator, header, columns)
        else:
            # Each file's own header is mapped, so files whose columns come in another order (or
            # under another recognised name) still line up; files missing a role are named.
            texts, unmapped = [], []
            for f in files:
                own = separator if f is files[0] or fmt != "csv" else _file_separator(_local(f), label)
                header = _csv_header(_local(f), own, '"')
                # A `#user,item` header: its first name is read without the '#'.
                names = None
                if header[0].startswith("#") and _hash_header(_head_lines(_local(f), _read_head(_local(f)))):
                    names = header = [header[0].lstrip("#").strip(), *header[1:]]
                try:
                    mapping = map_columns(_local(f), header, columns, separator=own)
                except DataError as exc:
                    # A header that does not map and reads as data, as wide as the first file's:
                    # a month exported without its header line (an empty name alone, pandas'
                    # index column, maps and is no sign of one).
                    if texts and _looks_like_data(header) and len(header) == len(texts[0].columns):
                        raise DataError(
                            f"{_local(f)}: has no header line (its first line looks like data: "
                            f"{(_header_lines(_local(f)) or [''])[0][:60]!r}) while {texts[0].file.name} of the "
                            "same source starts with one; files of one source must all have a header line, or "
                            "none: if its columns are the same, name them with {option} (a file whose first line "
                            "is those names reads it as its header), or add that line first (`sed -i "
                            f"'1i {own.join(texts[0].columns)}' FILE`), or ingest the file on its own with --append",
                            setting="data.header",
                            value=_header_value(list(texts[0].columns)),
                        ) from None
                    unmapped.append((f, exc))
                    continue
                parts = _time_parts(_local(f), header, mapping, columns, own)
                if parts:
                    mapping = {**mapping, TIME: combined_name(parts)}
                texts.append(_TextFile(f, own, True, '"', names, mapping, tuple(header), parts))
                notes.extend(_repeated_names(_local(f), header, mapping))
                notes.extend(_unread_sequences(_local(f), header, mapping))
            if unmapped:
                raise _unmapped_files(label, unmapped, [(t.file, t.mapping) for t in texts])
            _same_roles(label, [(t.file, t.mapping) for t in texts])

    # Files without a time of their own filed under day folders (`dt=2024-01-01/`): that day.
    days = folder_days(label, [t.file for t in texts], texts[0].mapping, per_file)

    def dated(t: _TextFile) -> tuple[pl.Expr, ...]:
        return (pl.lit(days[t.file.name], dtype=pl.String).alias(TIME),) if days else ()

    def scan(dtypes: dict[str, pl.DataType]) -> pl.LazyFrame:
        return _concat([_select(t.scan({c: d for c, d in dtypes.items() if c in t.mapping}), t.mapping, t.file,
                                per_file, dated(t), numbered=False) for t in texts])  # fmt: skip

    def rebuild() -> pl.LazyFrame:
        return _concat(
            [_select(t.scan({}, True), t.mapping, t.file, per_file, (_extra_fields(), *dated(t)), False) for t in rebuilt]
        )

    # When the read fails, validation reads the rebuild instead (and only then): rows with more
    # fields than the header are quarantined as EXTRA_FIELDS, not cut short. Tab-separated logs
    # rarely quote, but their text fields may start with a quote (Last.fm's `"Weird Al"
    # Yankovic`), which polars' quoted read refuses for the whole file: their rebuild reads
    # quotes as plain text.
    tab_quoted = all(t.separator == "\t" and t.quote is not None for t in texts)
    rebuilt = [replace(t, quote=None) for t in texts] if tab_quoted else texts
    # polars checks a row's field count only when every column is read, and the empty `_gap_`
    # columns of a `::` file never are: `1::10::5::978300760::x` would lose its fifth field
    # without a word. Such files are read through the rebuild from the start; its one column past
    # the last finds the rows (about the cost of the plain read on a 3M-row ratings.dat).
    colons = fmt == "movielens-dat"
    separators = {t.separator for t in texts}
    return RawSource(
        label,
        fmt,
        rebuild() if colons else scan({}),
        {**texts[0].mapping, TIME: PARTITION_DAY} if days else texts[0].mapping,
        per_file,
        exact=None if colons else rebuild,
        positional_rows=True,
        typed=None if days else scan,
        layout=None if days else _byte_layout(texts),
        separator=next(iter(separators)) if len(separators) == 1 else None,
        comma_files=tuple(t.file.name for t in texts if t.separator == ";") if len(separators) > 1 else (),
        notes=notes,
        header=tuple(header) if header is not None else texts[0].columns if texts[0].has_header else (),
    )


def _time_parts(
    path: Path, header: list[str], mapping: dict[str, str], columns: ColumnMap | None, separator: str
) -> tuple[str, ...]:
    """The columns a time is combined from (HetRec's `date_day ... date_second`; a `date` beside a
    `time` of day), none where a time column was named with --time-col (data.columns.time)."""
    if columns is not None and columns.time is not None:
        return ()

    def rows() -> list[list[str]]:
        return [_split_line(line, separator) for line in _header_lines(path)[1:200] if line.strip()]

    return date_parts(header, mapping) or date_and_clock(header, mapping, rows)


def _file_separator(path: Path, label: Path | str) -> str:
    """The separator of one headed file of a delimited source, from its own first lines: monthly
    exports change it (a `;` month from a decimal-comma locale's spreadsheet beside `,` months;
    a `.tsv` month beside `.csv` ones), and read with the first file's, such a file's header was
    one column, refused as if the file were no interaction log (`_delimiter`)."""
    lines = _header_lines(path)
    if not lines:
        return ","
    separator = _delimiter(lines)
    _same_separator(path, lines, separator)
    return separator


def _delimiter(lines: list[str]) -> str:
    """A headed delimited file's separator: a tab when its first line holds one and none of
    `, ; |` outside quotes (a `.tsv` month of a source read as CSV), else `_csv_separator`."""
    bare = _QUOTED.sub("", lines[0])
    return "\t" if "\t" in bare and not any(s in bare for s in _CSV_SEPARATORS) else _csv_separator(lines)


def _same_separator(label: Path | str, lines: list[str], separator: str) -> None:
    """DataError when the header line is split by `separator` but none of the rows below it is,
    while they all hold another one (a `user_id,item_id,rating` line added by hand on top of
    Book-Crossing's `"43842";"0739432540";"0"` rows): every row would be one field, and the error
    would be a missing item column, pointing away from the line to fix."""
    rows = [_QUOTED.sub("", row) for row in lines[1:21]]
    if not rows or separator not in _QUOTED.sub("", lines[0]) or any(separator in row for row in rows):
        return
    other = next((sep for sep in ("\t", ";", "|", ",") if sep != separator and all(sep in row for row in rows)), None)
    if other is not None:
        raise DataError(
            f"{label}: the header line is split by {separator!r} but the rows by {other!r} "
            f"({lines[0][:60]!r} over {lines[1][:60]!r}): write the header line with {other!r} "
            "between the names, as the rows are"
        )


def _repeated_names(path: Path, header: list[str], mapping: dict[str, str]) -> list[str]:
    """A note for each column read for a role whose name the header line has more than once
    (a Last.fm 1K export headed `user timestamp artist_id artist artist_id song`): polars reads
    the first and renames the others `<name>_duplicated_<n>`, a name in no file, so the choice
    would go unseen and the others could not be named with a column option."""
    notes = []
    for canon, source in mapping.items():
        positions = [i + 1 for i, name in enumerate(header) if name == source or name.startswith(f"{source}_duplicated_")]
        if len(positions) > 1:
            notes.append(
                f"{path}: the header names {len(positions)} columns {source!r} (columns "
                f"{', '.join(map(str, positions))}); column {positions[0]} is read as the {_MAP_FIELDS[canon]}: "
                "to read another, rename it in the header line and name it with the column option"
            )
    return notes


def _unread_sequences(path: Path, header: list[str], mapping: dict[str, str]) -> list[str]:
    """A note for each RecBole `:token_seq` column of a header that is not read: a sequential
    data set's `item_id_list:token_seq` holds each row's earlier items, and reading the row as its
    session and target item alone leaves all of those out without a word."""
    read = set(mapping.values())
    lists = [name for name in header if name.strip().endswith(":token_seq") and name not in read]
    if not lists:
        return []
    return [
        f"{path}: {', '.join(repr(name) for name in lists)} hold(s) a list of ids per row (a RecBole "
        "sequential file), which is not read: each row is read as its user and item alone; for every "
        "interaction, ingest the data set's flat .inter file (one user, item and time per line)"
    ]


def _byte_layout(texts: list[_TextFile]) -> ByteLayout | None:
    data_bytes, shapes, files = 0, set(), []
    for text in texts:
        if len(text.mapping) != len(text.columns) or set(text.mapping.values()) != set(text.columns):
            return None  # an unmapped column's bytes would go uncounted
        with _local(text.file).open("rb") as fh:
            head = fh.read(_SNIFF_BYTES)
            end = head.find(b"\n")
            if head[:2] == b"\x1f\x8b" or end < 0 or head[:end].endswith(b"\r"):
                return None  # compressed, one long line, or CRLF line ends
            stat = os.fstat(fh.fileno())
            size = stat.st_size
            fh.seek(size - 1)
            final_lf = fh.read(1) == b"\n"
        files.append((str(_local(text.file)), size, stat.st_mtime_ns))
        data_bytes += size - (end + 1 if text.has_header else 0) + (0 if final_lf else 1)
        last = next(canon for canon, source in text.mapping.items() if source == text.columns[-1])
        shapes.add((len(text.columns), last))
    if len(shapes) != 1:
        return None
    ((columns, last),) = shapes
    return ByteLayout(data_bytes, columns, last, tuple(files))


def first_non_utf8(source: Path | str) -> str | None:
    """Where the first byte that is not UTF-8 stands in `source` (a file, or a directory's data
    files in read order): `b.csv line 8002 (byte 0xe9)`, or None. For the error of a read that
    failed on one past the sniffed head, so the user can find it in a large file; one pass over
    the files, on that error path only."""
    path = Path(source)
    if not path.exists():
        return None
    for file in data_files(path) if path.is_dir() else [path]:
        decoder, line = codecs.getincrementaldecoder("utf-8")(), 1
        with open_decompressed(file) as fh:
            while block := fh.read(1 << 20):
                try:
                    decoder.decode(block)
                except UnicodeDecodeError as exc:  # exc.object: the block after the bytes held over
                    line += exc.object.count(b"\n", 0, exc.start)
                    name = file.relative_to(path).as_posix() if path.is_dir() else file.name
                    return f"{name} line {line} (byte {exc.object[exc.start]:#x})"
                line += block.count(b"\n")
    return None
