"""The SVG chart module on its own: round ticks, escaped text, failures on the bottom edge, gaps in lines."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from service.web.charts import FAIL_COLOR, Chart, RefLine, Series, format_tick, nice_ticks, render

SVG = "{http://www.w3.org/2000/svg}"


@pytest.mark.parametrize(("lo", "hi", "expected"), [
    (0, 1, [0, 0.2, 0.4, 0.6, 0.8, 1.0]),
    (1, 12, [0, 2.5, 5, 7.5, 10, 12.5]),
    (-0.37, 1.42, [-0.5, 0, 0.5, 1.0, 1.5]),
    (3, 3, [2.6, 2.8, 3.0, 3.2, 3.4]),
])
def test_ticks_are_round_and_cover_the_data(lo: float, hi: float, expected: list[float]) -> None:
    ticks = nice_ticks(lo, hi)
    assert ticks == pytest.approx(expected)
    assert ticks[0] <= lo and ticks[-1] >= hi


def test_integer_ticks_are_whole_numbers() -> None:
    assert nice_ticks(1, 12, 8, integer=True) == [0, 2, 4, 6, 8, 10, 12]
    assert nice_ticks(1, 3, 8, integer=True) == [1, 2, 3]


def test_tick_labels_have_the_decimals_the_step_needs() -> None:
    assert format_tick(10, 2) == "10"
    assert format_tick(0.5, 0.25) == "0.50"
    assert format_tick(2.5, 2.5) == "2.5"


def test_a_chart_is_valid_svg_with_axes_legend_and_escaped_text() -> None:
    svg = render(Chart([
        Series("score <b>", [(1, 0.5), (2, 1.2), (3, None)], style="scatter", titles=["a", "<script>x</script>", "c"],
               links=["/candidates/a", "/candidates/b", None]),
        Series("best so far", [(1, 0.5), (2, 1.2), (3, 1.2)], style="step"),
    ], title="T & <i>", x_label="candidates", y_label="score", ref_lines=[RefLine(1.0, "warm start")],
        x_integer=True))
    root = ET.fromstring(str(svg))  # well-formed XML: everything was escaped
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "T & <i>" in texts and "score <b>" in texts and "best so far" in texts and "warm start" in texts
    assert "candidates" in texts and "score" in texts and "1" in texts and "3" in texts
    assert "<script>" not in str(svg) and "&lt;script&gt;" in str(svg)
    # The point without a score is a red cross on the bottom edge.
    crosses = [g for g in root.iter(f"{SVG}g") if g.get("stroke") == FAIL_COLOR]
    assert len(crosses) == 1
    assert len([c for c in root.iter(f"{SVG}circle")]) >= 2
    assert [a.get("href") for a in root.iter(f"{SVG}a")] == ["/candidates/a", "/candidates/b"]


def test_lines_break_at_missing_values_and_empty_charts_say_so() -> None:
    svg = render(Chart([Series("r", [(1, 1.0), (2, 2.0), (3, None), (4, 3.0), (5, 4.0)])]))
    assert str(svg).count("<polyline") == 2
    empty = render(Chart([Series("r", [])], empty_text="no candidate evaluated yet"))
    assert "no candidate evaluated yet" in str(empty)


def test_fixture_returns_are_ones_an_environment_can_produce() -> None:
    import random

    from tests.web.conftest import evaluation
    from workers.rl.envs import ENVIRONMENTS

    for env in ("CartPole-v1", "Acrobot-v1"):
        low, high = ENVIRONMENTS[env].return_range
        e = evaluation("c", env, "train", 1.8, random.Random(0))  # a candidate far above the warm start
        values = [e.final_return, *(x for row in e.returns for x in row), *(x for row in e.curves["returns"]
                                                                             for x in row)]
        assert all(low <= v <= high for v in values), (env, max(values), min(values))


def test_a_band_spans_its_lower_and_upper_edges_and_widens_the_axis() -> None:
    band = Series("middle half of 8 seeds", [(1, 10.0), (2, 20.0), (3, 30.0)], style="band", lower=[-40.0, 5.0, 15.0])
    svg = str(render(Chart([band, Series("mean", [(1, 5.0), (2, 12.0), (3, 22.0)])])))
    ET.fromstring(svg)
    polygon = svg.split('<polygon class="band" points="')[1].split('"')[0].split()
    assert len(polygon) == 6  # three points along the top, three back along the bottom
    assert ">-40<" in svg or ">-40.0<" in svg  # the lowest edge is on the y axis's range
