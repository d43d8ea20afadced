"""Start-up cost of `recsys`: reading a config, `--help`, `recsys ingest` and a bad config's error
never import torch, implicit, mlflow or scipy (together more than a second of CPU at every start;
before, `recsys.config` imported every model's module, and torch with them, to get the model configs;
then scipy.sparse, ~0.25 s, through the configs of EASE, popularity, the ANN index and distillation,
which lived beside their models). `--help` imports no numpy or polars either, nor the downloader.

Checked in fresh interpreters: this test process imported torch long ago."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

HEAVY = ("torch", "implicit", "mlflow", "scipy")
HELP_ONLY = (*HEAVY, "numpy", "polars", "urllib.request")  # `--help`: nothing but the CLI's own modules
CONFIGS = Path(__file__).parents[1] / "pipelines" / "configs"


def heavy_imports(importtime: str, heavy: tuple[str, ...] = HEAVY) -> list[str]:
    """The `heavy` modules in `python -X importtime`'s report (stderr), first of each package."""
    found: dict[str, str] = {}
    for line in importtime.splitlines():
        if line.startswith("import time:") and "|" in line:
            module = line.rsplit("|", 1)[1].strip()
            for name in heavy:  # a package, or one module of it (urllib.request, not urllib.parse)
                if module == name or module.startswith(f"{name}."):
                    found.setdefault(name, module)
    return sorted(found.values())


def recsys_command(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "recsys.cli", *args],
        cwd=cwd, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_config_and_cli_import_no_model_backend() -> None:
    """Every shipped config loads, a typo is named with its closest key (which looks up the model's
    config class), and the whole command tree is built, all without torch, implicit or mlflow."""
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path

        import recsys.cli
        from recsys.config import load_config
        from recsys.errors import ConfigError

        recsys.cli.app  # builds the app: imports every command module
        configs = sorted(Path({str(CONFIGS)!r}).glob("*.toml"))
        assert configs
        for path in configs:
            load_config(path)
        try:
            load_config(configs[0], ["models=[{{name='w', kind='wals', factor=3}}]"])
        except ConfigError as error:
            assert "did you mean 'factors'" in str(error), error
        else:
            raise AssertionError("a typo was accepted")
        print(sorted({{m.split(".")[0] for m in sys.modules}} & set({HEAVY!r})))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_help_imports_only_the_command_line(tmp_path: Path) -> None:
    """`recsys --help` and a command's `--help` read no data and train nothing: no numpy, polars or
    scipy, and not the downloader's urllib (the data set names come from `recsys.data.public_sets`)."""
    for args in (["--help"], ["ingest", "--help"], ["data", "fetch", "--help"]):
        shown = recsys_command(*args, cwd=tmp_path)
        assert shown.returncode == 0 and "Usage" in shown.stdout, shown.stderr[-2000:]
        assert heavy_imports(shown.stderr, HELP_ONLY) == [], args


def test_ingest_and_a_bad_config_import_no_model_backend(tmp_path: Path) -> None:
    log = tmp_path / "log.csv"
    log.write_text("user_id,item_id,rating,timestamp\na,x,5,1\na,y,2,2\nb,x,4,3\nc,z,5,4\n")
    out = tmp_path / "processed"
    ingested = recsys_command("ingest", str(log), "--out", str(out), cwd=tmp_path)
    assert ingested.returncode == 0, ingested.stderr[-2000:]
    assert (out / "manifest.json").is_file()
    assert heavy_imports(ingested.stderr) == []

    typo = tmp_path / "typo.toml"
    typo.write_text('[[models]]\nname = "w"\nkind = "wals"\nfactor = 3\n')
    # serve's own imports (the server, mlflow, torch) come after the config is read
    for command in ("train", "serve"):
        refused = recsys_command(command, "--config", str(typo), cwd=tmp_path)
        errors = [line for line in refused.stderr.splitlines() if not line.startswith("import time:")]
        assert refused.returncode == 2, refused.stderr[-2000:]
        assert len(errors) == 1 and errors[0].startswith(f"error: invalid config ({typo})"), refused.stderr[-2000:]
        assert "models.w.factor: unknown key (did you mean 'factors'?)" in errors[0]
        assert heavy_imports(refused.stderr) == [], command


def test_every_built_in_kind_registers_in_a_fresh_interpreter(tmp_path: Path) -> None:
    """Importing `recsys.models` no longer imports the model modules, so `model_kinds()` and
    `Recommender.load` must import them all: a saved factors model loads where nothing imported
    `recsys.models.factors` first, and every kind a config can name maps to its model's config."""
    import numpy as np

    from recsys.config import MODEL_CONFIGS
    from recsys.models.factors import FactorModel

    FactorModel.from_arrays(np.eye(3, 2), np.eye(4, 2)).save(tmp_path / "model")
    script = textwrap.dedent(
        f"""
        from recsys.models import model_kinds
        from recsys.models.base import Recommender

        model = Recommender.load({str(tmp_path / "model")!r})
        print(model.kind, model.item_factors.shape, sorted(model_kinds()))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split(maxsplit=3)[:3] == ["factors", "(4,", "2)"]
    assert result.stdout.split(maxsplit=3)[3].strip() == str(sorted({*MODEL_CONFIGS, "factors"}))

    from recsys.models import model_kinds

    assert {kind: model_kinds()[kind].Config for kind in MODEL_CONFIGS} == MODEL_CONFIGS


def test_polars_allocator_keeps_freed_pages_unless_the_user_set_it() -> None:
    """`import recsys` sets polars' jemalloc decay (recsys/__init__.py) before polars loads; a
    value the user set is kept. Without it ingest re-faulted ~30% more pages (kernel time)."""
    import os

    from recsys import ALLOCATOR_ENV

    code = "import os, recsys, polars; print(os.environ.get('_RJEM_MALLOC_CONF'))"
    plain = {k: v for k, v in os.environ.items() if k != "_RJEM_MALLOC_CONF"}
    ours = subprocess.run([sys.executable, "-c", code], env=plain, capture_output=True, text=True, timeout=60)
    # polars puts its own defaults first and a value found in the environment after them (the last wins)
    assert ours.stdout.strip().endswith("," + ALLOCATOR_ENV["_RJEM_MALLOC_CONF"])
    theirs = subprocess.run([sys.executable, "-c", code], env={**plain, "_RJEM_MALLOC_CONF": "narenas:2"},
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert theirs.stdout.strip().endswith(",narenas:2") and "10000" not in theirs.stdout
    # jemalloc itself reads it: its own statistics report the decay it runs with.
    stats = subprocess.run(
        [sys.executable, "-c", "import recsys, os; os.environ['_RJEM_MALLOC_CONF'] += ',stats_print:true'; "
         "import polars; polars.Series([1, 2]).sum()"],
        env=plain, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "opt.dirty_decay_ms: 10000" in stats.stderr
