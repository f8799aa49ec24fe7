"""The results contract: `bnexp.results.folder` owns results/<name>/ (every file name, path, read
and write); `bnexp.results.summary` defines summary.json and summary.csv's columns."""

from bnexp.results.folder import (
    BN_NOISE,
    CHECKPOINT,
    CLAIM,
    CONFIG,
    ESTIMATES,
    METRICS,
    PROBES,
    RUN_LOCK,
    SUMMARY,
    TIMING,
    ResultsFolder,
    is_blank,
    read_table,
)
from bnexp.results.summary import (
    ESTIMATE_COLUMNS,
    METRIC_COLUMNS,
    SUMMARY_COLUMNS,
    TIMING_COLUMNS,
    VAL_COLUMNS,
    RunSummary,
)

__all__ = [
    "BN_NOISE",
    "CHECKPOINT",
    "CLAIM",
    "CONFIG",
    "ESTIMATES",
    "ESTIMATE_COLUMNS",
    "METRICS",
    "METRIC_COLUMNS",
    "PROBES",
    "RUN_LOCK",
    "SUMMARY",
    "SUMMARY_COLUMNS",
    "TIMING",
    "TIMING_COLUMNS",
    "VAL_COLUMNS",
    "ResultsFolder",
    "RunSummary",
    "is_blank",
    "read_table",
]
