"""A partial rerun of a per-data-set benchmark keeps the other sets and the hand-written verdict."""

from __future__ import annotations

from pathlib import Path

from benchmarks.bench_generalization import ratios_from_section
from benchmarks.common import STAMP_PREFIX, SetSections, merge_set_sections, read_set_sections

NAMES = ["set-a", "set-b"]
EARLIER = f"""## A benchmark

| data set | best |
|---|---|
| set-a | 1.00x |
| set-b | 2.00x |

### Verdict

Both fine.

### set-a

old a. Ran on `111`.

| model | recall@20 [95% CI] | vs reference |
|---|---:|---:|
| popularity | 0.1000 [0.0900, 0.1100] | 0.50x |
| wals | 0.3000 [0.2800, 0.3200] | 1.50x |
| **bare implicit (chosen on validation)** (reference) | 0.2000 [0.1800, 0.2200] | 1.00x |
| cluster oracle | 0.9000 | 4.50x |

### set-b

old b. Ran on `111`.

{STAMP_PREFIX}`111`._
"""


def test_a_rerun_of_one_set_keeps_the_other_and_flags_the_verdict(tmp_path: Path) -> None:
    path = tmp_path / "bench.md"
    path.write_text(EARLIER)
    earlier = read_set_sections(path, NAMES)
    now = SetSections(rows={"set-b": "| set-b | 3.00x |"}, sections={"set-b": "### set-b\n\nnew b. Ran on `222`."})

    merged = merge_set_sections(earlier, now, NAMES, "`222`")

    assert merged.rows == {"set-a": "| set-a | 1.00x |", "set-b": "| set-b | 3.00x |"}
    assert list(merged.sections) == NAMES
    assert "old a" in merged.sections["set-a"] and "new b" in merged.sections["set-b"]
    assert STAMP_PREFIX not in "".join(merged.sections.values())  # the run writes its own stamp
    (verdict,) = merged.hand_written
    assert verdict.startswith("### Verdict\n\n_Written by hand before set-b rerun on `222`")
    assert verdict.endswith("Both fine.")


def test_the_plot_reads_ratios_to_the_reference_from_the_value_column(tmp_path: Path) -> None:
    path = tmp_path / "bench.md"
    path.write_text(EARLIER)
    text = read_set_sections(path, NAMES).sections["set-a"]
    ratios, popularity = ratios_from_section(text)
    assert list(ratios) == ["wals"]  # the oracle row after the reference is not a model of the run
    assert abs(ratios["wals"] - 1.5) < 1e-12 and abs(popularity - 0.5) < 1e-12  # 0.3 / 0.2 in floats

