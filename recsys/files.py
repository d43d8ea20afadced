"""Atomic file writes: every output file the package writes goes through a temp file and a rename.

Why one module: readers (a scheduler reading `--json`, `recsys evaluate` reading a summary) must
never see half a file, and two processes writing one output must not share a temp name (the second
rename found `.<name>.tmp` gone after all its work, or published the other's half-written text), so
each writer gets a temp file of its own from `mkstemp`, given the mode a plain `open()` would give.
A temp's name carries its writer's pid (`.<name>.<host>-<pid>.XXXXXXXX<suffix>`): a writer killed
with -9 leaves its temp, and the next writer of the path removes those whose process has ended (the
first write of a path in each process: a scan of its folder, ~6 ms at 10,000 entries, paid once).
A leaf module (third-party imports only inside functions): the CLI imports it at start-up.
`announced_lock` is here too: a lock that says, when a command has to wait on it, what it waits for;
and `lock_for_life`, a lock held while its owner runs.
"""

from __future__ import annotations

import functools
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from filelock import FileLock


def current_umask() -> int:
    """The process umask (mkstemp / mkdtemp create 0600 / 0700; an output should get the mode a
    plain open() or mkdir gives)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publishable_dir(parent: str | os.PathLike, prefix: str, suffix: str = "") -> Path:
    """A new empty folder in `parent`, named by mkdtemp, that its writer fills and then renames into
    place, with the mode a plain mkdir gives. mkdtemp makes 0700 and the rename keeps it: a processed
    directory, a `--handoff` split or a checkpoint folder was its writer's alone."""
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=parent))
    os.chmod(folder, 0o777 & ~current_umask())
    return folder


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp", *, replace: bool = True) -> Iterator[Path]:
    """Yield a temp path of this writer's own beside `path` for the caller to write (a writer that
    wants a file name, e.g. matplotlib's `savefig`); on success it gets a plain file's mode and is
    renamed onto `path`, on any error it is removed. `suffix` keeps a format-sniffing writer happy.
    `replace=False`: never replace a file at `path` (`_publish_new`), FileExistsError instead."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if (key := (str(path.absolute()), suffix)) not in _SWEPT:  # once a process: a scan of the folder
        _SWEPT.add(key)
        remove_dead_temps(path, suffix)
    fd, name = tempfile.mkstemp(prefix=_temp_prefix(path.name), suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~current_umask())
        if replace:
            os.replace(tmp, path)
        else:
            _publish_new(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


_SWEPT: set[tuple[str, str]] = set()  # (path, suffix) whose dead writers' temps this process removed


@functools.cache
def _host_tag() -> str:
    """A short tag of this host and pid namespace: a pid in a temp's name is judged only where it
    was given (a file system shared with another machine or container has other processes)."""
    import hashlib
    import socket

    try:
        namespace = str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        namespace = ""
    return hashlib.sha1(f"{socket.gethostname()}/{namespace}".encode()).hexdigest()[:6]


def _temp_prefix(name: str) -> str:
    return f".{name}.{_host_tag()}-{os.getpid()}."


def remove_dead_temps(path: str | os.PathLike, suffix: str = ".tmp") -> list[Path]:
    """Remove the temps of `path` (`atomic_path`'s names, this `suffix`) left by writers of this
    host that no longer run. Why: a writer killed with -9 between its temp and its rename left a
    hidden copy of the output beside it for ever (a model's summary, a tuned config, a plot each
    time). A live writer's temp, a thread's of ours included, is never touched."""
    path = Path(path)
    removed = []
    for left, _, alive in pid_named(path.parent, f".{path.name}.{_host_tag()}-", then=".", ending=suffix):
        if not alive:
            left.unlink(missing_ok=True)
            removed.append(left)
    return removed


def probe_writable(path: str | os.PathLike) -> None:
    """Raise the OSError that writing `path` through `atomic_path` (which makes its missing
    folders) would meet, making nothing: a temp in the nearest folder that exists, removed at once
    (named as `atomic_path`'s are, so one a kill left here goes with the next writer). Why not make
    the folders: a command refused after this check (a bad --set, a missing store) left the
    folders of its --json / --out behind, and nothing removes them."""
    path = Path(path)
    existing = next((p for p in path.parents if p.exists()), Path.cwd())
    fd, name = tempfile.mkstemp(prefix=_temp_prefix(path.name), suffix=".tmp", dir=existing)
    os.close(fd)
    os.unlink(name)


def _publish_new(tmp: Path, path: Path) -> None:
    """Give the written `tmp` the name `path` unless a file holds it, also one another writer
    created meanwhile: the temp file is linked to the name, which fails on an existing name where a
    rename would replace it. A file system without hard links gets an exclusive create of the name,
    then the rename onto it."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError:  # no hard links here
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        os.replace(tmp, path)
    tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write `path` through a temp file of this writer's own beside it, then rename."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_text_new(path: str | os.PathLike, text: str) -> Path:
    """Write `path` atomically, never replacing a file: FileExistsError when one is there, also one
    another writer created meanwhile (`atomic_path(replace=False)`)."""
    with atomic_path(path, replace=False) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


MERGE_PREFIX = ".merge-"
STAGED, COMMITTED = ".partial", ".ready"


def stage_tree(journal: Path, fill: Callable[[Path], None]) -> Path:
    """Lay out in a new folder of this writer's own in `journal` (`fill(folder)`) what is to land
    under a tree, and commit it by one rename; returns the committed folder, for `merge_tree`.

    Why: a tree that grows by merges (a kept run's `files/`, filled by one copy after another, as
    `log_artifacts` fills a run's artifacts) cannot be swapped whole, and a copy straight into it
    that a kill cut short left some of a model's files there, which a later upload took for the
    whole model. A kill while staging leaves a `.partial` folder named by our pid, never read and
    removed by the next `finish_merges`; one after the commit leaves a `.ready` folder that it moves
    in. Any error while staging removes the folder."""
    journal.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{MERGE_PREFIX}{os.getpid()}-", suffix=STAGED, dir=journal))
    try:
        fill(staging)
    except BaseException:
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
        raise
    # The commit time first in the name: `finish_merges` moves committed trees in in that order.
    ready = journal / f"{MERGE_PREFIX}{time.time_ns():020d}-{staging.name[len(MERGE_PREFIX) : -len(STAGED)]}{COMMITTED}"
    os.replace(staging, ready)
    return ready


def merge_tree(ready: Path, root: Path) -> None:
    """Move every file of the committed `ready` (`stage_tree`) to the same place under `root`, then
    remove it. A file replaces the file or folder at its place, as the newer copy; files of `root`
    that `ready` does not hold stay. Each move is a rename, so a kill part-way leaves each file whole
    in one place or the other, and doing it again (`finish_merges`, or another finisher at the same
    time) moves the rest."""
    import shutil

    for dirpath, _, filenames in os.walk(ready):
        here = Path(dirpath)
        folder = root / here.relative_to(ready)
        _make_folder(folder, root)
        for name in filenames:
            target = folder / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            try:
                os.replace(here / name, target)
            except FileNotFoundError:  # moved meanwhile by another finisher of the same tree
                pass
    shutil.rmtree(ready, ignore_errors=True)


def _make_folder(folder: Path, root: Path) -> None:
    """`folder` (under `root`) as a folder, a file at its place or at one of its parents' removed:
    the newer copy has a folder where an older one had a file."""
    root.mkdir(parents=True, exist_ok=True)
    relative = folder.relative_to(root)
    for step in [*reversed(relative.parents), relative]:
        path = root / step
        if path.is_symlink() or (path.exists() and not path.is_dir()):
            path.unlink()
        path.mkdir(exist_ok=True)


def finish_merges(journal: Path, root: Path) -> list[str]:
    """At the next start: move in what a killed writer committed in `journal` (oldest first), and
    remove what it had only staged (`stage_tree`), once its process is gone. Returns what was done,
    one line each."""
    import shutil

    if not journal.is_dir():
        return []
    done = []
    for left, _, alive in sorted(pid_named(journal, MERGE_PREFIX, ending=STAGED)):
        if not alive:
            shutil.rmtree(left, ignore_errors=True)
            done.append(f"removed {left.name}, a copy into {root} that a kill cut short")
    for left in sorted(journal.glob(f"{MERGE_PREFIX}*{COMMITTED}")):
        merge_tree(left, root)
        done.append(f"moved the rest of {left.name} into {root}")
    return done


@contextmanager
def announced_lock(
    path: str | os.PathLike, what: str, say: Callable[[str], None] | None = None, *, singleton: bool = False
) -> Iterator[FileLock]:
    """Hold the `filelock` at `path`, first saying `waiting for <what> to finish` when another
    process (or thread) holds it: a command that waits on a lock for minutes (a download, a stack
    starting, a long ingest) must say why it stalls. `say` defaults to a line on stderr; `singleton`
    makes the lock re-entrant across this process's callers of one path (see `storage.writer_lock`).
    Yields the lock (its `lock_counter` tells a re-entrant caller whether it is the outermost)."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(path), is_singleton=singleton)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        (say or _to_stderr)(f"waiting for {what} to finish")
        lock.acquire()
    try:
        yield lock
    finally:
        lock.release()


class LocksUnsupported(OSError):
    """The file system (or OS) of a `lock_for_life` path has no flock (some network mounts)."""


def lock_for_life(path: str | os.PathLike, *, shared: bool = False, wait: bool = True, create: bool = False,
                  mode: int = 0o666) -> int:  # fmt: skip
    """flock `path` and return the descriptor that holds the lock: held until it is closed or this
    process ends, however it ends (the kernel releases it at a kill -9 too), so a lock found free
    proves its holders gone, and a lock held says one lives; a pid file says neither reliably (a
    start time moves with the wall clock, a pid means nothing across PID namespaces).

    `shared`: many holders at once (the writers of an offline bundle), `wait=False`: BlockingIOError
    at once when another process holds it in the other mode. `create=False` never makes the file
    (a probe must not: FileNotFoundError instead); `mode` is the new file's. LocksUnsupported where the
    file system has no such locks, for the caller to decide what an unguarded file means. The file
    is opened read-only (flock needs no more, and a read-only folder's lock still works) and not
    inherited by child processes (Python's default), which would otherwise keep it held.

    Why here: the stack claims (`recsys.stack.claim`) and the offline bundles' writer lock
    (`recsys.tracking.offline`) each called fcntl.flock themselves. `filelock` is for locks taken
    and released around a block; this is for ones that mean "its owner still runs"."""
    import errno

    fd = os.open(path, os.O_RDONLY | (os.O_CREAT if create else 0), mode)
    try:
        import fcntl
    except ImportError:  # no flock on this OS
        os.close(fd)
        raise LocksUnsupported(errno.ENOSYS, f"no file locks on this system for {path}") from None
    op = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB)
    try:
        fcntl.flock(fd, op)
    except BlockingIOError:
        os.close(fd)
        raise
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            raise LocksUnsupported(exc.errno, f"no file locks on {path}: {exc.strerror}") from None
        raise
    except BaseException:
        os.close(fd)
        raise
    return fd


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def process_temp_dir(prefix: str) -> Path:
    """A new `$TMPDIR/<prefix>-<pid>-XXXX` directory that this process needs while it runs, made
    after removing those of `prefix` whose process no longer runs (`remove_dead_process_dirs`).

    Why: such a directory (a served model's artifacts, read lazily; the split handed to DDP ranks)
    cannot be a `with` block's, and a process killed with -9 leaves it for ever; on a machine that
    restarts `recsys serve` on a schedule, each start left a copy of the model in $TMPDIR."""
    remove_dead_process_dirs(prefix)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}-{os.getpid()}-"))


@contextmanager
def scratch_dir(prefix: str) -> Iterator[str]:
    """`tempfile.TemporaryDirectory(prefix=...)` that a kill -9 does not leave behind for ever: a
    `process_temp_dir(prefix)` (named by our pid), removed when the block ends, and the directories
    of dead processes under the same prefix removed as it starts.

    Why: the scratch space of logging a model (its saved copy and the pyfunc's), of re-scoring the
    champion (a downloaded copy of it) and of a logged split (every matrix) is a `with` block's, and
    a run or `recsys promote` killed with -9 inside one left it in $TMPDIR, a model's size per kill
    (EASE's n_items^2 weights twice over), with no name saying whose it was."""
    import shutil

    path = process_temp_dir(prefix)
    try:
        yield str(path)
    finally:
        shutil.rmtree(path, ignore_errors=True)


def popen_off_our_streams(args: list[str], prefix: str, **kwargs: object):  # -> subprocess.Popen
    """Start `args` in a session of its own, its stdin on /dev/null and its stdout and stderr in
    `$TMPDIR/<prefix>-<our pid>-*/server.log` (the Popen's `log_file` attribute), never on ours.

    Why not our streams: a server child outlives a command killed with -9 (until the next start
    stops it), and a child writing to the command's stdout or stderr held the command's pipe open
    all that while, so whatever read the command's output to its end waited too: `recsys run |
    tee run.log`, `recsys ui | tee ui.log` (and a scheduler or CI job capturing the output) hung
    after the kill instead of ending with it. The caller passes the log on (`pass_on_log`); the
    directory of a command that has ended goes with the next start (`process_temp_dir`)."""
    import subprocess

    log_file = process_temp_dir(prefix) / "server.log"
    with log_file.open("ab") as log_out:
        child = subprocess.Popen(  # type: ignore[call-overload]
            args, start_new_session=True, stdin=subprocess.DEVNULL, stdout=log_out, stderr=subprocess.STDOUT, **kwargs
        )
    child.log_file = log_file
    return child


def pass_on_log(log_file: Path, offset: int = 0) -> int:
    """Copy what `log_file` holds past byte `offset` to our stderr; returns the new offset (the
    same when the file is gone or unreadable: a log is never worth failing a command over)."""
    try:
        with log_file.open("rb") as log:
            log.seek(offset)
            data = log.read()
    except OSError:
        return offset
    if data:
        stream = getattr(sys.stderr, "buffer", None)
        with _suppress_os_errors():
            if stream is not None:
                sys.stderr.flush()
                stream.write(data)
                stream.flush()
            else:  # a replaced sys.stderr (tests' capture) takes text
                sys.stderr.write(data.decode(errors="replace"))
    return offset + len(data)


@contextmanager
def _suppress_os_errors() -> Iterator[None]:
    try:
        yield
    except (OSError, ValueError):  # our stderr closed (a reader gone): the log has nowhere to go
        pass


def pid_named(folder: Path, prefix: str, then: str = "-", ending: str = "") -> list[tuple[Path, int, bool]]:
    """The entries of `folder` named `<prefix><pid><then>...<ending>` (what a writer made under a name
    that carries its pid), each with that pid and whether the process runs (a reused pid
    counts as running until that process ends too: a late clean-up, never a live writer's leftover
    taken). What every "remove what a killed writer left" here reads: temps, staging folders,
    scratch directories."""
    import psutil

    named = re.compile(rf"{re.escape(prefix)}(\d+){re.escape(then)}.+")
    found = []
    try:
        with os.scandir(folder) as entries:
            names = [e.name for e in entries if e.name.startswith(prefix) and e.name.endswith(ending)]
    except OSError:
        return found
    for name in names:
        match = named.fullmatch(name)
        if match and int(match.group(1)) < 1 << 31:  # longer digits are no pid (a time: `stage_tree`)
            pid = int(match.group(1))
            found.append((folder / name, pid, psutil.pid_exists(pid)))
    return found


def process_dirs(prefix: str) -> list[tuple[Path, int, bool]]:
    """The `$TMPDIR/<prefix>-<pid>-*` directories, each with its pid and whether that process runs
    (`pid_named`)."""
    return [entry for entry in pid_named(Path(tempfile.gettempdir()), f"{prefix}-") if entry[0].is_dir()]


def dead_process_dirs(prefix: str) -> list[Path]:
    """The `process_dirs` of processes that no longer run. Read before `remove_dead_process_dirs`
    by a command whose directory records what a killed one left to undo (`recsys schedule`: the
    flow runs it had started)."""
    return [path for path, _, alive in process_dirs(prefix) if not alive]


def remove_dead_process_dirs(prefix: str) -> list[Path]:
    """Delete `$TMPDIR/<prefix>-<pid>-*` directories whose pid no longer runs (`dead_process_dirs`)."""
    import shutil

    removed = dead_process_dirs(prefix)
    for left in removed:
        shutil.rmtree(left, ignore_errors=True)
    return removed
