"""Property: any set of well-formed rows reads back as exactly those interactions, whatever the
export's quoting, separator, line ends, byte-order mark or trailing blank lines (ids that look like
numbers keep their spelling: "007" and "7" stay two users; 64-bit ids stay exact)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recsys.data.ingest import read_canonical


def _enclosed_in_quotes(text: str) -> bool:
    """An id such as `"x"` or `""`, quotes included: where most ids of a column are so enclosed the
    column is read as a file quoted twice and the quotes are removed (README, `_unquoted`; a
    one-row log of item `""` then reads as a missing item), so such ids are not "well-formed" here."""
    return len(text) >= 2 and text[0] == text[-1] == '"'


_TEXT = st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Zl", "Zp"))
_IDS = st.one_of(
    st.text(_TEXT, min_size=1, max_size=6),
    st.integers(0, 2**64 - 1).map(str),
    st.integers(0, 99).map(lambda n: f"{n:03d}"),
).filter(lambda s: s.strip() == s and not _enclosed_in_quotes(s))
_ROWS = st.lists(
    st.tuples(_IDS, _IDS, st.integers(0, 100), st.integers(0, 1_700_000_000)), min_size=1, max_size=6
)
_QUOTING = st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=_ROWS.flatmap(lambda rs: st.lists(st.sampled_from(rs), min_size=1, max_size=8)),
    sep=st.sampled_from([",", ";", "|", "\t"]),
    quoting=_QUOTING,
    eol=st.sampled_from(["\n", "\r\n"]),
    bom=st.booleans(),
    blank_lines=st.integers(0, 2),
)
def test_well_formed_rows_round_trip(tmp_path: Path, rows, sep, quoting, eol, bom, blank_lines) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=sep, quoting=quoting, lineterminator=eol)
    writer.writerows([("user_id", "item_id", "rating", "timestamp"), *rows])
    path = tmp_path / ("log.tsv" if sep == "\t" else "log.csv")
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + (buffer.getvalue() + eol * blank_lines).encode())
    accepted, quarantine, rows_in = read_canonical(path)
    expected = list(dict.fromkeys(rows))  # an exact repeat is quarantined as a duplicate
    assert accepted.select("user_id", "item_id", "weight", "timestamp").rows() == [
        (u, i, float(w), datetime.fromtimestamp(t, UTC)) for u, i, w, t in expected
    ]
    assert rows_in == len(rows) and set(quarantine["reason"]) <= {"duplicate"}
