"""The report command's choices, in a module without pandas: `kdrun report` checks its flags
and starts reading (kdrun.report.ahead) before the tables' modules load."""

from kdrun.errors import UserError

TABLES = ("top1", "top5", "delta", "diminishing", "agreement", "curves")
FORMATS = ("table", "markdown", "csv", "latex", "json")
SPLITS = ("auto", "teacher", "student")  # how a wide terminal table is split
PLOTTABLE = ("diminishing", "curves", "delta")
METRICS = ("best", "last", "last5")  # kdrun.report.metrics says what each means


def check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise UserError(f"--metric {metric!r}: valid metrics are {', '.join(METRICS)}")
    return metric
