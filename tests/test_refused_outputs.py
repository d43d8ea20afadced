"""A command refused after its output check leaves none of the folders its --json / --out /
--models named: the check (`recsys.cli.common.writable_output` / `writable_dir`) made the missing
folders, and a refusal after it (a bad --model, a missing --resume-tracking directory, a second
output that cannot be written) left them behind, empty, for ever."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from recsys.cli import app


def _refused(args: list, says: str) -> None:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 2, result.output
    assert says in " ".join(result.output.split()), result.output


def test_a_refused_command_leaves_no_folder_of_its_outputs(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "small.toml"
    config.write_text('[[models]]\nname = "wals"\nkind = "wals"\n')
    blocked = config / "x"  # under a regular file: no one can write there
    _refused(["run", "--json", tmp_path / "a" / "b" / "summary.json", "--resume-tracking", tmp_path / "nowhere"],
             "no such file or directory")  # fmt: skip
    _refused(["evaluate", "--config", config, "--model", "nosuch", "--json", tmp_path / "c" / "d" / "eval.json"],
             "nosuch")  # fmt: skip
    _refused(["train", "--config", config, "--models", tmp_path / "e" / "models", "--handoff", blocked],
             f"cannot write --handoff {blocked}")  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small.toml"]


def test_the_check_still_refuses_an_output_it_cannot_write_and_makes_nothing(tmp_path: Path):
    import os

    from recsys.cli.common import writable_dir, writable_output
    from recsys.errors import ConfigError

    if os.geteuid() == 0:  # root writes a read-only folder: the folder-under-a-file case stands in
        locked = tmp_path / "file"
        locked.write_text("")
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
    for check, option in ((writable_output, "--json"), (writable_dir, "--models")):
        try:
            check(locked / "new" / "x.json", option)
        except ConfigError as exc:
            assert f"cannot write {option} {locked / 'new' / 'x.json'}" in str(exc)
        else:
            raise AssertionError(f"{option} under {locked} was not refused")
    writable_output(tmp_path / "fine" / "deep" / "x.json", "--json")
    writable_dir(tmp_path / "fine2" / "models", "--models")
    assert sorted(p.name for p in tmp_path.iterdir()) == [locked.name]
    assert not list(locked.iterdir()) if locked.is_dir() else True
