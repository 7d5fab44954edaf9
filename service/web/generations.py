"""An es run's generations on its page: the fitness per generation as a chart (the mean with its 95% interval, the
best and the worst member) beside the table of the newest generations."""

from __future__ import annotations

from markupsafe import Markup

from service.runs.views import GenerationOut
from service.web.charts import Chart, RefLine, Series, render

TABLE_ROWS = 10  # the newest generations the page lists


def generations_chart(generations: list[GenerationOut]) -> Markup:
    """Mean fitness per generation with its 95% interval (a band), and the best and worst member's."""
    with_ci = [g for g in generations if g.fitness_ci is not None]
    series = [
        Series("95% interval of the mean", [(g.generation, g.fitness_ci[1]) for g in with_ci], style="band",
               color="#0b6bcb", lower=[g.fitness_ci[0] for g in with_ci]),
        Series("mean fitness", [(g.generation, g.fitness_mean) for g in generations], color="#0b6bcb"),
        Series("best member", [(g.generation, g.fitness_max) for g in generations], color="#1a9b5b", dashed=True),
        Series("worst member", [(g.generation, g.fitness_min) for g in generations], color="#c2378a", dashed=True),
    ]
    return render(Chart(series, title="Fitness of each ES generation", x_label="generation",
                        y_label="fitness (normalised return, 1.0 = warm start)", ref_lines=[RefLine(1.0, "warm start")],
                        x_integer=True, width=1100, height=340, empty_text="no generation told yet"))


def newest(generations: list[GenerationOut]) -> list[GenerationOut]:
    """The newest generations, newest first, for the page's table."""
    return list(reversed(generations[-TABLE_ROWS:]))
