"""Catalogs: pandas tables with ``id_str``, ``file_loc`` and one vote-count column per answer.

:func:`validate_catalog` checks a catalog against a schema once, up front, and raises a single
:class:`CatalogError` naming every problem, its columns and the first offending rows.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from zoobot_tf.outputs import read_parquet
from zoobot_tf.schemas import Schema, get_schema, schemas_with_columns

ID_COL = "id_str"
FILE_COL = "file_loc"
MAX_ROWS_SHOWN = 5
VALUE_KINDS = ("counts", "numbers", "labels")


class CatalogError(ValueError):
    """A catalog that does not fit the schema or the files on disk. The message lists every problem."""


def column_list(columns, limit: int = 30) -> str:
    """A catalog's column names for a message, the first ``limit`` of them."""
    names = [str(c) for c in columns]
    return ", ".join(names[:limit]) + (f", ... (+{len(names) - limit} more)" if len(names) > limit else "")


def missing_columns(missing: Sequence[str], present) -> str:
    """``missing`` column names for a message, each with the catalog's closest names when it has any
    (``'bar_stronk' (did you mean 'bar_strong', 'bar_no'?)``), at most 10."""
    import difflib

    present = [str(c) for c in present]
    named = [f"{c!r} (did you mean {', '.join(map(repr, close))}?)"
             if (close := difflib.get_close_matches(str(c), present, n=3)) else repr(c) for c in missing[:10]]
    return ", ".join(named) + (f" (+{len(missing) - 10} more)" if len(missing) > 10 else "")


def mirrored_rows(rows: pd.DataFrame, folder: str | Path, swap: dict[str, str], label_col: str = "label",
                  quality: int = 95) -> pd.DataFrame:
    """``rows`` again with each image mirrored left-right (written once into ``folder``, under its own file
    name, as JPEG ``quality``), ids suffixed ``_mirrored`` and the labels a mirror changes swapped
    (``{"clockwise_spiral": "anticlockwise_spiral", ...}``): flip augmentation, as catalog rows, for a task that
    labels chirality (train with ``flip=False``)."""
    from PIL import Image, ImageOps

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    locs = []
    for f in rows[FILE_COL]:
        target = folder / Path(f).name
        if not target.exists():
            with Image.open(f) as im:
                ImageOps.mirror(im).save(target, quality=quality)
        locs.append(str(target.resolve()))
    return rows.assign(**{FILE_COL: locs, ID_COL: rows[ID_COL] + "_mirrored",
                          label_col: rows[label_col].map(lambda v: swap.get(v, v))})


def _rows(df: pd.DataFrame, mask: np.ndarray, id_col: str) -> str:
    idx = np.flatnonzero(mask)
    shown = ", ".join(
        f"row {i} ({id_col}={df[id_col].iloc[i]!r})" if id_col in df.columns else f"row {i}"
        for i in idx[:MAX_ROWS_SHOWN]
    )
    more = f" and {len(idx) - MAX_ROWS_SHOWN} more" if len(idx) > MAX_ROWS_SHOWN else ""
    return shown + more


def validate_catalog(
    catalog: pd.DataFrame,
    schema: Schema | str | None = None,
    label_cols: Sequence[str] | None = None,
    require_files: bool = True,
    values: str = "counts",
    id_col: str = ID_COL,
    file_col: str = FILE_COL,
    check_files_limit: int | None = None,
) -> None:
    """Raise :class:`CatalogError` listing every problem found, or return None.

    Args:
        catalog: one row per galaxy.
        schema: the decision tree whose label columns must be present (or give ``label_cols``).
        label_cols: explicit label columns (finetuning targets); default: the schema's.
        require_files: check that every ``file_loc`` exists.
        values: what the label columns must hold: ``counts`` (finite, >= 0, integer vote counts),
            ``numbers`` (finite numbers) or ``labels`` (any non-missing value: class names or indices).
        check_files_limit: check only the first n files (huge catalogs on slow disks); None = all.
    """
    if values not in VALUE_KINDS:
        raise ValueError(f"values must be one of {VALUE_KINDS}. Received: values={values!r}")
    problems: list[str] = []
    if schema is not None:
        schema = get_schema(schema)  # a public entry point: a built-in name is accepted too
    if label_cols is None and schema is not None:
        label_cols = schema.label_cols
    label_cols = list(label_cols or [])
    if id_col not in catalog.columns:
        problems.append(f"missing id column {id_col!r}")
    if require_files and file_col not in catalog.columns:
        problems.append(f"missing image path column {file_col!r}")
    missing = [c for c in label_cols if c not in catalog.columns]
    if missing:
        problem = f"missing {len(missing)} label column(s): {missing_columns(missing, catalog.columns)}"
        if schema is not None and (fits := schemas_with_columns(catalog.columns)):
            problem += f"; the catalog has every label column of {', '.join(fits[:5])}: give one as the schema"
        problems.append(problem)
    if len(catalog) == 0:
        problems.append("the catalog has no rows")

    present = [c for c in label_cols if c in catalog.columns]
    for col in present:
        if values == "labels":
            missing_label = catalog[col].isna().to_numpy()
            if missing_label.any():
                problems.append(f"column {col!r} has missing labels at {_rows(catalog, missing_label, id_col)}")
            continue
        numbers = pd.to_numeric(catalog[col], errors="coerce").to_numpy(dtype=np.float64)
        bad_type = pd.isna(numbers) & catalog[col].notna().to_numpy()
        if bad_type.any():
            problems.append(f"column {col!r} is not numeric at {_rows(catalog, bad_type, id_col)}")
        nonfinite = ~np.isfinite(numbers) & ~bad_type
        if nonfinite.any():
            problems.append(f"column {col!r} has missing or non-finite values at {_rows(catalog, nonfinite, id_col)}")
        if values == "counts":
            finite = np.isfinite(numbers)
            negative = finite & (numbers < 0)
            if negative.any():
                problems.append(f"column {col!r} has negative counts at {_rows(catalog, negative, id_col)}")
            fractional = finite & (numbers != np.round(numbers))
            if fractional.any():
                problems.append(
                    f"column {col!r} has non-integer counts at {_rows(catalog, fractional, id_col)} "
                    f"(the Dirichlet-multinomial loss needs raw vote counts, not fractions)"
                )

    if id_col in catalog.columns:
        dup = catalog[id_col].duplicated(keep=False).to_numpy()
        if dup.any():
            problems.append(f"duplicate {id_col} values at {_rows(catalog, dup, id_col)}")
        empty = catalog[id_col].isna().to_numpy() | (catalog[id_col].astype(str).str.len() == 0).to_numpy()
        if empty.any():
            problems.append(f"empty {id_col} at {_rows(catalog, empty, id_col)}")

    if require_files and file_col in catalog.columns:
        locs = catalog[file_col].astype(str)
        if check_files_limit is not None:
            locs = locs.iloc[:check_files_limit]
        not_found = ~np.array([Path(p).is_file() for p in locs], dtype=bool)
        if not_found.any():
            problems.append(f"image files not found ({int(not_found.sum())}) at {_rows(catalog, not_found, id_col)}")

    if problems:
        raise CatalogError("Catalog does not match"
                           + (f" schema {schema.name!r}" if schema is not None else " its labels")
                           + ":\n  - " + "\n  - ".join(problems))


def read_catalog(path: str | Path) -> pd.DataFrame:
    """Read a CSV or Parquet catalog; ``id_str`` is always read as a string."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Catalog not found: {path}")
    parquet = path.suffix.lower() in (".parquet", ".pq")
    try:
        df = read_parquet(path) if parquet else pd.read_csv(path, dtype={ID_COL: str})
    except Exception as e:  # noqa: BLE001 - pandas/pyarrow raise many types for a garbled file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CatalogError(f"Cannot read the catalog {path} as {'Parquet' if parquet else 'CSV'}: {first}") from None
    if ID_COL in df.columns:
        df[ID_COL] = df[ID_COL].astype(str)
    return df


def folder_catalog(folder: str | Path) -> pd.DataFrame:
    """A catalog of every JPEG/PNG/FITS image in a folder (recursively); ``id_str`` is the path below the
    folder without its suffix (the file stem for a flat folder; ``x.fits.gz`` -> ``x``)."""
    from zoobot_tf.data.images import FITS_SUFFIXES, IMAGE_SUFFIXES, is_fits, without_image_suffix

    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and (p.suffix.lower() in IMAGE_SUFFIXES or is_fits(p)))
    if not files:
        raise FileNotFoundError(f"No images ({', '.join(IMAGE_SUFFIXES + FITS_SUFFIXES)}) found under {folder}")
    ids = [without_image_suffix(p.relative_to(folder)) for p in files]
    return pd.DataFrame({ID_COL: ids, FILE_COL: [str(p) for p in files]})


def resolve_file_locs(catalog: pd.DataFrame, base: str | Path, file_col: str = FILE_COL) -> pd.DataFrame:
    """Make relative ``file_loc`` paths absolute against ``base`` (the catalog's folder). A catalog without the
    column is returned as it is, for the caller's check to name what is missing."""
    if file_col not in catalog.columns:
        return catalog
    base = Path(base)
    out = catalog.copy()
    out[file_col] = [str(p) if Path(p).is_absolute() else str(base / p) for p in out[file_col].astype(str)]
    return out


# --------------------------------------------------------------------------- GZ2 (Willett et al. 2013)
_WILLETT_RE = re.compile(r"^t(\d\d)_.+_a(\d\d)_.+_count$")


def gz2_willett_to_schema_columns(table: pd.DataFrame, id_col: str = "objid") -> pd.DataFrame:
    """Rename the 37 ``t??_..._a??_..._count`` columns of the GZ2 data-release tables (Willett et al.
    2013, e.g. Table 5) to the ``gz2_willett`` schema's label columns, in schema order.

    Returns a new frame with ``id_str`` and the 37 vote-count columns.
    """
    count_cols = [c for c in table.columns if _WILLETT_RE.match(c)]
    schema = get_schema("gz2_willett")
    if len(count_cols) != schema.n_answers:
        raise CatalogError(f"Expected {schema.n_answers} GZ2 '*_count' columns (t01..t11); found {len(count_cols)}.")
    # Table order is task by task (t01..t11), answers in the published order: the schema's order.
    tasks = [int(_WILLETT_RE.match(c).group(1)) for c in count_cols]
    expected = [qi + 1 for qi, q in enumerate(schema.questions) for _ in q.answers]
    if tasks != expected:
        raise CatalogError(f"GZ2 count columns are not in task order t01..t11: {count_cols}")
    out = pd.DataFrame({ID_COL: table[id_col].astype(str)})
    for col, label in zip(count_cols, schema.label_cols):
        out[label] = table[col].astype(np.int64)
    return out
