"""The data contract: what a batch must look like, learned from training data or declared, and its check."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import polars as pl

from keel.core.config import ContractConfig
from keel.core.data.features import FeatureSpec, label_strings

# --- the data contract -------------------------------------------------------------------------


@dataclass
class Contract:
    """What a batch must look like: columns and kinds, label values, declared ranges and category sets."""

    columns: dict[str, str]
    target: str
    labels: list[str]
    ranges: dict[str, list[float]] = field(default_factory=dict)
    id: str | None = None
    null_shares: dict[str, float] = field(default_factory=dict)
    categories: dict[str, list[str]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Contract:
        return cls(**data)


def _kind(dtype: pl.DataType) -> str:
    if dtype == pl.Null:
        return "null"
    if dtype.is_numeric():
        return "numeric"
    if dtype == pl.Boolean:
        return "boolean"
    if dtype.is_temporal():
        return "temporal"
    if dtype == pl.String or isinstance(dtype, pl.Categorical | pl.Enum):
        return "string"
    return "other"  # binary, lists, arrays, structs: no feature or label is made of these


def _kind_of(values: pl.Series) -> str:
    """The kind of a batch's column; one with no value at all has none (a CSV reads an empty column as text)."""
    return "null" if values.len() and values.null_count() == values.len() else _kind(values.dtype)


def _mismatch(col: str, expected: str, values: pl.Series) -> str:
    """Why ``values`` break the contract's kind for ``col``, in words: numbers kept as text, or text among numbers."""
    actual = _kind_of(values)
    if expected == "numeric" and actual == "string":
        text = values.cast(pl.String)
        bad = text.is_not_null() & text.str.strip_chars().cast(pl.Float64, strict=False).is_null()
        if not bad.any():
            return f"column '{col}' holds numbers as text ({values.dtype}), the contract says numeric"
        row = int(bad.arg_true()[0])
        shown = str(text[row])
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        return (f"column '{col}' mixes numbers and text ({int(bad.sum())} of {values.len()} values are not numbers, "
                f"first {shown!r} in row {row + 1}), the contract says numeric")
    return f"column '{col}' is {actual} ({values.dtype}), the contract says {expected}"


def learn_contract(frame: pl.DataFrame, spec: FeatureSpec, ranges: Mapping[str, list[float]] | None = None,
                   categories: Mapping[str, list[str]] | None = None) -> Contract:
    """The contract of a model's training data: its columns and kinds, label values and null shares, with the
    declared `ranges` and `categories` of keel.toml's [contract]."""
    cols = [c for c in (*spec.features, spec.target) if c in frame.columns]
    labels = label_strings(frame[spec.target])
    nulls = {c: frame[c].null_count() / frame.height for c in spec.features} if frame.height else {}
    return Contract({c: _kind(frame.schema[c]) for c in cols}, spec.target, labels, dict(ranges or {}),
                    spec.id, nulls, dict(categories or {}))


@dataclass
class Validation:
    """The outcome of checking a batch: bad rows with reasons, or a reason to reject the batch."""

    rows: int
    bad: list[tuple[int, str]]
    batch_reason: str | None = None

    @property
    def bad_share(self) -> float:
        return len({i for i, _ in self.bad}) / self.rows if self.rows else 0.0

    @property
    def bad_indices(self) -> list[int]:
        return sorted({i for i, _ in self.bad})

    def to_dict(self) -> dict[str, Any]:
        reasons: dict[str, int] = {}
        for _, reason in self.bad:
            reasons[reason] = reasons.get(reason, 0) + 1
        return {"rows": self.rows, "bad_rows": len(self.bad_indices), "bad_share": self.bad_share,
                "reasons": reasons, "batch_reason": self.batch_reason}


def _compatible(expected: str, actual: str) -> bool:
    return expected == actual or "null" in (expected, actual) or (expected == "string" and actual in ("numeric", "boolean"))


def validate(frame: pl.DataFrame, contract: Contract, rules: ContractConfig,
             unreadable: list[tuple[int, str]] | None = None) -> Validation:
    """Check a batch against the contract; row problems are listed, structural ones reject the batch.

    `rules` are keel.toml's [contract] limits (max_bad_share, max_null_increase); the declared ranges
    travel in the contract. `unreadable` are rows the file itself got wrong (a CSV line cut short), bad rows
    like the others."""
    rows = frame.height
    if rows == 0:
        return Validation(rows, [], "the batch has no rows")
    for col, kind in contract.columns.items():
        if col == contract.target and col not in frame.columns:
            continue  # an unlabelled batch
        if col not in frame.columns:
            return Validation(rows, [], f"required column '{col}' is missing")
        if not _compatible(kind, _kind_of(frame[col])):
            return Validation(rows, [], _mismatch(col, kind, frame[col]))
    rise = rules.max_null_increase
    for col in contract.columns:
        if col in frame.columns and col != contract.target:
            share, usual = frame[col].null_count() / rows, contract.null_shares.get(col, 0.0)
            if share > usual + rise:
                return Validation(rows, [], f"column '{col}' is {share:.0%} null, {usual:.0%} in the reference "
                                            f"(limit +{rise:.0%})")
    checks: list[tuple[str, pl.Expr]] = []
    for col, (lo, hi) in contract.ranges.items():
        if col in frame.columns and frame.schema[col].is_numeric():
            checks.append((f"{col} outside [{lo:g}, {hi:g}]", (pl.col(col) < lo) | (pl.col(col) > hi)))
    for col, allowed in contract.categories.items():
        if col in frame.columns:
            shown = ", ".join(allowed[:5]) + (", ..." if len(allowed) > 5 else "")
            checks.append((f"{col} not in the declared categories ({shown})",
                           pl.col(col).is_not_null() & ~pl.col(col).cast(pl.String).is_in(allowed)))
    for col, kind in contract.columns.items():
        if kind == "numeric" and col in frame.columns and frame.schema[col].is_float():
            checks.append((f"{col} is not finite", pl.col(col).is_infinite() | pl.col(col).is_nan()))
    if contract.target in frame.columns and contract.labels and _kind(frame.schema[contract.target]) != "other":
        allowed = contract.labels
        checks.append((f"label {contract.target} not in {allowed}",
                       pl.col(contract.target).is_not_null() & ~pl.col(contract.target).cast(pl.String).is_in(allowed)))
    if contract.id and contract.id in frame.columns:
        checks.append((f"{contract.id} is null", pl.col(contract.id).is_null()))
        checks.append((f"{contract.id} is duplicated", pl.col(contract.id).is_duplicated()))
    bad: list[tuple[int, str]] = list(unreadable or [])
    if checks:
        flags = frame.select([expr.fill_null(False).alias(f"c{i}") for i, (_, expr) in enumerate(checks)])
        for i, (reason, _) in enumerate(checks):
            idx = np.flatnonzero(flags[f"c{i}"].to_numpy())
            bad.extend((int(j), reason) for j in idx)
    result = Validation(rows, bad)
    if bad and result.bad_share > rules.max_bad_share:
        top = bad[0][1]
        result.batch_reason = (
            f"{len(result.bad_indices)} of {rows} rows ({result.bad_share:.1%}) break the data contract, "
            f"over the {rules.max_bad_share:.0%} limit (first: {top})"
        )
    return result
