"""Text that is not UTF-8: a streaming UTF-8 copy for the readers, which read UTF-8 only.

polars reads UTF-8 alone, so a Latin-1 / Windows-1252 log (Book-Crossing's `BX-Book-Ratings.csv`)
or Excel's 'Unicode Text' export (UTF-16 with a byte-order mark) is copied once as UTF-8 into a
staging directory beside the processed output (`.<out>.XXXXXXXX.tmp`, which the writer lock's
`recover` removes should a kill -9 leave it), read from there, and the copy is removed when the
ingest ends. The copy streams in 1 MiB blocks through an incremental decoder, so memory stays
bounded whatever the file's size; line breaks are kept as written, so row numbers are the
original file's. A gzip'd file is copied gzip'd (level 1), under its own name, so a directory's
`source_file` names stay the same.

Nothing changes for UTF-8 (the default): no file is opened here unless it starts with a UTF-16 or
UTF-32 byte-order mark, which says its encoding without doubt, so it is read without being asked
(and as the mark says where `data.encoding` names another: a warning says so).
Messages and warnings that name the copy are rewritten to name the user's file (`Transcoded`).
"""

from __future__ import annotations

import codecs
import contextlib
import gzip
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from recsys.data.readers import SourceListing, list_source, open_decompressed
from recsys.data.readers.base import _PARQUET_SUFFIXES
from recsys.data.remote import as_url
from recsys.data.source_stamp import SourceStamp, changed_error, changed_files, stat_files
from recsys.errors import ConfigError, DataError, RecsysWarning
from recsys.faults import fault_point

_BLOCK = 1 << 20
_BOMS = (  # longest first: UTF-32-LE's mark starts with UTF-16-LE's
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def canonical_encoding(name: str | None) -> str | None:
    """`name` as Python's codec name (`latin1`, `ISO-8859-1` -> `iso8859-1`), None for UTF-8 (the
    readers' own, with or without a BOM: no copy is made); ConfigError for a name that is no text
    encoding (`DataConfig` refuses those too, but a flag's value reaches here unvalidated)."""
    if name is None:
        return None
    try:
        codec = codecs.lookup(name.strip())
    except LookupError:
        codec = None
    if codec is None or not getattr(codec, "_is_text_encoding", True):  # base64, zlib: bytes to bytes
        raise ConfigError(
            f"data.encoding {name!r}: not a text encoding Python knows; use a codec name such as latin-1, "
            "cp1252, utf-16 or shift_jis",
            setting="data.encoding",
            value="latin-1",
        )
    return None if codec.name in ("utf-8", "utf-8-sig") else codec.name


def bom_encoding(path: Path) -> str | None:
    """The encoding a UTF-16 / UTF-32 byte-order mark at the start of `path` names, else None."""
    try:
        with open_decompressed(path) as fh:
            head = fh.read(4)
    except (OSError, EOFError):
        return None  # the readers say what is wrong with it
    return next((name for bom, name in _BOMS if head.startswith(bom)), None)


def _is_text(path: Path) -> bool:
    return not path.name.lower().endswith(_PARQUET_SUFFIXES)


def _file_encoding(path: Path, encoding: str | None, named: str | None = None) -> str | None:
    """The encoding `path` is copied from: its UTF-16 / UTF-32 byte-order mark's, else `encoding`
    (text only; None: read as it is). The mark wins over the setting: a config's latin-1 for a
    landing zone where one day came as Excel's 'Unicode Text' read that file as 'ÿþ' and NUL bytes,
    and ingest called it binary content, not text. `named`: the setting as the user spelled it."""
    bom = bom_encoding(path)
    if bom is not None and encoding is not None and not encoding.startswith(bom):
        warnings.warn(
            RecsysWarning(
                f"{path} starts with a {bom.upper()} byte-order mark: read as {bom.upper()}, not as {named or encoding} "
                "(data.encoding), which the mark rules out"
            ),
            stacklevel=3,
        )
    return bom or (encoding if encoding and _is_text(path) else None)


def _copy_as_utf8(source: Path, target: Path, encoding: str) -> None:
    """Stream `source` (gzip'd or not) decoded from `encoding` into `target` as UTF-8 (gzip'd when
    the source is); a byte sequence the encoding does not define is a DataError naming its line."""
    gzipped = source.name.lower().endswith(".gz")
    decoder = codecs.getincrementaldecoder(encoding)("strict")
    # Whether the bytes are UTF-8 with some non-ASCII text all the same: such a file named Latin-1
    # (a config's data.encoding kept for a file re-exported as UTF-8) would read `é` as `Ã©`.
    utf8: codecs.IncrementalDecoder | None = codecs.getincrementaldecoder("utf-8")("strict")
    ascii_only = True
    line = 1
    with open_decompressed(source) as fh, (
        gzip.open(target, "wb", compresslevel=1) if gzipped else target.open("wb")
    ) as out:
        while True:
            block = fh.read(_BLOCK)
            try:
                text = decoder.decode(block, final=not block)
            except UnicodeDecodeError as exc:
                # exc.object may start with bytes held over from the block before: close enough to
                # count lines by (a held-over byte is never a newline in the encodings users name).
                line += exc.object.count(b"\n", 0, exc.start)
                bad = exc.object[exc.start : exc.end].hex(" ")
                raise DataError(
                    f"{source}: not {encoding} text: bytes {bad} at line {line} ({exc.reason}); name the "
                    "file's encoding with {option} (latin-1 reads any byte)",
                    setting="data.encoding",
                    value="latin-1",
                ) from None
            out.write(text.encode("utf-8"))
            if utf8 is not None and not encoding.startswith("utf"):
                ascii_only = ascii_only and block.isascii()
                try:
                    utf8.decode(block, final=not block)
                except UnicodeDecodeError:
                    utf8 = None
            if not block:
                break
            line += block.count(b"\n")
    if utf8 is not None and not ascii_only and not encoding.startswith("utf"):
        warnings.warn(
            RecsysWarning(
                f"{source} is valid UTF-8 with non-ASCII text, yet read as {encoding} (data.encoding), so its "
                "accented letters became two characters each ('é' as 'Ã©'): drop data.encoding for this file"
            ),
            stacklevel=3,
        )


@dataclass
class Transcoded:
    """Where the readers read `source` from (`path`: the source itself, or its UTF-8 copy) and
    `rename`, which puts the user's path back into a message that names the copy."""

    source: str | Path
    path: str | Path

    @property
    def copied(self) -> bool:
        return str(self.path) != str(self.source)

    def rename(self, text: str) -> str:
        return text.replace(str(self.path), str(self.source)) if self.copied else text

    @contextlib.contextmanager
    def naming_source(self) -> Iterator[None]:
        """Errors and warnings raised inside name the user's file, not the copy."""
        if not self.copied:
            yield
            return
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                yield
        except DataError as exc:
            if exc.args:
                exc.args = (self.rename(str(exc.args[0])), *exc.args[1:])
            raise
        finally:  # outside the catch: re-warned where the caller's filters and handlers apply
            for w in caught:
                message = w.message
                if isinstance(message, Warning) and message.args:
                    message = type(message)(self.rename(str(message.args[0])))
                warnings.warn_explicit(message, w.category, w.filename, w.lineno)


@contextlib.contextmanager
def utf8_source(source: str | Path, encoding: str | None, out_dir: Path) -> Iterator[Transcoded]:
    """`source` readable as UTF-8: itself when it is (the default, unless a file starts with a
    UTF-16 / UTF-32 byte-order mark), else a copy in a staging directory beside `out_dir`,
    removed on leaving. Call with `out_dir`'s writer lock held (its `recover` removes a copy
    a kill left behind). A directory's data files are copied (text) or linked (Parquet) under
    their own relative names, and so are the files it does not read (`warn_unread` names them)."""
    named, encoding = encoding, canonical_encoding(encoding)
    if as_url(source) is not None or not Path(source).exists():
        yield Transcoded(source, source)  # remote text is refused by the readers anyway
        return
    path = Path(source)
    listing = list_source(path) if path.is_dir() else SourceListing([path], [])
    plan = {f: _file_encoding(f, encoding, named) for f in listing.files}
    plan.update(dict.fromkeys(listing.unread))  # linked too, so the readers' warning names them
    if not any(plan.values()):
        yield Transcoded(source, source)
        return
    before = SourceStamp(None, stat_files(listing.files))  # ingest's own stamp is taken after the copy
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        root = tmp / path.name
        for file, file_encoding in plan.items():
            target = root / file.relative_to(path) if path.is_dir() else root
            target.parent.mkdir(parents=True, exist_ok=True)
            if file_encoding:
                _copy_as_utf8(file, target, file_encoding)
            else:
                os.symlink(file.resolve(), target)
        fault_point("encoding.copied")
        if changed := changed_files(before, path):  # written to while copied: the copy is not the file
            raise changed_error(source, changed)
        yield Transcoded(source, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
