"""A run killed (-9) while it copies artifacts into its offline bundle: the resume logs whole copies only.

`keep_files` copied a tree straight into a kept run's `files/` (`shutil.copytree`, merging into what
was there) and `keep_text` wrote its file in place, so a kill during either left part of a model
(a few of its files, or half an MLmodel) in `files/`, and `recsys run --resume-tracking` uploaded
that folder as the run's artifacts: a model run whose model could not be loaded. Each keep is now
staged in a folder of its own beside `files/`, committed by one rename and then moved in; the
resume first undoes a staging a kill cut short and finishes a committed one. The kills here are
real SIGKILLs of a process keeping files, placed inside the copy, inside the text write, between
the commit and the move, and inside the move; the rerun is a real resume into a real store.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from mlflow import MlflowClient

from recsys.faults import ENV
from recsys.tracking.offline import (
    FILES_DIR,
    RunRecord,
    keep_files,
    keep_text,
    offline_run_id,
    record_dir,
    resume_bundle,
)

MODEL_FILES = {"MLmodel": "flavors: {}\n", "weights.npy": "0" * 4096, "data/items.json": "[1, 2, 3]\n"}

KEEPER = """
import os, pathlib, shutil, signal, sys
from pathlib import Path
from recsys.tracking.offline import RunRecord, keep_files, keep_text, save_record

bundle, source, run_id, kill = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4]
record = RunRecord("wals", "wals", run_id, status="FINISHED")
save_record(bundle, record)
keep_text(bundle, record, "kept whole\\n", "notes.txt")  # an earlier keep, complete

def die():
    os.kill(os.getpid(), signal.SIGKILL)

if kill == "copy":  # one file of the tree copied, the next one not
    real_copyfile, copied = shutil.copyfile, []
    def copyfile(src, dst, *args, **kwargs):
        if copied:
            die()
        copied.append(src)
        return real_copyfile(src, dst, *args, **kwargs)
    shutil.copyfile = copyfile
elif kill == "text":  # half of the text written
    real_write_text = pathlib.Path.write_text
    def write_text(self, data, *args, **kwargs):
        if self.name == "MLmodel":
            with open(self, "w") as out:
                out.write(data[: len(data) // 2])
            die()
        return real_write_text(self, data, *args, **kwargs)
    pathlib.Path.write_text = write_text
elif kill == "move":  # the third rename of the keep: its commit, then one file moved in, not the next
    real_replace, renames = os.replace, []
    def replace(src, dst, *args, **kwargs):
        renames.append(src)
        if len(renames) == 3:
            die()
        return real_replace(src, dst, *args, **kwargs)
    os.replace = replace
if kill == "text":
    keep_text(bundle, record, (source / "MLmodel").read_text(), "model/MLmodel")
else:
    keep_files(bundle, record, source, "model")
"""


def _source(tmp_path: Path) -> Path:
    source = tmp_path / "pyfunc"
    for name, text in MODEL_FILES.items():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_text(text)
    return source


def _artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    found: set[str] = set()
    for entry in client.list_artifacts(run_id, path):
        found |= _artifacts(client, run_id, entry.path) if entry.is_dir else {entry.path}
    return found


def _killed_keep_then_resume(uri: str, tmp_path: Path, kill: str, env: dict[str, str] | None = None) -> set[str]:
    """Keep a model in a bundle in a process killed as `kill` says, resume the bundle into a real
    store; the artifacts of the run the resume logged, checked free of any staging leftover."""
    bundle, run_id = tmp_path / "bundle", offline_run_id()
    killed = subprocess.run(
        [sys.executable, "-c", KEEPER, str(bundle), str(_source(tmp_path)), run_id, kill],
        capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})},
    )  # fmt: skip
    assert killed.returncode == -9, killed.stderr[-2000:]
    client = MlflowClient(uri, registry_uri=uri)
    experiment = client.create_experiment(
        f"keep-killed-{uuid.uuid4().hex[:8]}", artifact_location=(tmp_path / "artifacts").as_uri()
    )
    report = resume_bundle(client, experiment, bundle)  # the next start
    folder = record_dir(bundle, RunRecord("wals", "wals", run_id))
    assert sorted(p.name for p in folder.iterdir()) == [FILES_DIR, "run.json"]  # no staging left
    return _artifacts(client, report.runs["wals"])


@pytest.mark.parametrize("kill", ["copy", "text"])
def test_a_keep_killed_mid_copy_is_undone_at_the_resume(shared_mlflow_uri, tmp_path: Path, kill: str):
    """Killed with one file of the model copied (or half its MLmodel written): the resumed run
    has the earlier, whole keep and nothing of the cut one (it uploaded the part-copied model)."""
    assert _killed_keep_then_resume(shared_mlflow_uri, tmp_path, kill) == {"notes.txt"}


@pytest.mark.parametrize("kill", ["committed", "move"])
def test_a_keep_killed_after_its_commit_is_finished_at_the_resume(shared_mlflow_uri, tmp_path: Path, kill: str):
    """Killed once the copy was whole (committed), before or while it was moved into files/: the
    resume moves the rest in, so the run gets the whole model."""
    env = {ENV: "offline.kept:2"} if kill == "committed" else None  # the 1st is the notes.txt keep
    found = _killed_keep_then_resume(shared_mlflow_uri, tmp_path, "fault" if env else kill, env)
    assert found == {"notes.txt"} | {f"model/{name}" for name in MODEL_FILES}


def test_a_keep_over_an_existing_folder_merges_as_mlflow_logs(tmp_path: Path):
    """A second keep to the same place replaces the files it brings and keeps the others, as a
    second `log_artifacts` to one artifact path does in the store; a file where a folder now goes
    (or the reverse) gives way to the newer keep."""
    bundle, record = tmp_path / "bundle", RunRecord("wals", "wals", offline_run_id())
    source = _source(tmp_path)
    keep_files(bundle, record, source, "model")
    files = record_dir(bundle, record) / FILES_DIR
    second = tmp_path / "second"
    (second / "data").mkdir(parents=True)
    (second / "MLmodel").write_text("flavors: {python_function: {}}\n")
    (second / "data" / "more.json").write_text("{}\n")
    (second / "weights.npy").mkdir()  # a folder where a file was
    (second / "weights.npy" / "part-0").write_text("1\n")
    keep_files(bundle, record, second, "model")
    keep_text(bundle, record, "a file where a folder was\n", "model/data")
    found = {str(p.relative_to(files)): p.read_text() for p in files.rglob("*") if p.is_file()}
    assert found == {
        "model/MLmodel": "flavors: {python_function: {}}\n",
        "model/weights.npy/part-0": "1\n",
        "model/data": "a file where a folder was\n",
    }
    assert sorted(p.name for p in record_dir(bundle, record).iterdir()) == [FILES_DIR]
