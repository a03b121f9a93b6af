"""NannyML's CBPE on cases written by bench/estimate.py; run with the NannyML venv's python, not keel's.

Input: a Parquet file of rows (case, role, score, y) where role is "reference" (labelled rows CBPE is
fitted on) or "analysis" (the batch it estimates, labels withheld), and the decision threshold.
Each case is one batch: CBPE is fitted on its reference rows and estimates its analysis rows as one
chunk. Output: JSON {case: {"accuracy": ..., "roc_auc": ..., "calibrated": ...}} on stdout.

Usage: bench/.venvs/nannyml/bin/python bench/nannyml_cbpe.py ROWS.parquet THRESHOLD
"""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings

os.environ.setdefault("NML_DISABLE_USAGE_LOGGING", "1")  # NannyML's usage analytics: off (read at import)
warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)

import nannyml as nml  # noqa: E402
import pandas as pd  # noqa: E402


def estimate(reference: pd.DataFrame, analysis: pd.DataFrame) -> dict[str, float | bool]:
    cbpe = nml.CBPE(y_pred_proba="score", y_pred="pred", y_true="y", problem_type="classification_binary",
                    metrics=["accuracy", "roc_auc"], chunk_number=1)
    cbpe.fit(reference)
    result = cbpe.estimate(analysis).filter(period="analysis").to_df()
    # CBPE calibrates only when isotonic calibration lowers the expected calibration error in every
    # fold of a 10-fold check on the reference rows; otherwise it takes the scores as probabilities
    return {**{m: float(result[(m, "value")].iloc[0]) for m in ("accuracy", "roc_auc")},
            "calibrated": bool(cbpe.needs_calibration)}


def main() -> None:
    rows = pd.read_parquet(sys.argv[1])
    threshold = float(sys.argv[2])
    rows["pred"] = (rows["score"] >= threshold).astype(int)
    out = {}
    for case, part in rows.groupby("case", sort=False):
        reference = part[(part["role"] == "reference") & part["y"].notna()].reset_index(drop=True)
        reference["y"] = reference["y"].astype(int)
        analysis = part[part["role"] == "analysis"].drop(columns=["y"]).reset_index(drop=True)
        out[str(case)] = estimate(reference[["score", "pred", "y"]], analysis[["score", "pred"]])
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
