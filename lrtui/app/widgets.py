"""The widgets of the screen: a chart, the step axis, and the help, advice and run-picker dialogs."""

from __future__ import annotations

from typing import Any, Callable

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
        self.x_range: tuple[float, float] | None = None

    def show(self, x_range: tuple[float, float] | None) -> None:
        """The range of steps shown (None: no steps yet, no numbers)."""
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
 x      apply the advice in force to a live run started with
        Probe(..., control=True) (asks first; docs/control.md)
A yellow column (┊ where no curve passes) on the LR chart marks an action.
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
    """Everything the advisor says about the run shown (the side panel shows what fits); it
    follows the advisor while open (a replay's advisor may still be catching up)."""

    BINDINGS = [Binding("escape,a,q", "dismiss", "close")]

    def __init__(self, name: str, advice: Callable[[], tuple[AdvisorState | None, str | None]],
                 refresh_every: float = 0.5) -> None:
        super().__init__()
        self.run_name = name
        self._advice = advice
        self.shown = advice()
        self.refresh_every = refresh_every

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="advice"):
            yield Static(Text(f"Advisor: {self.run_name}", style="bold"), id="advice-title")
            yield Static(advisor_detail(*self.shown), id="advice-text")

    def on_mount(self) -> None:
        self.set_interval(self.refresh_every, self._follow)

    def _follow(self) -> None:
        advice = self._advice()
        if advice[0] is not self.shown[0] or advice[1] != self.shown[1]:
            self.shown = advice
            self.query_one("#advice-text", Static).update(advisor_detail(*advice))


class ConfirmActionScreen(ModalScreen[int | None]):
    """Asks before the app sends a command to a running job: what it does, with every group's
    old and new LR. Dismissed with the chosen proposal's index, or None (not confirmed)."""

    BINDINGS = [
        Binding("y,enter", "confirm(0)", "apply"),
        Binding("2", "confirm(1)", "apply 2", show=False),
        Binding("3", "confirm(2)", "apply 3", show=False),
        Binding("n,escape,q", "cancel", "cancel"),
    ]

    def __init__(self, run_name: str, choices: list[str]) -> None:
        super().__init__()
        self.run_name = run_name
        self.choices = choices

    def compose(self) -> ComposeResult:
        text = Text(f"Apply to the running job {self.run_name}?", style="bold")
        if len(self.choices) == 1:
            text.append(f"\n{self.choices[0]}", style="cyan")
            text.append("\n\ny or enter: apply   n or escape: cancel", style="dim")
        else:
            for i, choice in enumerate(self.choices[:3]):
                text.append(f"\n{'y' if i == 0 else i + 1}  {choice}", style="cyan")
            text.append("\n\ny/enter, 2, 3: apply that one   n or escape: cancel", style="dim")
        with Vertical(id="confirm-box"):
            yield Static(text, id="confirm-text")

    def action_confirm(self, index: int) -> None:
        if index < len(self.choices):
            self.dismiss(index)

    def action_cancel(self) -> None:
        self.dismiss(None)


#: The runs table's rows: (run key, cells) each; and the sweep's verdict above it (or None).
Rows = list[tuple[str, tuple[str, ...]]]


class RunsScreen(ModalScreen[str | None]):
    """Pick a run from a table: name, LR, step, regime now and at its first LR; above it, the
    sweep's verdict. Both follow the runs while the table is open (a replay's advisors may still
    be catching up with the position, a watched run goes on)."""

    BINDINGS = [Binding("escape,r", "dismiss_none", "close")]
    COLUMNS = ("run", "LR", "step", "regime", "at its first LR")

    def __init__(self, rows: Callable[[], Rows], current: str | None,
                 summary: Callable[[], str | None] = lambda: None, refresh_every: float = 0.5) -> None:
        super().__init__()
        self._rows, self._summary = rows, summary
        self.rows = rows()
        self.summary = summary()
        self.current = current
        self.refresh_every = refresh_every

    def compose(self) -> ComposeResult:
        with Vertical(id="runs-box"):
            yield Static(self.summary or "", id="runs-summary", markup=False)
            table: DataTable[Any] = DataTable(id="runs-table", cursor_type="row")
            yield table

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        self._column_keys = table.add_columns(*self.COLUMNS)
        self._fill(table)
        keys = [k for k, _ in self.rows]
        if self.current in keys:
            table.move_cursor(row=keys.index(self.current))
        table.focus()
        self.set_interval(self.refresh_every, self._follow)

    def _fill(self, table: DataTable[Any]) -> None:
        for key, cells in self.rows:
            table.add_row(*cells, key=key)
        self.query_one("#runs-summary", Static).display = bool(self.summary)

    def _follow(self) -> None:
        rows, summary = self._rows(), self._summary()
        if rows == self.rows and summary == self.summary:
            return
        table = self.query_one(DataTable)
        if [k for k, _ in rows] == [k for k, _ in self.rows]:
            for (key, cells), (_, old) in zip(rows, self.rows):
                for column, (value, was) in enumerate(zip(cells, old)):
                    if value != was:
                        table.update_cell(key, self._column_keys[column], value, update_width=True)
        else:  # runs appeared: the table again, the cursor on the same run
            at = table.cursor_row
            chosen = self.rows[at][0] if 0 <= at < len(self.rows) else self.current
            table.clear()
            self.rows = rows
            self._fill(table)
            keys = [k for k, _ in rows]
            if chosen in keys:
                table.move_cursor(row=keys.index(chosen))
        self.rows, self.summary = rows, summary
        self.query_one("#runs-summary", Static).update(summary or "")
        self.query_one("#runs-summary", Static).display = bool(summary)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.dismiss(str(event.row_key.value))

    def action_dismiss_none(self) -> None:
        self.dismiss(None)


__all__ = ["AdvisorScreen", "Chart", "ConfirmActionScreen", "HelpScreen", "RunsScreen", "StepAxis"]
