"""Ingest throughput and memory vs a bare polars CSV -> Parquet conversion of the same file.

The reference is the least any ingest must do: `pl.read_csv(...).write_parquet(...)`. `recsys` ingest
additionally reads every column as text (so bad values can be quarantined), parses and checks each row,
finds exact duplicates, aggregates (user, item) pairs, builds the vocab and writes the indexed table,
the batch and the manifest. Each side runs in its own subprocess so its peak RSS (VmHWM) is its own;
sides alternate so drifting machine load hits both. Targets: time ratio <= 2.0, 10M-row peak RSS <= 4 GB.
`RECSYS_BENCH_ROWS` shrinks the generated file (default 10,000,000 rows).

Real shapes (`SHAPES`): besides the main file, 3M- and 10M-row logs with the MovieLens header
(`user_id,item_id,rating,timestamp`) and integer (`4`), float (`4.0`) and half-star (`4.5`)
ratings, with ids either numbered below the user / item count (as MovieLens) or raw Zipf draws,
which reach 64 bits (as hashed or 64-bit ids do); target <= 2.0 at 10M rows for every shape. At 3M
rows the fixed costs weigh more, and the ratio is reported as measured. `RECSYS_BENCH_SHAPE_ROWS`
(comma-separated, default `3000000,10000000`) changes the sizes; an empty value skips the shapes.

Where the time goes (10M rows, 2-core machine; `RECSYS_BENCH_ROWS=2000000` for quick iterations): the
reference is about 45% CSV parse and 55% zstd Parquet write. Ingest once spent 4x the reference:
parsing and stripping text ids, a row hash over strings, casting ids to Categorical, a (user, item)
group-by that gathered `first()` ids, and writing the batch with string ids and statistics. Since
then, in order: decimal ids travel as their UInt32 value and integer Unix times parse as integers
(both checked on every row), the pair group-by reads ids back from its u64 key, the batch stores the
codes (lz4, no statistics), the integer-time parse uses one `when` chain, the duplicate check sorts a
32-bit row hash, and a background thread writes files while the main thread derives. Then: delimited
files are numbered by position after the read (a row index in the streaming CSV scan cost ~15% of
the read); a plain-integer log is read typed (ids UInt32, time / weight Int64), which makes the read
as cheap as the reference's and skips ~0.3 s of string parsing, kept only when a byte count proves
every field was spelled plainly; the per-row reason is a 1-byte Enum instead of a mostly-null String
column (160 MB on 10M rows); repeated hashes are found with a 1 MB table (since replaced, below); the fingerprint hashes each
distinct id once; pairs take their first-appearance order from the source row instead of a
materialised position column. Then, for the real shapes: the vocab keeps the codes of the ids it adds
(no text round trip to index the pairs, no self-check of a table it built, a one-key sort by first
appearance), 64-bit ids of which most fit 32 bits get stand-in 4-byte codes so their pairs group on
one u64 key, the typed-read proof compares 32-bit copies, and the batch, the implicit table and the
vocab are written through pyarrow with per-column encodings (no compression of numbers; polars'
writer dictionary-encoded the id columns, its costliest step), on two writer threads. What remains
(a one-off profile of ingest's progress stages, timed through its `progress` callback: wall, 2 idle
cores, one process, 10M numbered rows, ~1.9 s in all against ~1.0 s for the reference):
validation ~1.0 s (the typed read alone ~0.45 s; rules, row hash, duplicate check, byte proof and
the accepted-row filter the rest, the last three partly side by side), the pair group-by ~0.65 s
beside the batch write, vocab + indexing ~0.15 s, fingerprint and the remaining writes ~0.2 s.
Raw Zipf ids are costlier for what they are, not for their width: 2.5M pairs and 1.2M distinct
ids against 1.4M and 250k, so the group-by (~0.9 s), vocab + indexing (~0.45 s) and fingerprint
all touch more entries (~2.7 s in all against ~1.15 s). Until the stand-in codes moved to a free
gap, the 10M-row Zipf logs (one narrow item id, 4294944151, lies in the block just below 2**32)
grouped on two columns: ~1.3 CPU-s against ~0.85 s for the one-key group-by (measured alone, one
process, 2 busy cores). Then, from a profile of where ingest's CPU goes beside the reference's
(10M Zipf rows: ~5.2 CPU-s against ~2.2; about 30% of ingest's was kernel time, mostly first
touches of fresh memory): the batch reaches pyarrow without a copy (`DataFrame.to_arrow` copied
every column, ~280 MB, because the row number is one chunk beside the streaming read's ~100;
columns are now converted in groups of equal chunk count), columns without nulls are written as
required Parquet fields (no definition levels: the batch write ~0.45 -> ~0.35 CPU-s), the
duplicate check sorts the row hashes with polars on both cores and finds the rows holding a
repeated one with `is_in` (numpy sorted them on one core after copying them into one array), and
the row hash XORs seeded per-column hashes instead of hashing a struct (which row-encodes every
row). Together ~0.35-0.5 CPU-s less on the Zipf logs and ~0.3 on numbered ones (A/B, alternating,
loaded machine). Tried and not kept: left joins or unordered joins for the indexing (same CPU), a
sort-based vocab + index (numpy reduceat over sorted codes: more CPU than the hash joins),
restoring stand-in codes with a polars expression instead of numpy (no measurable change), other
encodings of the batch's id columns (delta, lz4, zstd: more CPU for fewer bytes). Then, for the
Zipf shapes: ingest's sorts (duplicate check, new vocab entries, the implicit table) run on
one thread where polars' pool has no spare core (on 2 cores ingest keeps both busy itself: the
10M-row hash sort ~0.30 -> ~0.16 CPU-s); the indexing joins no longer keep row order (the table
is sorted right after); the typed-read proof compares 64-bit ids without a 32-bit copy. A
same-machine A/B of those changes (10M Zipf int log, 10 alternating rounds in fresh processes,
`ingest()` timed inside each; a heavily loaded machine, load 7-13, so wall times say little):
CPU 5.36 -> 5.02 s (sys 1.65 -> 1.35), minor page faults 541k -> 516k. Tried and not kept:
grouping the rows whose 64-bit ids all fit 32 bits on one key as they stream and collecting only
the ~1% holding a wider id for stand-in codes (it saved CPU at load 7-13, but on a quiet machine
the two filters over the in-memory rows looked costlier: 2.76 -> 2.96 s median in one 5-round A/B,
reverted; a 10-round A/B confirmed it: 2.90 s / 4.73 CPU-s without, 2.93 s / 4.95 CPU-s with); keeping the accepted rows as slices between the rejected ones instead of filtering (no copy,
~55k fewer page faults, but ~0.1 CPU-s more in later passes over ~1,200 chunks). See
benchmarks/results/ingest.md for the numbers.

Then, from a `perf` profile of the 10M Zipf int log (~40% of ingest's CPU in the kernel, half of
it `clear_page`: zeroing pages that polars' jemalloc had handed back 0.5 s after a pass freed
them, and the next pass faulted in again): `import recsys` keeps freed pages for 10 s
(`recsys.ALLOCATOR_ENV`), 537k -> 357k page faults and ~0.45 CPU-s less kernel time for ~0.3 GB
more peak memory, measured once on a loaded machine by an ad-hoc script (no repo command). Both sides of this benchmark run with that
setting; the reference's faults and time did not move with it (145k -> 140k). Also tried, no
gain: transparent huge pages for jemalloc (`thp:always`: more kernel time), glibc's mmap and trim
thresholds raised for numpy's arrays (no fewer faults).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import polars as pl

from benchmarks.common import ML100K_INTER
from recsys import ALLOCATOR_ENV

REPO = Path(__file__).resolve().parents[1]
INTER = ML100K_INTER
RESULTS = Path(__file__).parent / "results" / "ingest.md"
RATIO_TARGET = 2.0
APPEND_ROWS = 100_000
RSS_TARGET_GB = 4.0
# Earlier implementations' numbers, kept for comparison.
BASELINE = [
    "This table (commit dcd5ff3, by hand; the benchmark alone on the 2 cores, load average 1.5 before (the tail of "
    "a test job) and 1.9 after; the bare reference 1.04-1.32 s at 10M rows). Rerun because the readers changed after "
    "1aa09f9: a reader version recorded per batch, dt= / date= / day= folders read as the time of files without one "
    "(one folder-name check per file on these files' path), Parquet BINARY and Mongo $binary ids, Delta checkpoints. "
    "Main file 1.87 (pairs 1.67-2.34), numbered 10M shapes 1.73-1.87, Zipf 10M shapes 1.99 (float), 2.01 (half "
    "stars) and 2.02 (int, pairs 2.02-2.16): NOT met by 1-2%. Nothing changed on this path's hot work since 1aa09f9 "
    "(1.79-1.99 there); the int Zipf log has read 2.09, 2.01, 1.99 and now 2.02 in four runs: item 6 at its limit. "
    "A run minutes before, beside the tail of a test job (load 1.4-3.8, references 1.39-2.53 s), gave 1.42-1.95 for "
    "every 10M shape and is not used. ML-100K's ingest reads 0.17 s (0.13 s on 1aa09f9): in the benchmark's own "
    "child process a8f034b's first ingest took 0.10 s and this code's 0.15-0.18 s (4 calls each, an ad-hoc check); "
    "gc.callbacks show one full collection of the imports' garbage (~0.06 s) inside this code's timed first call, "
    "and a second ingest in the same process takes 0.07 s: where that collection lands moves with allocations "
    "since the imports, not with ingest's work.",
    "",
    'The table before (commit 1aa09f9, by hand; the benchmark alone on the 2 cores, load average 0.9 before and 1.7 after; '
    'the bare reference 1.07-1.80 s at 10M rows, a wider spread than in the two runs before). Rerun because the '
    "readers changed after 07faba4: a lone column named as an epoch time with its unit is read as the time (one "
    "regex over each header name), Coveo's product_action is an event name, a weight column that is 0 in every row "
    'warns, and Parquet, JSON Lines and source-directory readers gained producer layouts (Delta Lake logs, Mongo '
    "exports, offset zones; none on these files' path). Main file 1.85 (pairs 1.68-2.06), numbered 10M shapes "
    '1.62-1.88, Zipf 10M half stars 1.79 and float 1.89, int 1.99 (pairs 1.97-2.24): at the target in this '
    "run's median but not robustly (2.01 and 2.09 in the two runs before, with the same code on this log's path): "
    "read it as item 6 at its limit, not as a speed-up.",
    "",
    'The table before (commit 07faba4, by hand; the benchmark alone on the 2 cores, load average 3.1 before (the tail of a '
    'test job) and 2.4 after; the bare reference 0.97-1.23 s at 10M rows). Rerun because the readers changed after '
    "the 33f6aa8 run: a time stored over several columns is combined (one regex pass over each file's header on the "
    'common path; these files have one time column), cut-short and damaged `.gz` files and NumPy files are named, and'
    " the 1970-times warning gained a swap hint and a headerless file's advice (neither fires here). Main file 1.85 "
    '(pairs 1.65-1.87), numbered 10M shapes 1.69-1.79, Zipf 10M half stars 1.88 and float 1.94 (both met), int 2.01 '
    '(pairs 1.95-2.09): NOT met by 0.5%, ingest 2.26 s against 2.43 s on 33f6aa8 with the same ingest code on this '
    "log's path: the difference between the two runs is this machine's run-to-run noise, not a speed-up.",
    "",
    'The table before (commit 33f6aa8, by hand; the machine quiet: the benchmark alone on the 2 cores, load average '
    '2.2 before (the tail of a test job that had just ended) and 2.0 after; the bare reference 1.02-1.29 s at 10M '
    "rows). Rerun because ingest's checks changed since 6f98c50: new refusals and hints in the readers for public "
    "layouts (none on these files' path), the summed-ratings warning for a headerless file's positional rating, and a"
    ' count of 1970 timestamps in logs whose latest time is later (one comparison over the time column; these logs '
    'have none). Main file 1.85 (pairs 1.77-1.95), numbered 10M shapes 1.73-1.84, Zipf 10M half stars 1.89 and float '
    '1.97 (both met), int 2.09 (pairs 1.99-2.21): NOT met, as on 6f98c50 (2.10), ingest 2.43 s against 2.34 s there '
    "with a reference 0.03 s slower; within this machine's run-to-run noise. Tried since 6f98c50 and not kept (ad-hoc"
    ' scripts, not repo commands; fresh processes, the 10M Zipf int log, quiet): the user and item vocab extends side'
    ' by side on the two threads (8 alternating rounds: 2.550 s against 2.558 s); the vocab and index step by sorting'
    " instead of hash joins (0.57 s against 0.45 s on the log's 2.53M pairs).",
    "",
    "The table before (commit 6f98c50, by hand; the machine quiet: the benchmark alone on the 2 cores, load average 0.5 "
    "before and 2.0 after; the bare reference 1.00-1.27 s at 10M rows). Since fbf6266 (77b328d): the typed-read "
    "proof counts a long-tailed id column's higher powers of ten over the few values that reach them (10M Zipf "
    "rows, both id columns, 19 powers each: ~0.16 -> ~0.07 CPU-s), and the stand-in codes of 64-bit ids are made "
    "in polars without a numpy copy of each streamed id column. A same-machine A/B before this run (an ad-hoc "
    "script, not a repo command: fresh processes, alternating, `ingest()` timed inside each, 6 rounds on the 10M "
    "Zipf int log, quiet): e962363 2.51 s wall / 4.34 CPU-s against this code 2.35 s / 3.99 CPU-s. Main file 1.79 "
    "(pairs 1.75-1.89), numbered 10M shapes 1.66-1.81, Zipf 10M half stars 1.93 and float 1.97 (both met; float "
    "was 2.04), int 2.10 (pairs 2.08-2.11): NOT met. Its ingest is 2.34 s, against 2.41-2.45 s on the other Zipf "
    "logs, but its bare read is the fastest (1.11 s: integers parse faster than decimals), so it needs ingest at "
    "~2.2 s. Where ingest's time goes now (10M Zipf int log, quiet; progress marks and per-0.1 s CPU samples of "
    "one process, ad hoc): the streaming read ~0.63 s at ~1.9 cores, then ~0.33 s in which the duplicate check's "
    "one-thread sort (~0.27 CPU-s) and the proof run beside the main thread; the pair group-by ~0.75 CPU-s (the "
    "u64 key alone ~0.4, each of its four aggregations ~0.07-0.1); vocab + indexing + sort ~0.7 CPU-s; the "
    "batch write ~0.4 CPU-s beside them; both cores busy except ~0.3 core-s at stage edges. Tried and not kept: "
    "the duplicate check's sort on both cores (6 rounds: 2.33 s against 2.32 s), polars `is_duplicated` on the "
    "row hashes (5x the CPU of the sort), an Int64 weight cast straight to Float32 (it would round integers "
    "above 2**53 once where the text route rounds twice, so the typed read would no longer give the text "
    "route's result), n_unique by sorting for the pair step's counts (no cheaper).",
    "",
    "The table before (commit fbf6266, by hand; the machine quiet: the benchmark alone on the 2 cores, load average "
    "0.5 before; the bare reference 1.00-1.24 s at 10M rows, faster than 545fb87's 1.18-1.44 s). Since 545fb87: "
    "a log's few rejected rows (the 10M Zipf log's 1,155 exact duplicates) are cut out of the accepted rows by "
    "slicing instead of a filter that copied every column (~130 MB less peak RSS, ~20k fewer page faults); "
    "the float-spelled-id check skips vocabularies built from decimal codes; refused writers remove their lock "
    "and atomic writes sweep dead writers' temps (once per path and process), neither on a timed path of "
    "note. Ingest took 2.38-2.48 s on the three Zipf 10M logs (2.60-2.73 s on 545fb87's table); the ratios "
    "moved with the faster references: main file 1.81 (pairs 1.78-1.95), numbered 10M shapes 1.70-1.81, "
    "Zipf 10M half stars 1.93 (met), float 2.04 and int 2.09 (pairs 1.96-2.06 and 2.07-2.21): NOT met. "
    "Measured on that int log before this run (ad-hoc scripts, not repo commands): ingest's CPU is ~4.2-4.5 "
    "s against the reference's ~2.25 s, so on 2 cores ingest is CPU-bound (wall ~CPU / 1.8), and its 350-400k "
    "page faults against the reference's 140k follow its peak memory (1.3-1.5 GB against 0.6 GB): jemalloc "
    "with no purging at all faulted as often. Tried and not kept: jemalloc `oversize_threshold:0,narenas:1` "
    "(~60k fewer faults for ingest, but 43k fewer and a 30% lower peak for the reference too, and one arena "
    "for every thread is a contention risk on many-core machines).",
    "",
    "The table before (commit 545fb87, by hand; the benchmark alone on the 2 cores, load average 1.7 before and 1.9 "
    "after; the bare reference 1.18-1.44 s at 10M rows). Since 1a29076: the duplicate check starts as soon as "
    "the rows are read, a log without rejected rows skips the re-parse checks (one ~0.1 s pass each), and the "
    "fingerprint runs beside the implicit table's sort. A same-machine A/B on the 10M Zipf int log before the "
    "benchmark (an ad-hoc script, not a repo command: fresh processes, alternating, `ingest()` timed inside "
    "each, 7 rounds) gave medians 2.74 s (3eb5d94) against 2.63 s (this code), the reference 1.26 s; three "
    "more shapes in 5 rounds each moved within this machine's noise. Main file 1.65 (pairs 1.50-1.95), "
    "numbered 10M shapes 1.66-1.85, Zipf 10M shapes 1.88 (float ratings) and 1.97 (half stars), both met, "
    "and 2.17 with integer ratings (pairs 2.08-2.51): NOT met. Ingest takes 2.60-2.73 s on all three Zipf "
    "logs; the int one fails because its reference is the fastest (1.18 s: integers parse faster than "
    "decimals), so it would need ingest at ~2.36 s. A profile of one 2.4 s ingest of that log (`perf`, "
    "fresh process): reading and validating 1.1 s (the typed read ~0.6 s, the duplicate check's u32 sort "
    "~0.2 s, the filter of accepted rows ~0.1 s), the pair aggregation 0.6 s beside the batch write, the "
    "vocab 0.2 s, joins and sort 0.3 s, the implicit write 0.1 s; ~8% of the CPU is the kernel zeroing "
    "fresh pages. Tried and not kept: jemalloc transparent huge pages (`thp:always`: 2.8-3.9 s), the typed "
    "read's digit count by numpy `searchsorted` (4x the CPU of the per-power comparisons).",
    "",
    'The table before (commit 1a29076, by hand; the benchmark alone on the 2 cores, load average 1.6 before and'
    " 2.5 after). Since 9bf3259 ingest's code moved (recsys/data/readers.py split into a package, ingest'"
    "s warnings into ingest_checks.py) and gained two hints (a year-first date's --time-format, a column "
    'named `t` not read), none on a path these logs take. Main file 1.87 (pairs 1.55-2.29), numbered 10M '
    'shapes 1.56-1.75, Zipf 10M shapes 2.09 (float ratings), 2.23 (int) and 2.25 (half stars): NOT met; o'
    "n 9bf3259's table the float and half-star Zipf logs were 1.96-1.97. Ingest took 2.70-3.04 s on the Z"
    'ipf logs (2.7-2.8 s then), and the bare reference 1.21-1.59 s at 10M rows (1.18-1.72 s then): ratios'
    ' of this size moved between tables with no code between them before.',
    'The table before (commit 9bf3259, by hand; the machine quiet: the benchmark alone on the 2 cores, load av'
    'erage 0.9 before and 1.7 after; the bare reference 1.18-1.72 s at 10M rows). Since a8ace76: `import'
    " recsys` keeps polars' freed pages for 10 s (c9033e4, `recsys.ALLOCATOR_ENV`; both sides of this ben"
    "chmark run with it; its own effect was measured once by an ad-hoc script, not a repo command, so no "
    "figure of it is given here), and this session's reader and warning additions (empty times counted, "
    "unread time-like columns and feedback flags named), whose cost was not measured apart. Main file 1.75"
    " (pairs 1.15-2.41), numbered 10M shapes 1.69-1.91, Zipf 10M shapes 1.97 (float ratings) and 1.96 (ha"
    "lf stars), both under the bar, and 2.27 with integer ratings: NOT met. On the quiet machine of 6f2238"
    "d6 the Zipf shapes were 2.17-2.38; ingest takes ~2.7-2.8 s on all three Zipf logs, and the integer o"
    "ne fails because its reference is the fastest (1.25 s: integers parse faster than decimals).",
    'The table before (commit a8ace76, by hand: no ingest speed work since 6f2238d6; the changes in between are'
    ' the quoted-id check, which integer ids never reach, and negative weights under binarize, which thes'
    'e files do not have) ran with other jobs on the 2 cores, load average 4.0-4.3: the bare reference to'
    'ok 2.0-2.5 s at 10M rows against 1.1-1.4 s on the quieter machine of 6f2238d6, and the ratios fell w'
    'ith it (main file 1.98, numbered shapes 1.72-1.90, Zipf shapes 1.98-2.00, the int-rating Zipf log 2.'
    "00 to two decimals and over the bar unrounded). Ingest's single-threaded stretches lose less to a co"
    "mpeting job than the reference's two-threaded read does, so a loaded machine flatters the ratio: ite"
    'm 6 is not met on evidence of this run; on the quiet machine (6f2238d6, the paragraph below) the Zip'
    'f shapes were 2.17-2.38.',
    "The table before (commit 6f2238d6, after this session's ingest work: sorts on one thread where polars' poo"
    "l has no spare core, unordered indexing joins, the typed-read proof without a 32-bit copy, `data.tim"
    "e_format`, `file://` sources read as paths; the streamed 32-bit pair aggregation tried and reverted;"
    " load 1.9-2.1, the benchmark alone on the 2 cores) puts the main file at 2.02 (pairs 1.69-2.41), the"
    " 10M-row numbered shapes at 1.74-1.95 and the Zipf shapes at 2.17-2.38 (all three NOT met). The mach"
    "ine was noisier than for the table before: the bare reference ranged 1.13-1.44 s at 10M rows (1.04-1"
    ".33 s before), and one ingest of the same file in fresh processes ranged 2.6-3.9 s within minutes. A"
    " run minutes earlier (commit 6b477d6, same code bar the notes) gave main file 2.09, numbered 1.83-2."
    "04, Zipf 2.16-2.40. Same-machine A/B on the 10M Zipf int log (an ad-hoc script, not a repo command: "
    "fresh processes, alternating, `ingest()` timed inside each), medians: this session's start (75d193b)"
    " 2.80 s wall / 5.0 CPU-s against this commit 3.16 s / 5.3 CPU-s (6 rounds), and 2.81 s (75d193b), 3."
    "14 s (41c303a, before the ingest changes above but after the reader, encoding and digest-cache work)"
    " and 3.39 s (this commit) in 5 rounds of three: which looked like a slowdown of 0.3-0.5 s; it did no"
    "t reproduce: two later runs, with the machine quieter, gave 75d193b 2.93 s, 39f81ab (the reader work"
    ") 3.07 s and 41c303a 3.03 s in 5 rounds of three, then 75d193b 2.79 s / 5.04 CPU-s against this code"
    " 2.88 s / 4.73 CPU-s in 6 rounds: wall time within this machine's noise, CPU 0.3 s lower. The stream"
    "ed pair aggregation (h71) lowered CPU at load 7-13 but showed 0.2 s more wall time in one 5-round A/"
    "B (2.76 -> 2.96 s) and was reverted; a 10-round A/B afterwards confirmed it (without it 2.90 s / 4.7"
    "3 CPU-s, with it 2.93 s / 4.95 CPU-s).",
    "",
    "The table before (commit a7fbfeba35, after this session's idempotent appends and landing-file stamps, the "
    "text-encoding, header-setting and Last.fm / Steam / Tmall reader work; the machine quiet, load 1.9) "
    "puts the main file at 1.86 (pairs 1.80-2.02), the 10M-row numbered shapes at 1.79-1.83 and the Zipf "
    "shapes at 1.95-2.23 (int and float ratings 2.23 and 2.22: NOT met). A first run of those changes "
    "minutes earlier (commit 6e78167, load 1.2-1.9) gave main file 2.11, numbered 2.04-2.18, Zipf 2.18-2.38: a "
    "same-machine A/B on the 10M Zipf int log (an ad-hoc script, not a repo command: 5 alternating rounds "
    "in fresh processes, `ingest()` timed inside each) found it 0.15-0.2 s slower than e183981 (wall "
    "median 2.62-2.70 -> 2.81 s, CPU equal within 0.1 s), and a profile put the difference in the "
    "coarse-duplicates warning, which had gained a year-of-every-row test (the Tmall 1970 case). It now "
    "reads the times' extremes and first rows before any whole-column pass: the same A/B then gave "
    "e183981 2.60 s, a7fbfeb 2.53 s wall (CPU 5.27 -> 5.06 s), the reference 1.15 s.",
    "",
    "The table before (commit e13751a4a1, after the real-layout reader work, negative ratings read under a "
    "positive rule, the bulk-quarantine and float-spelled-id warnings; the machine quiet, load 1.0-2.1) puts "
    "the main file at 2.01 (pairs 1.87-2.05), the 10M-row numbered shapes at 1.70-1.98 and the Zipf shapes at "
    "2.07-2.26 (the int-rating Zipf log 2.26: NOT met). The machine's bare reference ran 15-25% faster than "
    "for the previous table (1.09-1.36 s at 10M rows against 1.21-1.71 s) and ingest's own times fell less "
    "(Zipf 2.77-2.87 s against 3.02-3.07 s), so the ratios rose with no slower code: a same-machine A/B of "
    "this commit against 5104e8d (before those changes), 4 alternating rounds in fresh processes on the 10M "
    "Zipf int log (an ad-hoc script, not a repo command: `ingest()` timed inside each process), gave wall "
    "2.64-3.49 s (median 2.70) -> 2.67-2.73 s (median 2.71) and CPU 4.66-6.06 s -> 4.63-4.89 s. A profile "
    "of that ingest (2.72 s): reading and validation 1.15 s, the pair aggregation 0.80 s, the vocab 0.17 s, "
    "the fingerprint 0.18 s, waiting for the background writer 0.29 s.",
    "",
    "The table before (commit fd7f145375, after the schema-drift reader work: per-file separators "
    "and decimal commas, Parquet per-file names, late and renamed JSON keys, moved header lines) was the "
    "second of two back-to-back runs on the same quiet machine (the benchmark alone on the 2 cores, load "
    "0.4-2.0): main file 1.97 (pairs 1.76-2.23), 10M-row numbered shapes 1.64-1.88, Zipf shapes 1.92-2.02 "
    "(the int-rating Zipf log 2.02: NOT met by 1%). The first run minutes earlier (load 1.1-1.8) gave main "
    "file 2.01 (1.90-2.16), numbered 1.69-1.94, Zipf 1.96-2.23, 3M-row shapes 1.87-2.01 numbered and "
    "2.21-2.27 Zipf. The machine's bare reference was 15-40% slower than for the table before it (1.21-1.71 s "
    "at 10M rows against 1.03-1.28 s), and ratios moved by up to 0.2 between the two runs with no code "
    "between them. A same-machine CPU A/B of that commit's ingest against 971057d, 3 alternating rounds in "
    "fresh processes, gave 5.59-6.23 -> 5.72-6.00 CPU-s on the 10M Zipf int log and 4.66-4.94 -> 4.56-4.93 "
    "CPU-s on the 10M numbered int log (interpreter start and imports included). Read together, these runs "
    "put the main file and numbered shapes at 1.6-2.0 and the Zipf shapes at 1.9-2.3: on the target's edge "
    "for the first, above it for the Zipf logs.",
    "",
    "The previous table (commit 30f699d2d0, load 0.4 before and 2.0 after) was the quietest run of that code: "
    "main file 1.87 (pairs 1.83-1.97), 10M-row numbered shapes 1.84-1.93, Zipf shapes 2.02-2.14. A run on b46dc5"
    "a106 at load 2.0-2.4 gave the same picture: main file 1.90 (pairs 1.25-4.87: another job hit some), "
    "numbered 1.74-1.93, Zipf 2.02-2.14. Two earlier runs of the same changes on a busier machine (commit"
    " 59008c4ab7 and the one after it, load 3.2-6.9 and 6.4-14.2, references 2.2-5.7 s at 10M rows) gave "
    "main file 1.58 and 2.35, 10M-row shapes 1.47-1.97 and 1.69-1.96 numbered, 1.61-2.15 and 2.17-2.49 Zi"
    "pf: too noisy to read either way. The firmer measure of those changes is the CPU A/B below.",
    "",
    "Same-machine A/B of 30f699d2d0's ingest changes (the batch handed to pyarrow without a copy, required "
    "fields, the duplicate check's polars sort, the XOR row hash) against main 4a0591e, each side in its own "
    "process, alternating with the reference, 10M rows, load 7-12: on Zipf ids with int ratings CPU 5.19 -> "
    "4.83 s and 5.29 -> 4.77 s in two runs of 7 and 5 rounds (per round 0.86-1.04x; the reference 2.2 s), "
    "kernel time 1.5 -> 1.3 s; on numbered ids 3.91 -> 3.63 s (0.85-0.96x). Wall times at that load moved "
    "0.55-1.56x per round and say nothing either way. Two more runs of 7 rounds on the Zipf int log at load "
    "3.2-4.4 (the reference 1.1-1.35 s): CPU 4.76 -> 4.41 and 4.77 -> 4.30 s (per round 0.84-0.95x), wall "
    "per round median 0.93x (0.85-1.39) and 0.84x (0.68-1.33), median ratio to the reference 2.47 -> 2.39 "
    "and 2.45 -> 2.13: better, and still above the 2.0 target on that shape.",
    "",
    "The previous table (commit 16d3c96de1, load 0.8 before and 1.8 after): main 10M-row file 2.15; 10M-row "
    "shapes 1.96-2.18 with numbered ids and 2.01-2.50 with Zipf ids; 3M-row shapes 1.99-2.38 numbered, "
    "2.54-2.77 Zipf. It ran on a fresh machine whose bare reference was faster (1.02-1.48 s at 10M rows "
    "against 1.27-1.57 s in the table before it): the ratios moved up with it, not with the code. Same-"
    "machine A/B then on the main 10M-row file (5 alternating runs each, load 0.5-1.2): commit 334c0b7d "
    "2.19 s, 16d3c96de1 2.21 s, the reference 1.03 s. On Zipf ids the stand-in codes for 64-bit ids had "
    "just moved to a free gap (one narrow item id sat in their block and sent the 10M Zipf logs to the "
    "two-column group-by): -0.3 CPU-s of ~5.5 measured on a loaded machine, not visible in the wall-time "
    "ratios.",
    "",
    "The table before that (commit 7443b9f2ad, load 1.5-2.1): main 10M-row file 1.93; 10M-row shapes 1.89-2."
    "03 with numbered ids and 2.18-2.46 with Zipf ids; 3M-row shapes 1.83-2.11 numbered, 2.65-2.82 Zipf.",
    "",
    "Before that (commit a24d8f9de2, before this session's reader additions: decimal commas, Go ti"
    "mes, `#` headers, the ingest id; load 1.6): main 10M-row file 1.94; 10M-row shapes 1.84-2.04 with nu"
    "mbered ids and 2.28-2.63 with Zipf ids; 3M-row shapes 1.92-2.08 numbered, 2.47-2.80 Zipf. The machin"
    "e ran about 25% faster then in absolute terms (references 1.03-1.24 s at 10M rows against 1.27-1.57 "
    "s in the 7443b9f2ad run).",
    "",
    "Before that (commit 01c8b321a1, before today's small ingest changes: the weight warning's "
    "positive-rule condition, a missing source refused before the lock; load 1.5): main 10M-row file 1.89; "
    "10M-row shapes 1.95-1.97 with numbered ids and 2.27-2.57 with Zipf ids (a run minutes earlier: "
    "2.34-2.38); 3M-row shapes 2.04-2.16 numbered, 2.47-2.67 Zipf.",
    "",
    "Before the vocab codes, stand-in codes for 64-bit ids and pyarrow writes (the previous table, commit "
    "fa20c8d691, load 2.5-3.2): main 10M-row file 1.94; 10M-row shapes 2.00-2.08 with numbered ids and "
    "2.63-2.77 with Zipf ids; 3M-row shapes 2.04-2.13 numbered, 2.81-3.34 Zipf.",
    "",
    "Earlier runs, before ids past 32 bits got 64-bit codes (the main file's ids all fit 32 bits, so its "
    "route did not change; idle machine, 5 pairs each): 10M-row ratio 1.55, 1.72, 1.71, 1.77, 2.02; "
    "ML-100K 3.18, 2.85, 3.48, 2.92, 3.20 (its 0.04-0.05 s reference moves the ratio more than ingest does). "
    "With 7 pairs: 10M-row ratio 1.77 (pairs 1.56-1.90), ML-100K 3.21.",
    "",
    "Before the typed read, position numbering, 1-byte reasons, table lookup of repeated hashes, id-hash "
    "fingerprint and source-row pair order (the previous commit's table, same machine): ML-100K ratio 3.40 "
    "(0.05 s vs 0.15 s, 658,559 rows/s, 0.34 GB); 10M-row CSV ratio 2.09 (2.11 s vs 4.40 s, 2,270,694 rows/s, "
    "peak RSS 1.56 GB); other idle-machine runs of that code 1.87-1.98.",
    "",
    "Before the one-`when` integer-time parse, the 32-bit duplicate hash, the lazy pair aggregation and the "
    "background writer: ML-100K ratio 4.25 (0.04 s vs 0.17 s, 601,307 rows/s, 0.34 GB); 10M-row CSV ratio "
    "2.41 (3.58 s vs 8.64 s, 1,157,687 rows/s, peak RSS 1.54 GB).",
    "",
    "Before the decimal-code / integer-time fast paths: ML-100K ratio 4.33 (0.040 s vs 0.170 s, 587,096 "
    "rows/s, 0.35 GB); 10M-row CSV ratio 3.10 (3.95 s vs 12.27 s, 814,931 rows/s, peak RSS 2.11 GB).",
    "",
    "Before the single-pass rewrite (same benchmark, same machine): ML-100K ratio 3.77 (102,260 rows/s, "
    "0.35 GB); 10M-row CSV ratio 4.41 (90,394 rows/s, peak RSS 3.99 GB).",
]

_CHILD = r"""
import json, sys, time
from pathlib import Path
side, source, out, sep = sys.argv[1:5]
import polars as pl
if side != "reference":  # imports (torch via the config models) are not part of the measurement
    from recsys.config import DataConfig
    from recsys.data.ingest import ingest
if side == "append":  # the first ingest is set-up; only the append of the day-2 log is timed
    ingest(source, Path(out) / "processed", DataConfig())
started = time.perf_counter()
if side == "reference":
    pl.read_csv(source, separator=sep).write_parquet(Path(out) / "ref.parquet")
    rows = None
elif side == "append":
    rows = ingest(sys.argv[5], Path(out) / "processed", DataConfig(), append=True).rows_in
else:
    rows = ingest(source, Path(out) / "processed", DataConfig()).rows_in
seconds = time.perf_counter() - started
hwm_kb = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(json.dumps({"seconds": seconds, "peak_rss_gb": hwm_kb / 1024**2, "rows": rows}))
"""


def _run(side: str, source: Path, sep: str, appended: Path | None = None) -> dict:
    with tempfile.TemporaryDirectory(dir=source.parent) as out:
        extra = [str(appended)] if appended is not None else []
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, side, str(source), out, sep, *extra],
            capture_output=True,
            text=True,
            cwd=REPO,
            check=False,
            env={**os.environ, **ALLOCATOR_ENV},  # the same allocator settings on both sides
        )
    if done.returncode != 0:
        raise RuntimeError(f"{side} run failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(source: Path, sep: str, repeats: int) -> dict:
    """Alternate reference / ingest runs; median times, max peak RSS, median of per-pair ratios."""
    ref, ing = [], []
    for _ in range(repeats):
        ref.append(_run("reference", source, sep))
        ing.append(_run("ingest", source, sep))
    ratios = [i["seconds"] / r["seconds"] for r, i in zip(ref, ing, strict=True)]
    rows = ing[0]["rows"]
    ingest_s = statistics.median(i["seconds"] for i in ing)
    return {
        "rows": rows,
        "reference_s": statistics.median(r["seconds"] for r in ref),
        "ingest_s": ingest_s,
        "rows_per_s": rows / ingest_s,
        "ratio": statistics.median(ratios),
        "ratio_range": (min(ratios), max(ratios)),
        "reference_rss_gb": max(r["peak_rss_gb"] for r in ref),
        "ingest_rss_gb": max(i["peak_rss_gb"] for i in ing),
    }


def write_synthetic_csv(
    path: Path, rows: int, seed: int = 0, rating: str = "int", ids: str = "numbered"
) -> None:
    """A log shaped like real ones: skewed user activity and item popularity, second timestamps over
    a year (a few exact duplicates arise naturally and are quarantined), the MovieLens header.
    rating: "int" (1-5), "float" (1.0-5.0) or "half" (half stars 0.5-5.0, written "4.5").
    ids: "numbered" (below the user / item count, shuffled) or "zipf" (the raw Zipf draws: a few
    reach 64 bits, like hashed ids)."""
    rng = np.random.default_rng(seed)
    n_users, n_items = max(rows // 50, 10), max(rows // 200, 10)
    if ids == "zipf":
        users, items = rng.zipf(1.3, rows), rng.zipf(1.2, rows)
    else:
        users = np.minimum(rng.zipf(1.3, rows), n_users) - 1  # draws in the order earlier runs used
        users = rng.permutation(n_users)[users]
        items = np.minimum(rng.zipf(1.2, rows), n_items) - 1
        items = rng.permutation(n_items)[items]
    stars = {
        "int": pl.Series(rng.integers(1, 6, rows).astype(np.int8)),
        "float": pl.Series(rng.integers(1, 6, rows).astype(np.float64)),
        "half": pl.Series(rng.integers(1, 11, rows) / 2.0),
    }[rating]
    frame = pl.DataFrame(
        {
            "user_id": users.astype(np.int64),
            "item_id": items.astype(np.int64),
            "rating": stars,
            "timestamp": rng.integers(1_600_000_000, 1_631_536_000, rows),
        }
    )
    frame.write_csv(path, float_precision=1)


SHAPES = [(rating, ids) for ids in ("numbered", "zipf") for rating in ("int", "float", "half")]
SHAPE_PAIRS = 3


def shape_rows() -> list[int]:
    text = os.environ.get("RECSYS_BENCH_SHAPE_ROWS", "3000000,10000000")
    return [int(n) for n in text.split(",") if n.strip()]


def measure_shapes(tmp: Path) -> dict[str, dict]:
    """Every (size, rating, ids) shape, `SHAPE_PAIRS` alternating pairs each."""
    results = {}
    for rows in shape_rows():
        for rating, ids in SHAPES:
            source = tmp / f"shape-{rows}-{rating}-{ids}.csv"
            write_synthetic_csv(source, rows, seed=2, rating=rating, ids=ids)
            name = f"{rows:,} rows, {rating} ratings, {ids} ids"
            results[name] = measure(source, ",", repeats=SHAPE_PAIRS)
            print(f"{name}: {json.dumps(results[name])}", flush=True)
            source.unlink()
    return results


def main() -> None:
    lines = [
        "## ingest",
        "",
        "Ratio = recsys ingest time / bare `pl.read_csv -> write_parquet` time on the same file, "
        "each in its own process: the median over alternating (reference, ingest) pairs, 5 for ML-100K "
        "and 7 for the synthetic file, with the lowest and highest pair. Peak RSS = the process's VmHWM.",
        "",
    ]
    lines += [
        "| input | rows | reference s | ingest s | rows/s | ratio (target <= 2.0) | pair ratios | ingest peak RSS GB | reference peak RSS GB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    results = {}
    load_before = os.getloadavg()[0]
    if INTER.is_file():
        results["ml-100k.inter"] = measure(INTER, "\t", repeats=5)
    else:
        print(f"skipping ML-100K: {INTER} not found")
    rows = int(os.environ.get("RECSYS_BENCH_ROWS", "10000000"))
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "events.csv"
        write_synthetic_csv(source, rows)
        # Seven pairs even at 10M rows (about 2 min): one pair's ratio swings by 30% on a shared
        # machine, mostly through the reference (its time moves 1.4-2.3 s between runs).
        results[f"synthetic {rows:,}-row CSV"] = measure(source, ",", repeats=7)
        day2 = Path(tmp) / "day2.csv"
        write_synthetic_csv(day2, APPEND_ROWS, seed=1)
        append_s = statistics.median(_run("append", source, ",", day2)["seconds"] for _ in range(3))
        source.unlink()
        shapes = measure_shapes(Path(tmp))
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['rows']:,} | {r['reference_s']:.2f} | {r['ingest_s']:.2f} | {r['rows_per_s']:,.0f} | "
            f"{r['ratio']:.2f} | {r['ratio_range'][0]:.2f}-{r['ratio_range'][1]:.2f} | "
            f"{r['ingest_rss_gb']:.2f} | {r['reference_rss_gb']:.2f} |"
        )
        print(f"{name}: {json.dumps(r)}")
    big = results[f"synthetic {rows:,}-row CSV"]
    lines += [
        "",
        f"Ratio target {RATIO_TARGET}: {'met' if big['ratio'] <= RATIO_TARGET else 'NOT met'} on the synthetic file; "
        f"peak RSS target {RSS_TARGET_GB} GB: {'met' if big['ingest_rss_gb'] <= RSS_TARGET_GB else 'NOT met'} "
        f"({rows:,} rows). Machine: {os.cpu_count()} cores, load average {load_before:.1f} before and "
        f"{os.getloadavg()[0]:.1f} after (the ratio grows when other jobs compete for the cores: ingest has "
        "single-threaded stretches that the reference does not).",
    ]
    small = results.get("ml-100k.inter")
    if small is not None:
        fixed = small["ingest_s"] - small["reference_s"]
        lines[-1] += (
            f" ML-100K's ratio is fixed per-call cost, not throughput: ingest spends {fixed:.2f} s more than "
            f"the {small['reference_s']:.2f} s read and write (a 2,000-row sample, ~40 small polars queries, "
            f"five Parquet files and the manifest); at {rows:,} rows that much is "
            f"{fixed / big['ingest_s']:.0%} of the run."
        )
    lines += [
        "",
        f"Appending a {APPEND_ROWS:,}-row day-2 log to the {rows:,}-row processed directory (validation, "
        "cross-batch duplicates against that day's users, then pairs and vocab re-derived over every "
        f"batch): {append_s:.2f} s (median of 3; the first ingest above: {big['ingest_s']:.2f} s).",
    ]
    if shapes:
        lines += [
            "",
            f"Real shapes (MovieLens header `user_id,item_id,rating,timestamp`; {SHAPE_PAIRS} alternating pairs "
            "each; `numbered` ids lie below the user / item count, `zipf` ids are raw Zipf draws of which a few "
            "reach 64 bits):",
            "",
            "| input | reference s | ingest s | ratio | pair ratios | ingest peak RSS GB |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name, r in shapes.items():
            lines.append(
                f"| {name} | {r['reference_s']:.2f} | {r['ingest_s']:.2f} | {r['ratio']:.2f} | "
                f"{r['ratio_range'][0]:.2f}-{r['ratio_range'][1]:.2f} | {r['ingest_rss_gb']:.2f} |"
            )
        largest = max(shape_rows())
        worst = max((r["ratio"], n) for n, r in shapes.items() if n.startswith(f"{largest:,} rows"))
        lines += [
            "",
            f"Target <= {RATIO_TARGET} at {largest:,} rows for every shape: "
            f"{'met' if worst[0] <= RATIO_TARGET else 'NOT met'} (highest: {worst[1]}, {worst[0]:.2f}). "
            "Smaller logs pay the fixed costs described above on a shorter reference.",
        ]
    lines += ["", *BASELINE]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
