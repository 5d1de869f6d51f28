"""`watch` shows a merge done outside the trainer (`rwkv-tune merge`) and says when it is from a run that
stopped early."""

from __future__ import annotations

import json

from textual.widgets import Static

from rwkv_tune.tui.app import DashboardApp


def test_watch_shows_a_merge_by_the_merge_command_and_its_early_stop(scripted, drive, wait_until):
    scripted.start()
    scripted.steps(24)
    scripted.done(reason="stopped")  # no merge_done event: the merge came from `rwkv-tune merge`
    merged = scripted.root / "merged.pth"
    merged.write_bytes(b"not read by the dashboard")
    report = {"out": {"path": str(merged)}, "verification": {"checked": True},
              "source": {"run": str(scripted.root), "step": 24, "total_steps": 400, "reason": "stopped"}}
    (scripted.root / "merge-report.json").write_text(json.dumps(report))
    app = DashboardApp(scripted.root, follow=False, poll_s=0.02)

    async def scenario(pilot):
        await wait_until(pilot, lambda: app.state.merge.status == "done")
        assert app.state.merge.path == str(merged) and app.state.merge.verified is True
        status = str(app.dashboard.query_one("#status-line", Static).render())
        assert f"merged model: {merged}" in status
        assert "merged from step 24 of 400 — the run stopped early" in status
        await pilot.press("q")

    assert drive(app, scenario) == "quit"
