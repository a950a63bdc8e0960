"""Summaries of the results files the bench scripts write through lib.sh's `measure`
(tab-separated: case, rep, rps, p50_ms, p99_ms, non2xx). Imported by the scripts' report
steps: `PYTHONPATH=bench python3 - "$RESULTS" <<PY ... from results import Results`."""

import csv
import statistics


class Results:
    """The rounds of each case, by case and round number."""

    def __init__(self, path):
        self.by = {}
        for r in csv.DictReader(open(path), delimiter="\t"):
            self.by.setdefault(r["case"], {})[r["rep"]] = r
        # CPU of the measured process, where the script set CPU_PID (lib.sh `measure`).
        try:
            for case, rep, cores in csv.reader(open(path + ".cpu"), delimiter="\t"):
                self.by[case][rep]["cpu"] = cores
        except FileNotFoundError:
            pass

    def per_core(self, case):
        """The median over rounds of req/s per core of the measured process."""
        return statistics.median(
            float(r["rps"]) / float(r["cpu"])
            for r in self.by[case].values()
            if float(r.get("cpu", 0)) > 0
        )

    def median(self, case, field):
        """The median of `field` over the case's rounds."""
        return statistics.median(float(r[field]) for r in self.by[case].values())

    def paired(self, a, b, field="rps"):
        """The median over rounds of a's `field` divided by b's in the same round."""
        return statistics.median(
            float(self.by[a][k][field]) / float(self.by[b][k][field]) for k in self.by[a]
        )

    def non2xx(self, case):
        """Non-2xx responses over all the case's rounds."""
        return sum(int(r["non2xx"] or 0) for r in self.by[case].values())

    def row(self, label, case, *extra, digits=3):
        """A markdown table row: label, median req/s, p50, p99, non-2xx, then `extra`."""
        cells = [
            label,
            f"{self.median(case, 'rps'):,.0f}",
            f"{self.median(case, 'p50_ms'):.{digits}f}",
            f"{self.median(case, 'p99_ms'):.{digits}f}",
            f"{self.non2xx(case):,}",
            *extra,
        ]
        return "| " + " | ".join(cells) + " |"


def med(rows, column):
    """The median of a column over rows."""
    return statistics.median(float(r[column]) for r in rows)


def paired(path, rate, ref="nginx"):
    """A results file with columns proxy, rep, RATE, ..., cpu, summed up per proxy: its rows,
    the median rate, its min and max, the rate per core of proxy CPU, and the paired ratio
    against REF (each round against REF's same round, then the median)."""
    by = {}
    for r in csv.DictReader(open(path), delimiter="\t"):
        by.setdefault(r["proxy"], []).append(r)
    refs = {r["rep"]: float(r[rate]) for r in by[ref]}
    out = {}
    for name, rows in by.items():
        values = [float(r[rate]) for r in rows]
        out[name] = {
            "rows": rows,
            "median": statistics.median(values),
            "min": min(values),
            "max": max(values),
            "per_core": statistics.median(
                float(r[rate]) / float(r["cpu"]) for r in rows if float(r["cpu"]) > 0
            ),
            "paired": statistics.median(float(r[rate]) / refs[r["rep"]] for r in rows),
        }
    return out
