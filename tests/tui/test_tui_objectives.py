"""The dashboard and printers show an objective's own panels when the step events carry its fields."""

from __future__ import annotations

import io

from objective_run import ObjectiveRun
from rich.console import Console
from textual.widgets import Static

from rwkv_tune.progress import make_printer
from rwkv_tune.runs import read_events
from rwkv_tune.tui.app import DashboardApp
from rwkv_tune.tui.objective_state import recent_rollouts, summary
from rwkv_tune.tui.objective_widgets import ObjectiveChart, ObjectiveStats, RolloutsView
from rwkv_tune.tui.state import RunState


def folded(run) -> RunState:
    state = RunState()
    for event in read_events(run.path):
        state.apply(event)
    return state


def test_grpo_state_keeps_a_reward_curve_per_function_and_drops_redone_steps(tmp_path):
    run = ObjectiveRun(tmp_path / "run", "grpo")
    run.start()
    run.objective_steps(30)
    state = folded(run)
    o = state.objective
    assert o.kind == "grpo" and len(o.reward) == 30 and set(o.rewards) == {"exact_answer", "format"}
    assert o.latest["kl"] == 0.06
    run.start(resumed_from_step=20)
    state.apply(read_events(run.path)[-1])
    assert max(b[0] for b in o.reward.buckets) <= 20
    assert [g["group"] for g in recent_rollouts(run.root, 3)] == [28, 29, 30]


def test_dpo_state_has_margin_accuracy_and_held_out_evals(tmp_path):
    run = ObjectiveRun(tmp_path / "run", "dpo")
    run.start()
    run.objective_steps(20)
    run.pair_eval()
    o = folded(run).objective
    assert o.kind == "dpo" and len(o.margin) == 20 and len(o.accuracy) == 20
    assert o.evals[-1]["step"] == 20 and o.evals[-1]["pref_accuracy"] == 0.6
    assert summary({"reward_margin": 1.5, "pref_accuracy": 0.75}) == "margin 1.5 · pref_acc 0.75"
    assert summary({"loss": 2.0}) == ""


def test_sft_runs_keep_the_objective_panels_hidden(scripted, drive, wait_until):
    app = DashboardApp(scripted.root, poll_s=0.02)

    async def scenario(pilot):
        scripted.start()
        scripted.steps(5)
        scripted.sample()
        await wait_until(pilot, lambda: app.state.step == 5 and app.state.samples)
        screen = app.dashboard
        assert not screen.query_one(ObjectiveChart).display and not screen.query_one(RolloutsView).display
        assert screen.query_one("#samples").display

    drive(app, scenario)


def test_grpo_dashboard_shows_rewards_and_rollouts_in_place_of_samples(tmp_path, drive, wait_until):
    run = ObjectiveRun(tmp_path / "run", "grpo")
    app = DashboardApp(run.root, poll_s=0.02)

    async def scenario(pilot):
        run.start()
        run.objective_steps(40)
        await wait_until(pilot, lambda: app.state.step == 40)
        screen = app.dashboard
        chart = screen.query_one(ObjectiveChart)
        assert chart.display and chart.border_title == "reward"
        drawn = str(chart.render())
        assert "reward (mean)" in drawn and "reward exact_answer" in drawn and "reward format" in drawn
        assert not screen.query_one("#samples").display
        rollouts = str(screen.query_one(RolloutsView).render())
        assert "What is 40 + 1?" in rollouts and "<answer>41</answer>" in rollouts and "I think 7" in rollouts
        stats = str(screen.query_one(ObjectiveStats).render())
        assert "reward" in stats and "kl" in stats and "exact_ans " in stats

    drive(app, scenario, (120, 36))


def test_dpo_dashboard_shows_margin_and_accuracy(tmp_path, drive, wait_until):
    run = ObjectiveRun(tmp_path / "run", "dpo")
    app = DashboardApp(run.root, poll_s=0.02)

    async def scenario(pilot):
        run.start()
        run.objective_steps(30)
        run.pair_eval()
        await wait_until(pilot, lambda: app.state.objective.evals)
        screen = app.dashboard
        drawn = str(screen.query_one(ObjectiveChart).render())
        assert "reward margin" in drawn and "pref accuracy" in drawn
        assert "held out" in str(screen.query_one(ObjectiveStats).render())
        assert screen.query_one("#samples", Static).display  # samples still apply to preference training

    drive(app, scenario, (120, 36))


def test_plain_printer_prints_the_objective_fields(tmp_path):
    run = ObjectiveRun(tmp_path / "run", "grpo")
    run.start()
    run.objective_steps(3)
    out = io.StringIO()
    printer = make_printer(Console(file=out, width=200, force_terminal=False), every_s=0)
    for event in read_events(run.path):
        printer(event)
    assert "reward 0." in out.getvalue() and "kl 0.006" in out.getvalue()


def test_grpo_snapshot(snap_compare, tmp_path):
    run = ObjectiveRun(tmp_path / "run", "grpo")
    run.start()
    run.objective_steps(60)
    run.checkpoint()

    async def loaded(pilot) -> None:
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()

    assert snap_compare(DashboardApp(run.root, follow=False), terminal_size=(110, 32), run_before=loaded)


def test_objective_eta_is_time_per_step(tmp_path):
    run = ObjectiveRun(tmp_path / "run", "dpo", total_steps=100)
    run.start()
    run.objective_steps(20)  # 2 s per step in the scripted run
    assert folded(run).eta_s == 80 * 2.0


def test_watch_plain_summary_has_the_objective_line(tmp_path):
    from rwkv_tune.tui.format import summary_lines

    run = ObjectiveRun(tmp_path / "run", "dpo")
    run.start()
    run.objective_steps(5)
    lines = summary_lines(folded(run), now=1e12)
    assert any(line.startswith("dpo      margin ") and "pref_acc" in line for line in lines), lines
