"""What to do with a scientific array file handed to ingest (MATLAB .mat, NumPy .npy / .npz): the
file's kind and shape, read from its header alone (nothing loaded, nothing unpickled), and where
the data allows, the `python -c` line that writes it as CSV for `recsys ingest`. Kept apart from
`sniff`, which only decides that a file is one of these (its first bytes)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


def matlab_hint(path: Path) -> str:
    """What to do with a MATLAB .mat file (Ciao's and Epinions' `rating.mat`, as Tang et al. ship
    them: a matrix a file, one row per rating): the line that writes its largest matrix as CSV, with
    a header naming the columns by position for the user to rename (the file names none)."""
    try:
        from scipy.io import whosmat

        name, shape, _ = max(whosmat(path), key=lambda v: math.prod(v[1]))
    except Exception:  # a damaged or unusual file: the kind alone is still the right hint
        name, shape = "NAME", (0, 4)
    columns = ",".join(["user_id", "item_id", *(f"column_{n}" for n in range(3, max(shape[-1], 2) + 1))])
    held = f"its matrix {name!r} ({' x '.join(map(str, shape))})" if name != "NAME" else "its matrix"
    return (
        f"a MATLAB .mat file, as Ciao's and Epinions' rating.mat ship: write {held} as CSV first, e.g. "
        f"`python -c \"import numpy as np, scipy.io; np.savetxt('NEW.csv', scipy.io.loadmat('{path}')['{name}'], "
        f"fmt='%.15g', delimiter=',', header='{columns}', comments='')\"`, rename each column to what the "
        "set's README says it holds (user, item, rating, time), and ingest NEW.csv"
    )


def _npz_arrays(path: Path) -> dict[str, tuple[tuple[int, ...], str]] | None:
    """The arrays of a NumPy .npz archive (a zip whose every member is a `.npy` file, as np.savez
    and scipy.sparse.save_npz write it), name -> (shape, dtype kind), read from the members' headers
    only; None for any other zip (or one that cannot be read)."""
    import zipfile

    import numpy as np

    arrays: dict[str, tuple[tuple[int, ...], str]] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if not names or not all(n.endswith(".npy") for n in names):
                return None
            for name in names:
                with archive.open(name) as fh:
                    version = np.lib.format.read_magic(fh)
                    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                    shape, _, dtype = read(fh)
                arrays[name.removesuffix(".npy")] = (tuple(shape), dtype.kind)
    except Exception:  # not a zip after all, a damaged one, a member no .npy header starts
        return None
    return arrays


def npz_hint(path: Path) -> str | None:
    """What to do with a NumPy .npz archive, which the zip's hint (unzip it, or export the sheet)
    did not name: the `python -c` line that writes it as CSV. A SciPy sparse matrix (save_npz:
    `data`, `indices`, `indptr`, `format`, `shape`) is written as its (row, column, value)
    triples; 1-D arrays of one length (`users`, `items`, `ratings`) side by side, named after
    the arrays; otherwise the largest array, its columns named by position for the user to rename."""
    arrays = _npz_arrays(path)
    if arrays is None:
        return None
    members = ", ".join(f"{name!r} ({' x '.join(map(str, shape)) or 'scalar'})" for name, (shape, _) in list(arrays.items())[:5])
    what = f"a NumPy archive (.npz: a zip of .npy arrays, here {members}{' ...' if len(arrays) > 5 else ''})"
    save = "fmt='{fmt}', delimiter=',', header='{header}', comments='')\"`"
    if {"data", "format", "shape"} <= arrays.keys():
        line = (
            f"`python -c \"import numpy as np, scipy.sparse as sp; m = sp.load_npz('{path}').tocoo(); "
            "np.savetxt('NEW.csv', np.column_stack([m.row, m.col, m.data]), "
            + save.format(fmt="%.15g", header="user_id,item_id,weight")
        )
        return (
            "a SciPy sparse matrix saved as a NumPy archive (.npz: a zip of .npy arrays, as scipy.sparse.save_npz "
            f"writes it): write its entries as CSV first, e.g. {line}, check that its rows are the users and its columns the items "
            "(swap the two names if not), and ingest NEW.csv"
        )
    kinds = {kind for _, kind in arrays.values()}
    fmt = "%s" if kinds & set("USO") else "%.15g"
    lengths = {shape for shape, _ in arrays.values()}
    if len(arrays) > 1 and len(lengths) == 1 and len(next(iter(lengths))) == 1:
        names = tuple(arrays)
        line = (
            f"`python -c \"import numpy as np; d = np.load('{path}'); "
            f"np.savetxt('NEW.csv', np.column_stack([d[k] for k in {names!r}]), "
            + save.format(fmt=fmt, header=",".join(names))
        )
        return (
            f"{what}: write its arrays side by side as CSV first, e.g. {line}, rename each column to what it "
            "holds (user_id, item_id, rating, timestamp), and ingest NEW.csv"
        )
    name, (shape, _) = max(arrays.items(), key=lambda kv: math.prod(kv[1][0]))
    width = shape[-1] if len(shape) == 2 else 1
    columns = ",".join(["user_id", "item_id", *(f"column_{n}" for n in range(3, max(width, 2) + 1))])
    line = (
        f"`python -c \"import numpy as np; np.savetxt('NEW.csv', np.load('{path}')['{name}'], "
        + save.format(fmt=fmt, header=columns)
    )
    return (
        f"{what}: write its array {name!r} as CSV first, e.g. {line}, rename each column to what it holds "
        "(user, item, rating, time), and ingest NEW.csv"
    )


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype] | None:
    """The shape and dtype of the NumPy array in `.npy` file `path`, from its header only (the data
    is never read, nor unpickled); None when the file itself is no `.npy` (a gzip'd one) or its
    header cannot be read."""
    import numpy as np

    try:
        with path.open("rb") as fh:
            version = np.lib.format.read_magic(fh)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(fh)
    except Exception:  # a damaged header, a gzip'd .npy: the kind alone is still the right hint
        return None
    return tuple(shape), dtype


def npy_hint(path: Path) -> str:
    """What to do with a NumPy `.npy` file (np.save): for a 2-D array of two columns or more, the
    `python -c` line that writes it as CSV, its columns named by position (user_id, item_id,
    column_3, ...) for the user to rename, as `matlab_hint` does; for a structured array (fields
    by name), the line that writes its fields under their names; otherwise what it holds and
    what ingest needs instead (a user and an item a row). An array of Python objects is never
    loaded: np.load would have to unpickle it (allow_pickle), which runs its code."""
    read = _npy_header(path)
    if read is None:
        return "a NumPy array (.npy): write it as CSV with a header line naming the columns"
    shape, dtype = read
    size = " x ".join(map(str, shape)) or "scalar"
    save = "`python -c \"import numpy as np; np.savetxt('NEW.csv', np.load('{path}'), fmt='{fmt}', delimiter=',', header='{header}', comments='')\"`"
    if dtype.hasobject:
        return (
            f"a NumPy array (.npy, {size}) of Python objects, which is not loaded: np.load would unpickle it "
            "(allow_pickle), which runs its code; if you trust it, write it as CSV with a header line naming "
            "the columns (user_id, item_id, ...) from the code that made it"
        )
    if dtype.names:
        fields = ", ".join(map(repr, dtype.names))
        if len(shape) == 1 and len(dtype.names) > 1 and all(dtype[n].kind in "biufU" and not dtype[n].shape for n in dtype.names):
            fmt = ",".join("%s" if dtype[n].kind == "U" else "%.15g" for n in dtype.names)
            line = save.format(path=path, fmt=fmt, header=",".join(dtype.names))
            return (
                f"a NumPy structured array (.npy, {size} records of fields {fields}): write it as CSV first, e.g. "
                f"{line}, rename each column to what it holds (user_id, item_id, rating, timestamp) if its name "
                "does not say so, and ingest NEW.csv"
            )
        return (
            f"a NumPy structured array (.npy, {size}, fields {fields}): write it as CSV with a header line naming "
            "the columns, one row per interaction (a user and an item at least)"
        )
    if len(shape) == 2 and shape[1] >= 2 and dtype.kind in "biufUM":
        fmt = "%s" if dtype.kind in "UM" else "%.15g"
        columns = ",".join(["user_id", "item_id", *(f"column_{n}" for n in range(3, shape[1] + 1))])
        return (
            f"a NumPy array (.npy, {size}): write it as CSV first, e.g. {save.format(path=path, fmt=fmt, header=columns)}, "
            "rename each column to what it holds (user, item, rating, time), and ingest NEW.csv"
        )
    held = (
        "one value"
        if not shape
        else f"{dtype} values, which are not written as CSV plainly"
        if len(shape) == 2 and shape[1] >= 2
        else f"one column of {shape[0]} values" if len(shape) == 1 else f"a {len(shape)}-D array" if len(shape) > 2 else "one column"
    )
    return (
        f"a NumPy array (.npy, {size}, {dtype}) that holds {held}, not interactions: ingest needs a user and an "
        "item a row; write the users' and the items' arrays side by side as CSV, e.g. `np.savetxt('NEW.csv', "
        "np.column_stack([users, items]), fmt='%s', delimiter=',', header='user_id,item_id', comments='')`"
    )
