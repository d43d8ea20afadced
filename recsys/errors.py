"""User-facing errors: the CLI prints their message on one line and exits with code 2, no traceback.

An error may name the config setting that fixes it (`setting`, e.g. "data.columns.item", with a
suggested `value`); its message then says `{option}` where the fix goes, and `render` fills in the
spelling that exists for the command at hand (a command maps settings to its flags, e.g.
{"data.columns.item": "--item-col {value}"}): `--item-col artistID` for `recsys ingest`,
`--set data.columns.item=artistID` for every command that takes `--set`. `str(error)` uses the
`--set` spelling, which every config-driven command accepts. A second fix is written
`{option:SETTING=VALUE}` (`{option:data.columns.time=NAME}`) and spelled the same way.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_MORE_OPTION = re.compile(r"\{option:([\w.]+)=([^{}]*)\}")


class RecsysWarning(UserWarning):
    """A warning for the user about their settings or data. The library only `warnings.warn`s it
    (catchable: `pytest.warns`, `-W error`, `warnings.catch_warnings`) and never logs it as well, so
    it is printed once; the CLI prints it as one `warning: <message>` line
    (`recsys.cli.common.one_line_warnings`) instead of Python's `file:line: Category: ...` form."""


class RecsysError(Exception):
    """Base for errors caused by input or configuration, not by a bug: deterministic, so an
    orchestrator must not retry them."""

    def __init__(self, message: str, *, setting: str | None = None, value: str = "NAME") -> None:
        super().__init__(message)
        self.setting = setting
        self.value = value

    def render(self, flags: Mapping[str, str] | None = None) -> str:
        """The message on one line, `{option}` spelled as the command's own flag when it has one."""
        text = str(self.args[0]) if self.args else type(self).__name__

        def spelled(setting: str, value: str) -> str:
            flag = (flags or {}).get(setting)
            return flag.replace("{value}", value) if flag else f"--set {setting}={value}"

        if self.setting is not None and "{option}" in text:
            text = text.replace("{option}", spelled(self.setting, self.value))
        text = _MORE_OPTION.sub(lambda m: spelled(m[1], m[2]), text)
        return " ".join(text.split())

    def __str__(self) -> str:
        return self.render()

    def __repr__(self) -> str:
        """With the message rendered: Prefect logs a flow's error as its repr ("Encountered exception
        during execution: TrackingError('... turn tracking off with {option}')"), which showed the
        placeholder instead of the option."""
        return f"{type(self).__name__}({self.render()!r})"


class DataError(RecsysError):
    """A file or data set that cannot be used; the message names the file and the cause."""


class NoDataRows(DataError):
    """A file that holds a header (or a schema) but no row: an error for an ingest of that file,
    but in a landing zone an export of a quiet day, passed over until rows are written to it."""


class AlreadyIngested(DataError):
    """An `--append` of content that a batch of the directory already holds (the same bytes: an
    append re-run after a kill that came once its batch had landed, or a copy under another
    name): nothing is added, and `recsys ingest` says so and succeeds, so a retried schedule step
    is idempotent. `batch` is the batch that holds it."""

    def __init__(self, message: str, *, batch: int) -> None:
        super().__init__(message)
        self.batch = batch


class ModelError(RecsysError):
    """Training failed for a reason the user can act on (e.g. NaN loss at epoch E, step S)."""


class SetupError(ModelError):
    """The model cannot run on this data or this machine whatever its parameters (a catalogue above
    its memory bound, a missing package): a search stops at the first trial instead of repeating
    the same refusal for every parameter setting."""


class ModelSkipped(SetupError):
    """The model does not apply to data of this shape, whatever its parameters: EASE's dense
    item x item matrices above its bounds on a large catalogue. A run skips the model with a
    warning and goes on, exiting 0 (the shipped configs list EASE, and most real catalogues are
    above its bounds: the run did what it could, not fail); a command that trains only this model
    (`recsys train`) still refuses it."""


class TrackingError(RecsysError):
    """The tracking server or store cannot be used."""


class ConfigError(RecsysError, ValueError):
    """A config that cannot be used, with a message fit for the terminal."""


def first_line(error: BaseException, limit: int = 200) -> str:
    """The first line of an exception's text (library messages can hold SQL or tracebacks)."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    # SQLAlchemy wraps the driver's error: "(sqlite3.OperationalError) attempt to write ..." is
    # the telling line, after notes such as "(raised as a result of Query-invoked autoflush ...)".
    driver = [line for line in lines if line.startswith("(") and "Error)" in line.split(" ", 1)[0]]
    text = (driver or lines or [type(error).__name__])[0]
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_deterministic(error: BaseException | None) -> bool:
    """True for an error that would happen again on a retry: bad input or config (RecsysError),
    also when wrapped (raised `from` or during the handling of one)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, RecsysError):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False
