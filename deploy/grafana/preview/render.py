#!/usr/bin/env python3
"""Render a Grafana dashboard's panels from a real Prometheus, without Grafana.

Grafana is not packaged for the machines this project builds on, so this
script does what Grafana would do with deploy/grafana/sluice.json: it
substitutes the dashboard variables, runs every panel target through
Prometheus's HTTP API (/api/v1/query_range over the chosen time range), and
writes one self-contained HTML page laid out by each panel's gridPos (the
24-column grid, 30 px rows, 8 px gaps) with inline SVG charts, stat panels
as big numbers, legends from legendFormat and units from
fieldConfig.defaults.unit. It is a preview and a check, not a Grafana clone:
only the panel types, units and options that dashboard uses are drawn.

It also validates the dashboard. The exit status is non-zero when
Prometheus refused any query (every refusal is listed with its error), and,
with --require-data, when a panel had no query returning a series with a
value, or a legendFormat names a label none of its query's series carries.
With --rules, the alert rules Prometheus loaded (GET /api/v1/rules) must all
have been evaluated without error.

Python 3 standard library only. Example:

    render.py --prometheus http://127.0.0.1:9090 \\
        --dashboard deploy/grafana/sluice.json --minutes 5 \\
        --scrape-interval 2s --out target/dashboard-preview/index.html
"""

from __future__ import annotations

import argparse
import datetime as dt
import html
import json
import math
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

# Grafana's grid: 24 columns, rows of 30 px, 8 px between panels.
GRID_ROW_PX = 30
GRID_GAP_PX = 8
PAGE_PAD_PX = 16
HEADER_PX = 92

# Grafana's classic palette (palette-classic), in its order.
PALETTE = [
    "#7EB26D", "#EAB839", "#6ED0E0", "#EF843C", "#E24D42", "#1F78C1",
    "#BA43A9", "#705DA0", "#508642", "#CCA300", "#447EBC", "#C15C17",
    "#890F02", "#0A437C", "#6D1F62", "#584477",
]
# Grafana's named colours (dark theme) as threshold steps use them.
NAMED_COLORS = {
    "green": "#73BF69", "semi-dark-green": "#56A64B", "dark-green": "#37872D",
    "red": "#F2495C", "semi-dark-red": "#E02F44", "dark-red": "#C4162A",
    "yellow": "#FADE2A", "semi-dark-yellow": "#F2CC0C", "dark-yellow": "#E0B400",
    "orange": "#FF9830", "semi-dark-orange": "#FF780A", "dark-orange": "#FA6400",
    "blue": "#5794F2", "semi-dark-blue": "#3274D9", "dark-blue": "#1F60C4",
    "purple": "#B877D9", "semi-dark-purple": "#A352CC", "dark-purple": "#8F3BB8",
    "text": "#CCCCDC", "transparent": "transparent",
}

LEGEND_CALC_NAMES = {
    "lastNotNull": "Last *", "last": "Last", "max": "Max", "min": "Min",
    "mean": "Mean", "sum": "Total", "firstNotNull": "First *", "first": "First",
}


class PromError(Exception):
    """Prometheus answered a query with an error (or not at all)."""


# --------------------------------------------------------------------------
# Prometheus


class Prometheus:
    def __init__(self, url: str, timeout: float = 30.0):
        self.url = url.rstrip("/")
        self.timeout = timeout

    def get(self, path: str, params: list[tuple[str, str]] | None = None) -> object:
        query = urllib.parse.urlencode(params or [])
        url = f"{self.url}{path}" + (f"?{query}" if query else "")
        req = urllib.request.Request(url, headers={"Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as e:
            # 400/422/503 carry {"status":"error","errorType":..,"error":..}.
            try:
                body = json.load(e)
            except (ValueError, OSError):
                raise PromError(f"HTTP {e.code} {e.reason}") from None
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise PromError(f"cannot reach Prometheus at {self.url}: {e}") from None
        if not isinstance(body, dict) or body.get("status") != "success":
            err = body.get("error") if isinstance(body, dict) else body
            etype = body.get("errorType") if isinstance(body, dict) else None
            raise PromError(f"{etype}: {err}" if etype else str(err))
        return body.get("data")

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict]:
        data = self.get(
            "/api/v1/query_range",
            [("query", expr), ("start", f"{start:.3f}"), ("end", f"{end:.3f}"), ("step", f"{step:g}")],
        )
        if not isinstance(data, dict) or data.get("resultType") != "matrix":
            raise PromError(f"unexpected result type {data.get('resultType') if isinstance(data, dict) else data!r}")
        return data.get("result") or []

    def label_values(self, label: str, match: str | None, start: float, end: float) -> list[str]:
        params = [("start", f"{start:.3f}"), ("end", f"{end:.3f}")]
        if match:
            params.append(("match[]", match))
        data = self.get(f"/api/v1/label/{urllib.parse.quote(label)}/values", params)
        return sorted(str(v) for v in (data or []))


# --------------------------------------------------------------------------
# Durations and variables


def parse_duration(text: str) -> float:
    """'30s', '2m', '1h30m', '500ms' or plain seconds -> seconds."""
    text = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    total, pos = 0.0, 0
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    for m in re.finditer(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)", text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * units[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r}")
    return total


def prom_duration(seconds: float) -> str:
    """Seconds -> a Prometheus duration ('8s', '1m', '1500ms')."""
    ms = int(round(seconds * 1000))
    if ms % 1000:
        return f"{ms}ms"
    s = ms // 1000
    for unit, size in (("h", 3600), ("m", 60)):
        if s % size == 0 and s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"


VAR_RE = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\[\[(\w+)(?::(\w+))?\]\]|\$(\w+)")


def substitute(expr: str, values: dict[str, str]) -> str:
    """Grafana's $var, ${var}, ${var:fmt} and [[var]]; unknown names stay as they are."""

    def repl(m: re.Match) -> str:
        name = m.group(1) or m.group(3) or m.group(5)
        return values.get(name, m.group(0))

    return VAR_RE.sub(repl, expr)


def regex_escape(value: str) -> str:
    """Escape a value for a PromQL regex matcher (RE2)."""
    return re.sub(r"([\\.^$|?*+()\[\]{}])", r"\\\1", value)


LABEL_VALUES_RE = re.compile(r"^\s*label_values\(\s*(?:(.*),\s*)?(\w+)\s*\)\s*$", re.S)


def resolve_variables(dashboard: dict, given: dict[str, str], prom: Prometheus,
                      start: float, end: float, notes: list[str],
                      shown: dict[str, str]) -> dict[str, str]:
    """Values of the dashboard's template variables, in their order.

    A value given on the command line wins. Otherwise a query variable that
    includes "All" gets its allValue (or a regex of all its values), as
    Grafana's default "All" selection; one without "All" gets its first
    value; a datasource variable gets its own name (it never reaches PromQL).
    `shown` gets what the page's header says of each non-datasource variable.
    """
    values: dict[str, str] = {}
    for var in (dashboard.get("templating") or {}).get("list", []):
        name = var.get("name")
        if not name:
            continue
        vtype = var.get("type")
        if name in given:
            values[name] = shown[name] = given[name]
            continue
        if vtype == "datasource":
            values[name] = name
            continue
        if vtype == "constant":
            values[name] = shown[name] = str(var.get("query", ""))
            continue
        if vtype == "custom":
            options = [o.strip() for o in str(var.get("query", "")).split(",") if o.strip()]
        elif vtype == "query":
            q = var.get("query")
            q = q.get("query") if isinstance(q, dict) else q
            m = LABEL_VALUES_RE.match(substitute(str(q or ""), values))
            options = []
            if m:
                try:
                    options = prom.label_values(m.group(2), m.group(1), start, end)
                except PromError as e:
                    notes.append(f"variable ${name}: {e}")
            else:
                notes.append(f"variable ${name}: query {q!r} is not label_values(...); using .*")
        else:
            options = []
        if var.get("includeAll") or not options:
            all_value = var.get("allValue")
            if all_value:
                values[name] = all_value
            elif options:
                values[name] = "(" + "|".join(regex_escape(o) for o in options) + ")"
            else:
                values[name] = ".*"
            shown[name] = f"All ({', '.join(options) or 'no values'})"
        else:
            values[name] = shown[name] = options[0]
    return values


# --------------------------------------------------------------------------
# Units (Grafana's value formats, for the ones a broker dashboard uses)


def auto_decimals(v: float) -> int:
    a = abs(v)
    if a == 0 or a >= 100:
        return 0
    if a >= 10:
        return 1
    if a >= 1:
        return 2
    return min(6, 2 - int(math.floor(math.log10(a))))


def fixed(v: float, decimals: int | None) -> str:
    d = auto_decimals(v) if decimals is None else decimals
    s = f"{v:.{d}f}"
    if decimals is None and "." in s:
        s = s.rstrip("0").rstrip(".")
    if s in ("-0", "-0.0"):
        s = "0"
    return s


def scaled(v: float, base: float, suffixes: list[str], decimals: int | None) -> str:
    i = 0
    while abs(v) >= base and i < len(suffixes) - 1:
        v /= base
        i += 1
    return fixed(v, decimals) + suffixes[i]


def fmt_seconds(v: float, decimals: int | None) -> str:
    a = abs(v)
    if a == 0:
        return "0 s"
    if a < 1e-6:
        return fixed(v * 1e9, decimals) + " ns"
    if a < 1e-3:
        return fixed(v * 1e6, decimals) + " µs"
    if a < 1:
        return fixed(v * 1e3, decimals) + " ms"
    if a < 60:
        return fixed(v, decimals) + " s"
    if a < 3600:
        return fixed(v / 60, decimals) + " min"
    if a < 86400:
        return fixed(v / 3600, decimals) + " hour"
    return fixed(v / 86400, decimals) + " day"


SI = ["", " k", " M", " G", " T", " P"]
IEC = ["", " Ki", " Mi", " Gi", " Ti", " Pi"]
SHORT = ["", " K", " Mil", " Bil", " Tri", " Quadr"]
COUNT = ["", " K", " M", " B", " T"]
COUNT_UNITS = {"reqps": "req/s", "rps": "rd/s", "wps": "wr/s", "ops": "ops/s",
               "iops": "io/s", "cps": "c/s", "mps": "m/s"}


def fmt_value(v: float | None, unit: str | None, decimals: int | None = None) -> str:
    """A value as Grafana would show it with `unit`."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    unit = unit or "short"
    if unit == "none":
        return fixed(v, decimals)
    if unit == "short":
        return scaled(v, 1000, SHORT, decimals)
    if unit == "percent":
        return fixed(v, decimals) + "%"
    if unit == "percentunit":
        return fixed(v * 100, decimals) + "%"
    if unit == "s":
        return fmt_seconds(v, decimals)
    if unit == "ms":
        return fmt_seconds(v / 1e3, decimals)
    if unit in ("µs", "us"):
        return fmt_seconds(v / 1e6, decimals)
    if unit == "ns":
        return fmt_seconds(v / 1e9, decimals)
    if unit == "bytes":
        return scaled(v, 1024, [s + "B" if s else " B" for s in IEC], decimals)
    if unit == "decbytes":
        return scaled(v, 1000, [s + "B" if s else " B" for s in SI], decimals)
    if unit == "Bps":
        return scaled(v, 1000, [s + "B/s" if s else " B/s" for s in SI], decimals)
    if unit == "binBps":
        return scaled(v, 1024, [s + "B/s" if s else " B/s" for s in IEC], decimals)
    if unit == "bps":
        return scaled(v, 1000, [s + "b/s" if s else " b/s" for s in SI], decimals)
    if unit in COUNT_UNITS:
        return scaled(v, 1000, COUNT, decimals) + " " + COUNT_UNITS[unit]
    if unit.startswith("suffix:"):
        return fixed(v, decimals) + unit[len("suffix:"):]
    return fixed(v, decimals) + " " + unit


# --------------------------------------------------------------------------
# Panels and queries


def flatten_panels(panels: list[dict]) -> list[dict]:
    """Panels in dashboard order; a collapsed row's own panels follow it."""
    out = []
    for p in panels:
        out.append(p)
        if p.get("type") == "row" and p.get("panels"):
            out.extend(p["panels"])
    return out


LEGEND_RE = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def legend_name(fmt: str | None, metric: dict[str, str]) -> str:
    if fmt and fmt != "__auto":
        return LEGEND_RE.sub(lambda m: metric.get(m.group(1), ""), fmt)
    name = metric.get("__name__", "")
    labels = ", ".join(f'{k}="{v}"' for k, v in sorted(metric.items()) if k != "__name__")
    if labels:
        return f"{name}{{{labels}}}"
    return name or "Value"


def run_panel(panel: dict, prom: Prometheus, values: dict[str, str],
              start: float, end: float, step: float) -> dict:
    """Evaluates a panel's targets; returns series, errors and warnings."""
    result = {"series": [], "errors": [], "queries": [], "legend_problems": []}
    for target in panel.get("targets") or []:
        if target.get("hide"):
            continue
        raw = target.get("expr")
        if raw is None:
            continue
        expr = substitute(raw, values)
        ref = target.get("refId", "?")
        q = {"ref": ref, "expr": expr, "raw": raw, "series": 0, "with_values": 0, "error": None}
        result["queries"].append(q)
        try:
            matrix = prom.query_range(expr, start, end, step)
        except PromError as e:
            q["error"] = str(e)
            result["errors"].append((ref, expr, str(e)))
            continue
        fmt = target.get("legendFormat")
        for item in matrix:
            metric = item.get("metric") or {}
            points = []
            for ts, val in item.get("values") or []:
                try:
                    f = float(val)
                except ValueError:
                    f = math.nan
                points.append((float(ts), f))
            finite = [p for p in points if math.isfinite(p[1])]
            q["series"] += 1
            if finite:
                q["with_values"] += 1
            result["series"].append({
                "name": legend_name(fmt, metric),
                "metric": metric,
                "points": points,
                "ref": ref,
                "fmt": fmt if fmt and fmt != "__auto" else "",
            })
        if fmt and q["series"]:
            for label in LEGEND_RE.findall(fmt):
                if not any(label in (item.get("metric") or {}) for item in matrix):
                    result["legend_problems"].append(
                        (ref, f"legendFormat {fmt!r} names label {label!r}, which no series of this query has")
                    )
    return result


def reduce(points: list[tuple[float, float]], calc: str) -> float | None:
    vals = [v for _, v in points if math.isfinite(v)]
    if calc in ("last",):
        return points[-1][1] if points else None
    if calc in ("first",):
        return points[0][1] if points else None
    if not vals:
        return None
    if calc == "lastNotNull":
        return vals[-1]
    if calc == "firstNotNull":
        return vals[0]
    if calc == "max":
        return max(vals)
    if calc == "min":
        return min(vals)
    if calc == "mean":
        return sum(vals) / len(vals)
    if calc == "sum":
        return sum(vals)
    return vals[-1]


# --------------------------------------------------------------------------
# Drawing


def esc(s: object) -> str:
    return html.escape(str(s), quote=True)


def nice_step(span: float, target_ticks: int) -> float:
    if span <= 0 or not math.isfinite(span):
        return 1.0
    raw = span / max(1, target_ticks)
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def nice_step_for_unit(span: float, target_ticks: int, unit: str) -> float:
    """Tick spacing; binary units get powers-of-two-friendly steps."""
    if unit in ("bytes", "binBps") and span >= 1024:
        power = 1024 ** math.floor(math.log(span, 1024))
        return nice_step(span / power, target_ticks) * power
    return nice_step(span, target_ticks)


def y_range(series: list[dict], defaults: dict) -> tuple[float, float]:
    vals = [v for s in series for _, v in s["points"] if math.isfinite(v)]
    lo = min(vals) if vals else 0.0
    hi = max(vals) if vals else 1.0
    fixed_min = defaults.get("min")
    fixed_max = defaults.get("max")
    if lo >= 0 and (hi == lo or lo <= 0.5 * hi):
        lo = 0.0  # counts and rates read best from zero
    if hi <= 0 and (hi == lo or hi >= 0.5 * lo):
        hi = 0.0
    if hi == lo:
        pad = abs(hi) * 0.1 or 1.0
        lo, hi = lo - (pad if lo != 0 else 0), hi + pad
    if isinstance(fixed_min, (int, float)):
        lo = float(fixed_min)
    if isinstance(fixed_max, (int, float)):
        hi = float(fixed_max)
    if hi <= lo:
        hi = lo + 1
    return lo, hi


def time_ticks(start: float, end: float, width_px: float) -> list[float]:
    span = end - start
    want = max(2, int(width_px / 90))
    for step in (1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400):
        if span / step <= want:
            break
    first = math.ceil(start / step) * step
    ticks, t = [], first
    while t <= end:
        ticks.append(t)
        t += step
    return ticks


def fmt_time(ts: float, span: float) -> str:
    t = dt.datetime.fromtimestamp(ts, dt.timezone.utc)
    return t.strftime("%H:%M:%S" if span <= 1800 else "%H:%M")


def svg_timeseries(panel: dict, series: list[dict], colors: list[str], w: float, h: float,
                   start: float, end: float) -> str:
    defaults = (panel.get("fieldConfig") or {}).get("defaults") or {}
    custom = defaults.get("custom") or {}
    unit = defaults.get("unit") or "short"
    line_w = float(custom.get("lineWidth", 1) or 1)
    fill = float(custom.get("fillOpacity", 0) or 0) / 100.0
    lo, hi = y_range(series, defaults)
    step = nice_step_for_unit(hi - lo, max(2, int(h / 38)), unit)
    lo = math.floor(lo / step + 1e-9) * step if defaults.get("min") is None else lo
    hi = math.ceil(hi / step - 1e-9) * step if defaults.get("max") is None else hi
    ticks = []
    t = math.ceil(lo / step - 1e-9) * step
    while t <= hi + step * 1e-6:
        ticks.append(0.0 if abs(t) < step * 1e-9 else t)
        t += step
    labels = [fmt_value(t, unit) for t in ticks]
    axis_w = max([len(l) for l in labels] + [1]) * 6.4 + 10
    left, right, top, bottom = axis_w, 8, 6, 20
    pw, ph = max(10, w - left - right), max(10, h - top - bottom)

    def x(ts: float) -> float:
        return left + (ts - start) / (end - start) * pw

    def y(v: float) -> float:
        v = min(max(v, lo), hi)
        return top + (1 - (v - lo) / (hi - lo)) * ph

    out = [f'<svg width="{w:.0f}" height="{h:.0f}" viewBox="0 0 {w:.1f} {h:.1f}" xmlns="http://www.w3.org/2000/svg">']
    for t, label in zip(ticks, labels):
        yy = y(t)
        out.append(f'<line x1="{left:.1f}" y1="{yy:.1f}" x2="{left + pw:.1f}" y2="{yy:.1f}" class="grid"/>')
        out.append(f'<text x="{left - 6:.1f}" y="{yy + 3.5:.1f}" class="ylab">{esc(label)}</text>')
    for ts in time_ticks(start, end, pw):
        xx = x(ts)
        label = fmt_time(ts, end - start)
        out.append(f'<line x1="{xx:.1f}" y1="{top:.1f}" x2="{xx:.1f}" y2="{top + ph:.1f}" class="grid"/>')
        if xx + len(label) * 3.2 <= w:  # no label cut by the right edge
            out.append(f'<text x="{xx:.1f}" y="{top + ph + 14:.1f}" class="xlab">{esc(label)}</text>')
    base = y(0.0 if lo <= 0 <= hi else lo)
    for s, color in zip(series, colors):
        runs, cur = [], []
        for ts, v in s["points"]:
            if math.isfinite(v):
                cur.append((x(ts), y(v)))
            elif cur:
                runs.append(cur)
                cur = []
        if cur:
            runs.append(cur)
        for run in runs:
            pts = " ".join(f"{px:.1f},{py:.1f}" for px, py in run)
            if fill > 0 and len(run) > 1:
                area = f"{run[0][0]:.1f},{base:.1f} {pts} {run[-1][0]:.1f},{base:.1f}"
                out.append(f'<polygon points="{area}" fill="{color}" fill-opacity="{fill:.2f}" stroke="none"/>')
            if len(run) == 1:
                out.append(f'<circle cx="{run[0][0]:.1f}" cy="{run[0][1]:.1f}" r="{line_w + 0.5:.1f}" fill="{color}"/>')
            else:
                out.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="{line_w:.1f}" stroke-linejoin="round"/>')
    out.append("</svg>")
    return "".join(out)


def legend_html(panel: dict, series: list[dict], colors: list[str], max_rows: int) -> str:
    opts = (panel.get("options") or {}).get("legend") or {}
    if opts.get("showLegend") is False or opts.get("displayMode") == "hidden":
        return ""
    unit = ((panel.get("fieldConfig") or {}).get("defaults") or {}).get("unit") or "short"
    calcs = [c for c in opts.get("calcs") or [] if c in LEGEND_CALC_NAMES]
    shown, shown_colors = series, colors
    if len(series) > max_rows:
        # Keep the rows of the largest series (in their order): the legend
        # cannot scroll in a picture.
        def size(s: dict) -> float:
            return max([abs(v) for _, v in s["points"] if math.isfinite(v)] or [-1.0])
        keep = sorted(sorted(range(len(series)), key=lambda i: -size(series[i]))[:max_rows])
        shown = [series[i] for i in keep]
        shown_colors = [colors[i] for i in keep]
    rest = len(series) - len(shown)
    if opts.get("displayMode") == "table" and calcs:
        rows = ["<table class='legend'><tr><th></th>" + "".join(
            f"<th>{esc(LEGEND_CALC_NAMES[c])}</th>" for c in calcs) + "</tr>"]
        for s, color in zip(shown, shown_colors):
            cells = "".join(f"<td>{esc(fmt_value(reduce(s['points'], c), unit))}</td>" for c in calcs)
            rows.append(f"<tr><td class='name'><i style='background:{color}'></i>{esc(s['name'])}</td>{cells}</tr>")
        if rest:
            rows.append(f"<tr><td class='name more' colspan='{len(calcs) + 1}'>… {rest} smaller series not listed</td></tr>")
        rows.append("</table>")
        return "".join(rows)
    items = "".join(f"<span><i style='background:{c}'></i>{esc(s['name'])}</span>" for s, c in zip(shown, shown_colors))
    if rest:
        items += f"<span class='more'>… {rest} more</span>"
    return f"<div class='legend-list'>{items}</div>"


def threshold_color(defaults: dict, value: float | None) -> str:
    steps = ((defaults.get("thresholds") or {}).get("steps")) or [{"color": "green", "value": None}]
    color = steps[0].get("color", "green")
    if value is not None and math.isfinite(value):
        for st in steps:
            if st.get("value") is None or value >= st["value"]:
                color = st.get("color", color)
    return NAMED_COLORS.get(color, color)


def stat_html(panel: dict, series: list[dict], w: float, h: float) -> tuple[str, str]:
    """The stat cells, and the whole panel's background when one value colours it."""
    defaults = (panel.get("fieldConfig") or {}).get("defaults") or {}
    opts = panel.get("options") or {}
    unit = defaults.get("unit") or "short"
    calc = ((opts.get("reduceOptions") or {}).get("calcs") or ["lastNotNull"])[0]
    color_mode = opts.get("colorMode", "value")
    cells = []
    panel_bg = ""
    n = max(1, len(series))
    cw = w / n
    for s in series:
        v = reduce(s["points"], calc)
        color = threshold_color(defaults, v)
        text = fmt_value(v, unit)
        size = max(14, min(h * 0.5, cw / max(2.5, len(text) * 0.62)))
        spark = ""
        if opts.get("graphMode", "area") == "area":
            vals = [(t, val) for t, val in s["points"] if math.isfinite(val)]
            if len(vals) > 1:
                t0, t1 = vals[0][0], vals[-1][0]
                lo = min(v for _, v in vals)
                hi = max(v for _, v in vals)
                rng = (hi - lo) or 1.0
                sh = h * 0.4
                pts = " ".join(
                    f"{(t - t0) / ((t1 - t0) or 1) * cw:.1f},{h - 2 - (v - lo) / rng * sh if hi != lo else h - 2 - sh / 2:.1f}"
                    for t, v in vals)
                stroke = "rgba(255,255,255,0.55)" if color_mode == "background" else color
                fillc = "rgba(255,255,255,0.18)" if color_mode == "background" else color
                spark = (f"<svg class='spark' width='{cw:.0f}' height='{h:.0f}'>"
                         f"<polygon points='0,{h:.1f} {pts} {cw:.1f},{h:.1f}' fill='{fillc}' fill-opacity='0.5'/>"
                         f"<polyline points='{pts}' fill='none' stroke='{stroke}' stroke-width='1.2'/></svg>")
        label = ""
        if len(series) > 1 or s["fmt"]:
            label = f"<div class='stat-label'>{esc(s['name'])}</div>"
        if color_mode == "background" and len(series) == 1:
            panel_bg = f"background:linear-gradient(120deg,{color},{shade(color, 0.82)});border-color:{shade(color, 0.82)}"
            style = "color:#fff"
        elif color_mode == "background":
            style = f"background:linear-gradient(120deg,{color},{shade(color, 0.82)});color:#fff"
        elif color_mode == "value":
            style = f"color:{color}"
        else:
            style = ""
        cells.append(
            f"<div class='stat-cell' style='{style};width:{cw:.0f}px;height:{h:.0f}px'>{spark}"
            f"<div class='stat-text'>{label}<div class='stat-value' style='font-size:{size:.0f}px'>{esc(text)}</div></div></div>")
    return "".join(cells), panel_bg


def shade(color: str, factor: float) -> str:
    m = re.fullmatch(r"#([0-9a-fA-F]{6})", color or "")
    if not m:
        return color
    r, g, b = (int(m.group(1)[i:i + 2], 16) for i in (0, 2, 4))
    return "#%02x%02x%02x" % tuple(int(c * factor) for c in (r, g, b))


CSS = """
*{box-sizing:border-box}
body{margin:0;background:#111217;color:#ccccdc;font-family:Inter,"Helvetica Neue","DejaVu Sans",Arial,sans-serif;font-size:12px}
.page{position:relative}
.header{position:absolute;left:16px;right:16px;top:10px;height:74px;border-bottom:1px solid #2c3235}
.header h1{margin:0;font-size:19px;font-weight:500;color:#d8d9da}
.header h1 span{color:#8e8e8e;font-weight:400;font-size:14px;margin-left:10px}
.notice{margin-top:5px;font-size:13px;color:#f2cc0c}
.meta{margin-top:4px;color:#9fa7b3;font-size:12px}
.meta b{color:#ccccdc;font-weight:500}
.row{position:absolute;font-size:15px;font-weight:500;color:#d8d9da;display:flex;align-items:center}
.row:before{content:"⌄";margin-right:8px;color:#9fa7b3;position:relative;top:-3px}
.panel{position:absolute;background:#181b1f;border:1px solid #2c3235;border-radius:3px;overflow:hidden}
.ptitle{height:30px;line-height:30px;padding:0 10px;font-size:13px;font-weight:500;color:#ccccdc;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.ptitle .err{color:#f2495c;margin-right:6px}
.pbody{position:absolute;left:0;right:0;bottom:0;padding:0 8px 6px 4px}
.grid{stroke:rgba(204,204,220,0.09);stroke-width:1}
.ylab{fill:#9fa7b3;font-size:10.5px;text-anchor:end}
.xlab{fill:#9fa7b3;font-size:10.5px;text-anchor:middle}
table.legend{border-collapse:collapse;width:100%;font-size:11px;margin-left:4px}
table.legend tr{height:16px}
table.legend th{color:#6e9fff;font-weight:500;text-align:right;padding:0 6px;line-height:16px;white-space:nowrap}
table.legend td{text-align:right;padding:0 6px;line-height:16px;white-space:nowrap;color:#ccccdc}
table.legend td.name{text-align:left;width:99%;max-width:1px;overflow:hidden;text-overflow:ellipsis}
table.legend i,.legend-list i{display:inline-block;width:14px;height:4px;border-radius:2px;margin-right:6px;vertical-align:middle}
.legend-list{font-size:11px;padding-left:6px}.legend-list span{margin-right:12px;white-space:nowrap}
.more{color:#8e8e8e;font-style:italic}
.stat-cell{position:relative;display:inline-block;vertical-align:top;overflow:hidden}
.panel.stat-bg .ptitle{color:#fff;background:transparent}
.panel.stat-bg .pbody{padding:0}
.spark{position:absolute;left:0;top:0}
.stat-text{position:absolute;inset:0;display:flex;flex-direction:column;align-items:center;justify-content:center}
.stat-value{font-weight:500;line-height:1.05}
.stat-label{font-size:12px;opacity:.9}
.nodata{position:absolute;inset:0;display:flex;flex-direction:column;align-items:center;justify-content:center;color:#8e8e8e;font-size:13px;text-align:center;padding:0 12px}
.nodata small{margin-top:4px;font-size:11.5px;color:#9fa7b3}
.zero-note{position:absolute;top:6px;right:14px;background:rgba(24,27,31,0.85);border:1px solid #2c3235;border-radius:2px;padding:2px 8px;color:#9fa7b3;font-size:11.5px}
.qerr{position:absolute;inset:0;padding:6px 10px;color:#f2495c;font-family:"DejaVu Sans Mono",monospace;font-size:11px;white-space:pre-wrap;overflow:hidden}
.footer{position:absolute;left:16px;right:16px;color:#9fa7b3;font-size:11.5px}
.footer table{border-collapse:collapse;margin-top:4px}
.footer td,.footer th{padding:2px 10px 2px 0;text-align:left;white-space:nowrap}
.footer th{color:#6e9fff;font-weight:500}
.ok{color:#73bf69}.bad{color:#f2495c}.warn{color:#fade2a}
"""


def fmt_span(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def render_html(dashboard: dict, results: dict[int, dict], args, shown: dict[str, str],
                start: float, end: float, step: float, rate_interval: float,
                prom_version: str, rules: list[dict] | None, notes_by_title: dict[str, str]) -> tuple[str, int]:
    width = args.width
    col_w = (width - 2 * PAGE_PAD_PX - 23 * GRID_GAP_PX) / 24
    parts = []
    bottom = 0
    panels = flatten_panels(dashboard.get("panels") or [])
    for idx, panel in enumerate(panels):
        gp = panel.get("gridPos") or {}
        gx, gy, gw, gh = gp.get("x", 0), gp.get("y", 0), gp.get("w", 12), gp.get("h", 8)
        left = PAGE_PAD_PX + gx * (col_w + GRID_GAP_PX)
        top = HEADER_PX + gy * (GRID_ROW_PX + GRID_GAP_PX)
        w = gw * col_w + (gw - 1) * GRID_GAP_PX
        h = gh * GRID_ROW_PX + (gh - 1) * GRID_GAP_PX
        bottom = max(bottom, top + h)
        title = panel.get("title", "")
        if panel.get("type") == "row":
            parts.append(f"<div class='row' style='left:{left:.0f}px;top:{top:.0f}px;width:{w:.0f}px;height:{h:.0f}px'>{esc(title)}</div>")
            continue
        res = results.get(idx) or {"series": [], "errors": [], "queries": []}
        series = res["series"]
        body_h = h - 30
        colors = [PALETTE[i % len(PALETTE)] for i in range(len(series))]
        err_mark = "<span class='err'>⚠</span>" if res["errors"] else ""
        inner = ""
        panel_cls, panel_bg = "panel", ""
        finite = [v for s in series for _, v in s["points"] if math.isfinite(v)]
        has_values = bool(finite)
        note = notes_by_title.get(title, "")
        if res["errors"]:
            inner = "<div class='qerr'>" + esc("\n".join(
                f"Prometheus refused query {ref}: {msg}\n  {expr}" for ref, expr, msg in res["errors"])) + "</div>"
        elif not has_values:
            note = note or args.no_data_note
            inner = f"<div class='nodata'>No data{'<small>' + esc(note) + '</small>' if note else ''}</div>"
        elif panel.get("type") == "stat":
            inner, panel_bg = stat_html(panel, series, w - 2, body_h - 1)
            if panel_bg:
                panel_cls = "panel stat-bg"
        else:
            legend_opts = (panel.get("options") or {}).get("legend") or {}
            row_px = 16
            hidden = legend_opts.get("showLegend") is False or legend_opts.get("displayMode") == "hidden"
            if hidden:
                max_rows, legend_px = 0, 0
            else:
                table = legend_opts.get("displayMode") == "table" and legend_opts.get("calcs")
                max_rows = max(1, int((body_h * 0.45 - (row_px if table else 0)) // row_px))
                if len(series) > max_rows:
                    max_rows -= 1  # room for "… n more"
                rows = min(len(series), max_rows) + (1 if len(series) > max_rows else 0)
                legend_px = rows * row_px + (row_px if table else 0) + 4
            chart_h = body_h - legend_px - 6
            chart = svg_timeseries(panel, series, colors, w - 14, chart_h, start, end)
            inner = chart + legend_html(panel, series, colors, max_rows)
            if note and not any(finite):
                inner += f"<div class='zero-note'>{esc(note)}</div>"
        parts.append(
            f"<div class='{panel_cls}' style='left:{left:.0f}px;top:{top:.0f}px;width:{w:.0f}px;height:{h:.0f}px;{panel_bg}'>"
            f"<div class='ptitle' title='{esc(panel.get('description', ''))}'>{err_mark}{esc(title)}</div>"
            f"<div class='pbody' style='top:30px'>{inner}</div></div>")

    footer_top = bottom + 18
    footer = []
    if rules is not None:
        rows = []
        for r in rules:
            health = r.get("health", "unknown")
            hcls = "ok" if health == "ok" else "bad"
            state = r.get("state", "")
            scls = {"inactive": "ok", "pending": "warn", "firing": "bad"}.get(state, "")
            err = r.get("lastError") or ""
            rows.append(f"<tr><td>{esc(r.get('name', ''))}</td><td class='{scls}'>{esc(state)}</td>"
                        f"<td class='{hcls}'>{esc(health)}</td><td class='bad'>{esc(err)}</td></tr>")
        footer.append(
            f"<div>Alert rules Prometheus loaded ({esc(args.rules_label)}), as it evaluated them at the end of the run:</div>"
            "<table><tr><th>alert</th><th>state</th><th>health</th><th></th></tr>" + "".join(rows) + "</table>")
        footer_h = 40 + 19 * len(rules)
    else:
        footer_h = 0
    page_h = int(footer_top + footer_h + 16)

    span = end - start
    shown_vars = " · ".join(f"<b>${esc(k)}</b> = {esc(v)}" for k, v in shown.items())
    t0 = dt.datetime.fromtimestamp(start, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    t1 = dt.datetime.fromtimestamp(end, dt.timezone.utc).strftime("%H:%M:%S")
    header = (
        f"<div class='header'><h1>{esc(dashboard.get('title', 'Dashboard'))}"
        f"<span>{esc(args.caption) if args.caption else ''}</span></h1>"
        f"<div class='notice'>Rendered from {esc(args.dashboard_label)} with real Prometheus data by "
        f"{esc(args.renderer_label)} (not Grafana)</div>"
        f"<div class='meta'>{t0} – {t1} UTC ({fmt_span(span)}) · step {prom_duration(step)} · "
        f"<b>$__rate_interval</b> = {prom_duration(rate_interval)} · {shown_vars} · Prometheus {esc(prom_version)}</div></div>")
    doc = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{esc(dashboard.get('title', 'Dashboard'))} (preview, not Grafana)</title>"
        f"<style>{CSS}</style></head><body>"
        f"<div class='page' style='width:{width}px;height:{page_h}px'>{header}{''.join(parts)}"
        + (f"<div class='footer' style='top:{footer_top:.0f}px'>{''.join(footer)}</div>" if footer else "")
        + "</div></body></html>")
    return doc, page_h


# --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prometheus", required=True, help="Prometheus base URL, e.g. http://127.0.0.1:9090")
    ap.add_argument("--dashboard", required=True, help="the dashboard JSON (Grafana export)")
    ap.add_argument("--out", help="HTML file to write (omit to only check)")
    ap.add_argument("--minutes", type=float, default=5, help="time range: the last N minutes (default 5)")
    ap.add_argument("--start", type=float, help="range start, Unix seconds (instead of --minutes)")
    ap.add_argument("--end", type=float, help="range end, Unix seconds (default now)")
    ap.add_argument("--step", type=parse_duration, help="query step, i.e. $__interval (default: range/300, at least the scrape interval)")
    ap.add_argument("--scrape-interval", type=parse_duration, default=15.0,
                    help="the data source's scrape interval, for $__rate_interval (default 15s)")
    ap.add_argument("--rate-interval", type=parse_duration,
                    help="$__rate_interval (default as Grafana: max($__interval + scrape, 4 x scrape))")
    ap.add_argument("--var", action="append", default=[], metavar="NAME=VALUE",
                    help="a dashboard variable's value (default: All, i.e. its allValue)")
    ap.add_argument("--require-data", action="store_true",
                    help="also fail when a panel has no query with a series holding a value, "
                         "or a legendFormat names a label no series has")
    ap.add_argument("--rules", action="store_true",
                    help="also fail unless every alert rule Prometheus loaded was evaluated without error")
    ap.add_argument("--expect-rules", help="alert rules file whose every `alert:` must be loaded (with --rules)")
    ap.add_argument("--note", action="append", default=[], metavar="TITLE=TEXT",
                    help="text shown on the panel TITLE when it has no data, or only zeros")
    ap.add_argument("--no-data-note", default="", help="text shown on any other panel without data")
    ap.add_argument("--caption", default="", help="a few words on the run, after the dashboard title")
    ap.add_argument("--width", type=int, default=1600, help="page width in px (default 1600)")
    ap.add_argument("--height-file", help="write the page height in px to this file")
    ap.add_argument("--dashboard-label", help="how the header names the dashboard (default: --dashboard)")
    ap.add_argument("--renderer-label", default="deploy/grafana/preview/render.py")
    ap.add_argument("--rules-label", default="deploy/prometheus/alerts.yml")
    args = ap.parse_args(argv)
    args.dashboard_label = args.dashboard_label or args.dashboard

    with open(args.dashboard, encoding="utf-8") as f:
        dashboard = json.load(f)
    prom = Prometheus(args.prometheus)
    end = args.end if args.end is not None else time.time()
    start = args.start if args.start is not None else end - args.minutes * 60
    if end <= start:
        print("render.py: the time range is empty", file=sys.stderr)
        return 2
    step = args.step or max(args.scrape_interval, math.ceil((end - start) / 300))
    rate_interval = args.rate_interval or max(step + args.scrape_interval, 4 * args.scrape_interval)
    try:
        build = prom.get("/api/v1/status/buildinfo")
        prom_version = str((build or {}).get("version", "?"))
    except PromError as e:
        print(f"render.py: {e}", file=sys.stderr)
        return 2

    given = {}
    for item in args.var:
        name, sep, value = item.partition("=")
        if not sep:
            ap.error(f"--var {item!r}: expected NAME=VALUE")
        given[name] = value
    notes: list[str] = []
    shown: dict[str, str] = {}
    values = resolve_variables(dashboard, given, prom, start, end, notes, shown)
    builtins = {
        "__interval": prom_duration(step),
        "__interval_ms": str(int(step * 1000)),
        "__rate_interval": prom_duration(rate_interval),
        "__range": prom_duration(end - start),
        "__range_s": str(int(end - start)),
        "__range_ms": str(int((end - start) * 1000)),
    }
    all_values = {**values, **builtins}
    notes_by_title = {}
    for item in args.note:
        title, sep, text = item.partition("=")
        notes_by_title[title] = text

    panels = flatten_panels(dashboard.get("panels") or [])
    results: dict[int, dict] = {}
    refused, empty, legend_problems = [], [], []
    n_queries = 0
    for idx, panel in enumerate(panels):
        if panel.get("type") == "row" or not panel.get("targets"):
            continue
        res = run_panel(panel, prom, all_values, start, end, step)
        results[idx] = res
        title = panel.get("title", f"panel {panel.get('id')}")
        n_queries += len(res["queries"])
        for q in res["queries"]:
            state = (f"ERROR {q['error']}" if q["error"] else
                     f"{q['series']} series" + (f", {q['series'] - q['with_values']} without a value"
                                                if q["series"] != q["with_values"] else ""))
            print(f"  [{title}] {q['ref']}: {state}")
        for ref, expr, msg in res["errors"]:
            refused.append((title, ref, expr, msg))
        if not res["errors"] and not any(q["with_values"] for q in res["queries"]):
            empty.append(title)
        for ref, msg in res["legend_problems"]:
            legend_problems.append((title, ref, msg))

    rules_list = None
    rule_problems = []
    if args.rules:
        try:
            data = prom.get("/api/v1/rules")
        except PromError as e:
            print(f"render.py: /api/v1/rules: {e}", file=sys.stderr)
            return 2
        rules_list = [r for g in (data or {}).get("groups", []) for r in g.get("rules", [])]
        for r in rules_list:
            name = r.get("name", "?")
            if r.get("health") != "ok" or r.get("lastError"):
                rule_problems.append(f"rule {name}: health {r.get('health')!r}, lastError {r.get('lastError') or '-'}: {r.get('query')}")
            print(f"  [rule {name}] health {r.get('health')}, state {r.get('state', '-')}")
        if not rules_list:
            rule_problems.append("Prometheus has no rules loaded")
        if args.expect_rules:
            with open(args.expect_rules, encoding="utf-8") as f:
                expected = re.findall(r"^\s*-?\s*alert:\s*['\"]?([\w:-]+)", f.read(), re.M)
            loaded = {r.get("name") for r in rules_list}
            for name in expected:
                if name not in loaded:
                    rule_problems.append(f"rule {name} of {args.expect_rules} is not loaded in Prometheus")

    if args.out:
        doc, page_h = render_html(dashboard, results, args, shown, start, end, step, rate_interval,
                                  prom_version, rules_list, notes_by_title)
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(doc)
        if args.height_file:
            with open(args.height_file, "w", encoding="utf-8") as f:
                f.write(f"{page_h}\n")
        print(f"wrote {args.out} ({args.width}x{page_h} px)")

    for n in notes:
        print(f"note: {n}")
    print(f"{len(results)} panels, {n_queries} queries, range {prom_duration(end - start)}, "
          f"step {prom_duration(step)}, $__rate_interval {prom_duration(rate_interval)}")
    failed = False
    if refused:
        failed = True
        print(f"\nPrometheus refused {len(refused)} quer{'y' if len(refused) == 1 else 'ies'}:")
        for title, ref, expr, msg in refused:
            print(f"  panel {title!r} query {ref}: {msg}\n    {expr}")
    if empty:
        print(f"\n{len(empty)} panel(s) where no query returned a series with a value:")
        for title in empty:
            print(f"  {title!r}")
        failed = failed or args.require_data
    if legend_problems:
        print(f"\n{len(legend_problems)} legend problem(s):")
        for title, ref, msg in legend_problems:
            print(f"  panel {title!r} query {ref}: {msg}")
        failed = failed or args.require_data
    if rule_problems:
        failed = True
        print(f"\n{len(rule_problems)} alert rule problem(s):")
        for p in rule_problems:
            print(f"  {p}")
    print("FAILED" if failed else "OK")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
