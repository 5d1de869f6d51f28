"""The pure parts of the dashboard: folding events, the ETA, formatting, the chart, the tail."""

from __future__ import annotations

import json
import math

import pytest

from rwkv_tune.runs import read_events
from rwkv_tune.tui.chart import CAP, Series, draw_chart, y_range
from rwkv_tune.tui.format import fmt_count, fmt_duration, progress_line, summary_lines
from rwkv_tune.tui.state import RunState
from rwkv_tune.tui.tail import MetricsTail


def fold(path) -> RunState:
    state = RunState()
    for event in read_events(path):
        state.apply(event)
    return state


def test_eta_is_remaining_steps_over_recent_throughput(scripted):
    scripted.start()
    scripted.steps(150)  # 8192 tokens a step at 2048 tokens/s: 4 s a step
    state = fold(scripted.path)
    assert state.step == 150 and state.total_steps == 400
    assert state.eta_s == pytest.approx(250 * 4.0)
    assert "ETA 16m 40s" in progress_line(state)


def test_eta_after_resume_uses_the_new_session_not_wall_time(scripted):
    scripted.start()
    scripted.steps(100, tokens_per_s=1024.0)
    scripted.elapsed += 7 * 86400  # a week between the crash and the resume
    scripted.start(resumed_from_step=80)
    state = fold(scripted.path)
    assert state.eta_s is None  # no step of the new session yet: no guess from old rates
    assert [s for s, _ in state.losses][-1] == 80  # steps 81..100 are redone, dropped from the curve
    scripted.steps(20, tokens_per_s=4096.0)
    state = fold(scripted.path)
    assert state.step == 100
    assert state.eta_s == pytest.approx(300 * 8192 / 4096.0)
    assert [s for s, _ in state.losses] == sorted(s for s, _ in state.losses)


def test_eta_averages_the_recent_window(scripted):
    scripted.start()
    scripted.steps(50, tokens_per_s=100.0)
    scripted.steps(20, tokens_per_s=1000.0)  # only these fall in the window
    state = fold(scripted.path)
    assert state.eta_s == pytest.approx(330 * 8192 / 1000.0)


def test_losses_smoothing_nan_and_skips(scripted):
    scripted.start()
    scripted.steps(1, loss=3.0)
    scripted.steps(1, loss=float("nan"))
    scripted.emit("step", step=3, loss=2.0, skipped=2, tokens_per_s=0)
    state = fold(scripted.path)
    assert state.losses == [(1, 3.0), (3, 2.0)]
    assert state.smoothed[0] == (1, pytest.approx(3.0))  # debiased: the first point is the loss itself
    assert 2.0 < state.smoothed[-1][1] < 3.0
    assert state.nonfinite == 1 and state.skipped == 2


def test_epoch_progress_and_status(scripted):
    scripted.start()
    scripted.steps(100)
    state = fold(scripted.path)
    assert state.display_epoch == 1 and state.status == "running"
    scripted.steps(1)
    assert fold(scripted.path).display_epoch == 2
    scripted.done()
    state = fold(scripted.path)
    assert state.status == "done" and state.finished and state.eta_s is not None


def test_unknown_and_odd_events_do_not_break_the_state():
    state = RunState()
    state.apply({"event": "from_the_future", "x": 1})
    state.apply({"event": "step"})
    state.apply({"no": "event"})
    assert state.events == 3 and state.step == 0
    assert any("from_the_future" in text for _, text in state.log)


def test_merge_events_and_errors():
    state = RunState()
    state.apply({"event": "merge_progress", "done": 3, "total": 10})
    assert state.merge.status == "running" and state.status_label == "merging"
    state.apply({"event": "merge_done", "path": "m.pth", "verified": True, "report": {"max_abs_diff": 0.0}})
    assert state.merge.status == "done" and state.merge.verified is True
    state.apply({"event": "error", "kind": "merge", "message": "key mismatch"})
    assert state.merge.status == "failed" and state.status != "error"
    state.apply({"event": "error", "kind": "oom", "message": "CUDA out of memory"})
    assert state.status == "error" and state.finished


def test_summary_of_a_finished_run(scripted):
    scripted.start()
    scripted.steps(400)
    scripted.eval()
    scripted.checkpoint()
    scripted.done()
    text = "\n".join(summary_lines(fold(scripted.path), now=1e12))
    assert "status   done\n" in text
    assert "step 400/400" in text and "eval     " in text and "adapter  runs/demo/adapter.safetensors" in text
    assert "ago" not in text  # a finished run is not stale


def test_summary_dates_a_silent_unfinished_run(scripted):
    scripted.start()
    scripted.steps(3)
    state = fold(scripted.path)
    assert "(last event 1h 00m ago)" in summary_lines(state, now=state.last_time + 3600)[2]


@pytest.mark.parametrize(("seconds", "text"), [(0, "0s"), (59.4, "59s"), (192, "3m 12s"), (7500, "2h 05m"),
                                               (90000, "1d 01h"), (None, "-"), (math.inf, "-")])
def test_fmt_duration(seconds, text):
    assert fmt_duration(seconds) == text


def test_fmt_count():
    assert [fmt_count(x) for x in (999, 1234, 4_100_000, 191_034_624, None)] == ["999", "1.23k", "4.10M",
                                                                                   "191M", "-"]


def test_chart_draws_all_series_in_the_given_size():
    raw = [(s, 3.0 - s / 100 + (0.2 if s % 2 else -0.2)) for s in range(1, 201)]
    smooth = [(s, 3.0 - s / 100) for s in range(1, 201)]
    lines = draw_chart(Series.of(raw), Series.of(smooth), [(100, 2.1), (200, 1.2)], 50, 12)
    assert len(lines) == 12 and all(line.cell_len <= 50 for line in lines)
    body = "".join(line.plain for line in lines[:-1])
    assert sum("\u2800" < ch <= "\u28ff" for ch in body) > 60
    assert lines[-1].plain.strip().startswith("└step 1") and lines[-1].plain.rstrip().endswith("200")
    styles = {str(span.style) for line in lines for span in line.spans}
    assert {"#5f7f9f", "bold #ffaf00", "bold #ff5fd7"} <= styles


def test_chart_without_points_says_it_is_waiting():
    lines = draw_chart(Series(), Series(), [], 40, 6)
    assert len(lines) == 6 and "waiting for the first step" in "".join(line.plain for line in lines)


def test_chart_clips_raw_spikes_but_keeps_the_smoothed_curve():
    raw = [(s, 2.0) for s in range(100)] + [(100, 50.0)]
    lo, hi = y_range(Series.of(raw), Series.of([(s, 2.0) for s in range(101)]), [])
    assert hi < 3.0 and lo < 2.0
    lo, hi = y_range(Series.of([(1, 1.0)]), Series.of([(1, 1.0)]), [])
    assert lo < 1.0 < hi


def test_series_keeps_long_runs_bounded_with_extremes_and_means():
    values = [((i * 7919) % 1000) / 100 for i in range(100_000)]
    series = Series.of(list(enumerate(values, start=1)))
    bands = series.bands()
    assert CAP // 2 <= len(bands) <= CAP
    assert min(b[1] for b in bands) == min(values) and max(b[2] for b in bands) == max(values)
    assert [b[0] for b in bands] == sorted({b[0] for b in bands})
    total = sum(b[3] * n for b, (*_, n) in zip(bands, series.buckets, strict=True))
    assert total == pytest.approx(sum(values))


def test_resume_rebuilds_the_chart_series(scripted):
    scripted.start()
    scripted.steps(100)
    scripted.start(resumed_from_step=40)
    state = fold(scripted.path)
    assert state.raw_series.bands()[-1][0] == 40 and len(state.raw_series) == 40


def test_tail_reads_complete_lines_and_restarts_on_truncation(tmp_path):
    path = tmp_path / "metrics.jsonl"
    tail = MetricsTail(path)
    assert tail.read_new() == []
    with open(path, "w") as f:
        f.write(json.dumps({"event": "step", "step": 1}) + "\n" + '{"event": "st')
    assert [e["step"] for e in tail.read_new()] == [1]
    with open(path, "a") as f:
        f.write('ep", "step": 2}\nnot json\n')
    assert [e["step"] for e in tail.read_new()] == [2]
    assert tail.read_new() == []
    path.write_text(json.dumps({"event": "run_start"}) + "\n")
    assert tail.read_new() == [{"event": "run_start"}] and tail.reset
