"""A line/scatter chart as a standalone SVG file, for the bench scripts' --plot (no plotting
library: the venv has none, and an SVG opens in any browser).

    chart(path, title, subtitle, x_label, y_label, series, guides)

series: [{"label": str, "points": [(x, y), ...], "line": bool}] drawn in colour order, markers at
the points, joined when "line" (the default) is true. guides: [{"label": str, "points": [...]}]
drawn as grey dashed lines (the ideal, a target). The axes start at 0 and end at a round value
above every point."""
import math
from xml.sax.saxutils import escape

COLOURS = ["#2171b5", "#cb181d", "#238b45", "#6a51a3", "#d94801", "#525252", "#1d91c0", "#ae017e"]


def nice_max(v):
    """The smallest of 1, 1.5, 2, 2.5, 3, 4, 5, 6, 8 x 10^n at or above v (1 if v <= 0)."""
    if v <= 0 or not math.isfinite(v):
        return 1.0
    e = 10 ** math.floor(math.log10(v))
    for m in (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if m * e >= v * (1 - 1e-9):
            return m * e
    return 10 * e


def tick_label(v):
    return "%d" % v if v == int(v) else "%.3g" % v


def finite(points):
    """The points with both coordinates finite numbers (a failed measurement, NaN or None, is
    left out of the drawing rather than written into the SVG)."""
    return [(x, y) for x, y in points
            if isinstance(x, (int, float)) and isinstance(y, (int, float)) and math.isfinite(x) and math.isfinite(y)]


def chart(path, title, subtitle, x_label, y_label, series, guides=()):
    series = [dict(s, points=finite(s["points"])) for s in series]
    guides = [dict(g, points=finite(g["points"])) for g in guides]
    pts = [p for s in series + guides for p in s["points"]]
    if not pts:
        raise ValueError("%s: nothing to plot" % path)
    x_max = nice_max(max(x for x, _ in pts))
    y_max = nice_max(max(y for _, y in pts))
    left, top, w, h = 70, 70, 560, 320
    legend_w = 260
    width, height = left + w + legend_w, top + h + 60

    def sx(x):
        return left + w * x / x_max

    def sy(y):
        return top + h * (1 - y / y_max)

    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" '
           'font-size="12">' % (width, height),
           '<rect width="100%" height="100%" fill="white"/>',
           '<text x="%d" y="24" font-size="16" font-weight="bold">%s</text>' % (left, escape(title)),
           '<text x="%d" y="44" fill="#444" font-size="11">%s</text>' % (left, escape(subtitle))]
    for i in range(6):  # grid and ticks: 5 intervals on each axis
        xv, yv = x_max * i / 5, y_max * i / 5
        out.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="%s"/>' % (sx(xv), top, sx(xv), top + h,
                                                                              "#000" if i == 0 else "#eee"))
        out.append('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="%s"/>' % (left, sy(yv), left + w, sy(yv),
                                                                              "#000" if i == 0 else "#eee"))
        out.append('<text x="%.1f" y="%d" text-anchor="middle">%s</text>' % (sx(xv), top + h + 16, tick_label(xv)))
        out.append('<text x="%d" y="%.1f" text-anchor="end">%s</text>' % (left - 6, sy(yv) + 4, tick_label(yv)))
    out.append('<text x="%d" y="%d" text-anchor="middle">%s</text>' % (left + w / 2, top + h + 38, escape(x_label)))
    out.append('<text transform="translate(20,%d) rotate(-90)" text-anchor="middle">%s</text>' % (top + h / 2,
                                                                                               escape(y_label)))
    legend_y = top

    def legend(colour, label, dashed):
        nonlocal legend_y
        x0 = left + w + 20
        out.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"%s/>' % (
            x0, legend_y, x0 + 24, legend_y, colour, ' stroke-dasharray="5,4"' if dashed else ""))
        out.append('<text x="%d" y="%d">%s</text>' % (x0 + 30, legend_y + 4, escape(label)))
        legend_y += 18

    for g in guides:
        p = sorted(g["points"])
        out.append('<polyline class="guide" fill="none" stroke="#969696" stroke-width="1.5" stroke-dasharray="5,4" '
                   'points="%s"/>' % " ".join("%.1f,%.1f" % (sx(x), sy(y)) for x, y in p))
        legend("#969696", g["label"], True)
    for i, s in enumerate(series):
        colour = COLOURS[i % len(COLOURS)]
        p = sorted(s["points"])
        if s.get("line", True) and len(p) > 1:
            out.append('<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>' % (
                colour, " ".join("%.1f,%.1f" % (sx(x), sy(y)) for x, y in p)))
        for x, y in p:
            out.append('<circle class="point" cx="%.1f" cy="%.1f" r="4" fill="%s"><title>%s: %.3g, %.3g</title>'
                       '</circle>' % (sx(x), sy(y), colour, escape(s["label"]), x, y))
        legend(colour, s["label"], False)
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")
    return path


def speedup_vs_mac_ratio(path, rows, speedup_key, title, subtitle, target=0.9):
    """Measured speedup against the MAC ratio, one series per (model, threads) over its rows
    (pruning levels, densities), with the ideal (speedup = MAC ratio) and the target (target x
    the MAC ratio) as guides."""
    series = {}
    for r in rows:
        series.setdefault((r["model"], r["threads"]), []).append((r["mac_ratio"], r[speedup_key]))
    ratios = [x for p in series.values() for x, _ in finite(p)]
    if not ratios:
        raise ValueError("%s: no row with a finite MAC ratio and speedup to plot" % path)
    top = max(ratios)
    guides = [{"label": "speedup = MAC ratio", "points": [(1, 1), (top, top)]},
              {"label": "%.1f x MAC ratio (target)" % target, "points": [(1, target), (top, target * top)]}]
    return chart(path, title, subtitle, "MAC ratio (dense MACs / executed MACs)", "speedup (measured)",
                 [{"label": "%s, %d thread%s" % (m, t, "" if t == 1 else "s"), "points": p}
                  for (m, t), p in series.items()], guides)
