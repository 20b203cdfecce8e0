"""What a drawn Plotly chart holds, read from its SVG in the browser."""

from __future__ import annotations

from typing import Any

COUNT_JS = """(el) => {
  const scatter = el.querySelectorAll('.scatterlayer .trace');
  const heat = el.querySelectorAll('.heatmaplayer .hm');
  let marks = 0;
  scatter.forEach((t) => {
    marks += t.querySelectorAll('path.point').length;
    t.querySelectorAll('path.js-line').forEach((p) => {
      if ((p.getAttribute('d') || '').length > 2) marks += 1;
    });
  });
  heat.forEach((h) => { marks += h.querySelectorAll('image').length; });
  return {svg: el.querySelectorAll('svg.main-svg').length, traces: scatter.length + heat.length,
          heatmaps: heat.length, marks: marks};
}"""


def drawn(page: Any, chart: str) -> dict[str, int]:
    """SVG layers, traces (scatter + heat map), heat maps and drawn marks of one chart."""
    result: dict[str, int] = page.eval_on_selector(f'[data-chart="{chart}"]', COUNT_JS)
    return result


def chart_names(page: Any) -> list[str]:
    names: list[str] = page.eval_on_selector_all(
        "[data-chart]", "(els) => els.map((e) => e.dataset.chart)"
    )
    return names
