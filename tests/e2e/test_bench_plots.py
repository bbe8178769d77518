#!/usr/bin/env python3
"""The bench scripts' --plot charts (bench/svg_plot.py): well-formed SVG, one marker per measured
point and inside the axes, the guides drawn, labels escaped, and axis ends above every value.
Synthetic rows: what the charts draw is tested here, not a benchmark's figures."""
import os
import sys
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "bench"))
from e2e_util import check, finish, parse_args  # noqa: E402
import compare_sparse  # noqa: E402
import svg_plot  # noqa: E402

NS = "{http://www.w3.org/2000/svg}"


def parse(path):
    root = ET.parse(path).getroot()
    return root, root.findall(NS + "circle"), root.findall(NS + "polyline")


def inside_axes(root, circles):
    """Every marker within the axes: x from the y axis to its right end, y from the top to the x axis."""
    lines = root.findall(NS + "line")
    xs = [float(l.get("x1")) for l in lines if l.get("x1") == l.get("x2")]  # vertical grid lines
    ys = [float(l.get("y1")) for l in lines if l.get("y1") == l.get("y2") and l.get("stroke") in ("#000", "#eee")]
    return all(min(xs) <= float(c.get("cx")) <= max(xs) and min(ys) <= float(c.get("cy")) <= max(ys) for c in circles)


def main():
    a = parse_args(__doc__)
    for v, want in [(0.3, 0.3), (0.95, 1.0), (1.0, 1.0), (2.62, 3.0), (9.31, 10.0), (11.06, 15.0), (95, 100), (0, 1.0)]:
        check(abs(svg_plot.nice_max(v) - want) < 1e-9, "nice_max(%g) = %g (want %g)" % (v, svg_plot.nice_max(v), want))

    # Sparsity chart: 2 thread counts x 3 sparsities, and the model's MAC ratio as a guide.
    rows = []
    for t in (1, 2):
        for s, sp, mr in [(50, 1.1, 1.9), (70, 1.6, 3.1), (90, 2.7, 9.5)]:
            rows.append({"model": "resnet18 <&>", "threads": t, "sparsity": s, "speedup": sp / t ** 0.1, "mac_ratio": mr})
    path = compare_sparse.sparsity_plot(os.path.join(a.work_dir, "sparse.svg"), rows, "synthetic")
    root, circles, lines = parse(path)
    check(len(circles) == 6, "sparsity chart: one marker per row (%d)" % len(circles))
    check(len(lines) == 3 and sum(l.get("class") == "guide" for l in lines) == 1,
          "sparsity chart: a line per thread count and the MAC-ratio guide (%d polylines)" % len(lines))
    check(inside_axes(root, circles), "sparsity chart: every marker inside the axes")
    texts = [t.text for t in root.iter(NS + "text")]
    check("resnet18 <&>, 2 threads" in texts and "resnet18 <&>: MAC ratio" in texts,
          "sparsity chart: legend labels, escaped in the file and read back: %s" % texts[-4:])
    check("10" in texts and "100" in texts, "sparsity chart: axes end at 100%% and 10x, above every value: %s" % texts)

    # Speedup against MAC ratio: 2 models x 2 levels, ideal and target guides.
    rows = [{"model": m, "threads": 1, "mac_ratio": r, "speedup": r * e} for m, e in [("vgg", 0.9), ("resnet", 0.8)]
            for r in (2.3, 9.3)]
    path = svg_plot.speedup_vs_mac_ratio(os.path.join(a.work_dir, "pruned.svg"), rows, "speedup", "t", "s")
    root, circles, lines = parse(path)
    guides = [l for l in lines if l.get("class") == "guide"]
    check(len(circles) == 4 and len(guides) == 2, "speedup chart: 4 markers, 2 guides (%d, %d)" % (len(circles), len(guides)))
    check(inside_axes(root, circles), "speedup chart: every marker inside the axes")
    # The ideal guide is the diagonal: its two ends at equal x and y values map to one line of slope -h/w.
    pts = [tuple(map(float, p.split(","))) for p in guides[0].get("points").split()]
    check(len(pts) == 2 and pts[1][0] > pts[0][0] and pts[1][1] < pts[0][1], "speedup chart: the ideal rises: %s" % pts)

    # A failed measurement (NaN, inf, None) is left out of the drawing, not written into the SVG.
    path = svg_plot.chart(os.path.join(a.work_dir, "gaps.svg"), "t", "s", "x", "y",
                          [{"label": "a", "points": [(1, 0.002), (2, float("nan")), (3, 0.004), (4, None),
                                                     (5, float("inf"))]}])
    root, circles, lines = parse(path)
    text = open(path).read()
    check(len(circles) == 2 and "nan" not in text and "inf" not in text,
          "non-finite points left out: %d markers, no nan/inf in the file" % len(circles))
    labels = [t.text for t in root.iter(NS + "text")]
    y_ticks = labels[3:14:2]  # after title and subtitle, x and y tick labels alternate
    check(len(set(y_ticks)) == 6 and y_ticks[-1] == "0.004", "small values get distinct tick labels: %s" % y_ticks)
    try:
        svg_plot.speedup_vs_mac_ratio(os.path.join(a.work_dir, "none.svg"), [], "speedup", "t", "s")
        check(False, "a speedup chart of no rows is refused")
    except ValueError as e:
        check("no row" in str(e), "a speedup chart of no rows is refused: %s" % e)
    try:
        svg_plot.chart(os.path.join(a.work_dir, "empty.svg"), "t", "s", "x", "y", [])
        check(False, "an empty chart is refused")
    except ValueError as e:
        check("nothing to plot" in str(e), "an empty chart is refused: %s" % e)
    return finish()


if __name__ == "__main__":
    sys.exit(main())
