"""The widgets of the screen: a chart, the step axis, and the help, advice and run-picker dialogs."""

from __future__ import annotations

from typing import Any

from rich.segment import Segment
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets import DataTable, Static

from lrtui.advisor import AdvisorState
from lrtui.app.advisor_panel import advisor_detail
from lrtui.app.chart import ChartSpec, render_chart, render_step_axis


class Chart(Widget):
    """One braille chart; the app hands it a ChartSpec and it draws at whatever size it has.

    It draws through Textual's line API: the chart's rows become strips of Rich segments once
    per change, which is several times cheaper than handing Textual a Text to lay out.
    """

    def __init__(self, *, id: str | None = None) -> None:  # noqa: A002 - Textual's name
        super().__init__(id=id)
        self.spec: ChartSpec | None = None
        self._strips: list[Strip] | None = None
        self._strips_size: tuple[int, int] = (0, 0)

    def show(self, spec: ChartSpec) -> None:
        self.spec = spec
        self._strips = None
        self.refresh()

    def render(self) -> Text:
        """The chart as one Text (what the line API draws, row by row)."""
        if self.spec is None:
            return Text("")
        return render_chart(self.spec, self.size.width, self.size.height)

    def render_line(self, y: int) -> Strip:
        size = (self.size.width, self.size.height)
        if self._strips is None or self._strips_size != size:
            self._strips = self._make_strips()
            self._strips_size = size
        return self._strips[y] if y < len(self._strips) else Strip.blank(size[0], self.rich_style)

    def _make_strips(self) -> list[Strip]:
        width = self.size.width
        base = self.rich_style
        console = self.app.console
        strips = []
        for line in self.render().split("\n", allow_blank=True):
            segments = Segment.apply_style(line.render(console), base)
            strips.append(Strip(segments).adjust_cell_length(width, base))
        return strips


class StepAxis(Widget):
    """The shared step axis under the charts."""

    def __init__(self, *, id: str | None = None) -> None:  # noqa: A002
        super().__init__(id=id)
        self.x_range: tuple[float, float] = (0.0, 1.0)

    def show(self, x_range: tuple[float, float]) -> None:
        self.x_range = x_range
        self.refresh()

    def render(self) -> Text:
        return render_step_axis(self.x_range, self.size.width)


HELP_TEXT = """\
[b]Charts[/b] share one step axis: loss (raw, and smoothed over the stated
window), gradient norm, sharpness with the advisor's stability threshold
for this optimizer (it moves with the LR; an arrow in the legend when it
leaves the chart), and each param group's LR.
Long curves keep every column's min and max, so spikes stay visible;
a red [b]x[/b] marks NaN or infinite values (a missing value is not drawn).
[b]Keys[/b]
 q      quit               ?      this help
 l      log scale          s      smoothing (50, 200, off, 10 steps)
 a      all of the advice  d      dark / light colours
 r      list of runs       ] \\[    next / previous run
 o      overlay the runs of a directory on one loss chart
[b]Replay[/b] (the advisor shows its state at the replay position)
 space  play / pause       + -    faster / slower
 home   jump to start      end    jump to end
 ← →    one logged step    pgup pgdn  1/20 of the run
escape closes this help."""


class HelpScreen(ModalScreen[None]):
    """Keys and what the charts mean."""

    BINDINGS = [
        Binding("escape,question_mark,q", "dismiss", "close"),
    ]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Static(HELP_TEXT, id="help-text")


class AdvisorScreen(ModalScreen[None]):
    """Everything the advisor says about the run shown (the side panel shows what fits)."""

    BINDINGS = [Binding("escape,a,q", "dismiss", "close")]

    def __init__(self, name: str, state: AdvisorState | None, error: str | None) -> None:
        super().__init__()
        self.run_name = name
        self.state = state
        self.error = error

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="advice"):
            yield Static(Text(f"Advisor: {self.run_name}", style="bold"), id="advice-title")
            yield Static(advisor_detail(self.state, self.error), id="advice-text")


class RunsScreen(ModalScreen[str | None]):
    """Pick a run from a table: name, LR, step, regime now and at its first LR; above it, the
    sweep's verdict."""

    BINDINGS = [Binding("escape,r", "dismiss_none", "close")]

    def __init__(self, rows: list[tuple[str, tuple[Any, ...]]], current: str | None,
                 summary: str | None = None) -> None:
        super().__init__()
        self.rows = rows
        self.current = current
        self.summary = summary

    def compose(self) -> ComposeResult:
        with Vertical(id="runs-box"):
            if self.summary:
                yield Static(self.summary, id="runs-summary", markup=False)
            table: DataTable[Any] = DataTable(id="runs-table", cursor_type="row")
            yield table

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("run", "LR", "step", "regime", "at its first LR")
        for key, cells in self.rows:
            table.add_row(*cells, key=key)
        keys = [k for k, _ in self.rows]
        if self.current in keys:
            table.move_cursor(row=keys.index(self.current))
        table.focus()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.dismiss(str(event.row_key.value))

    def action_dismiss_none(self) -> None:
        self.dismiss(None)


__all__ = ["AdvisorScreen", "Chart", "HelpScreen", "RunsScreen", "StepAxis"]
