#!/usr/bin/env bash
# `make peers`: build each peer's own virtual environment (never the product's), then export the
# splits, run every system, score every list with the project's evaluator and write REPORT.md.
#
# The peers stay out of the product's dependencies: each lives in benchmarks/peers/.venv-<peer>/
# (git-ignored). A venv is (re)built only when its requirements file is newer than its stamp.
# A peer that fails to install is reported and skipped; the others still run.
#
#   benchmarks/peers/run_all.sh [run_all.py options, e.g. --reuse, --only recsys,implicit]
set -uo pipefail
cd "$(dirname "$0")/../.."
PY="${PY:-python3}"
HERE=benchmarks/peers

build_venv() {  # build_venv NAME REQUIREMENTS [POST_REQUIREMENTS]
    local venv="$HERE/.venv-$1" stamp="$HERE/.venv-$1/.stamp"
    if [[ -f "$stamp" && "$stamp" -nt "$2" && ( -z "${3:-}" || "$stamp" -nt "${3:-}" ) ]]; then
        return 0
    fi
    echo "building $venv"
    "$PY" -m venv "$venv" &&
        "$venv/bin/pip" install --quiet --upgrade pip &&
        "$venv/bin/pip" install --quiet -r "$2" &&
        { [[ -z "${3:-}" ]] || "$venv/bin/pip" install --quiet -r "$3"; } &&
        touch "$stamp" || echo "WARNING: could not build $venv; its runs will be reported as not run" >&2
}

test -x .venv/bin/python || { echo "run 'make setup' first (the project venv runs export, score and report)" >&2; exit 2; }
build_venv recbole "$HERE/requirements-recbole.txt" "$HERE/requirements-recbole-post.txt"
build_venv cornac "$HERE/requirements-cornac.txt"
build_venv lenskit "$HERE/requirements-lenskit.txt"

export TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1  # RecBole torch.loads its own checkpoints (torch >= 2.6)
exec .venv/bin/python "$HERE/run_all.py" "$@"
