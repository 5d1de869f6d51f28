"""The run directory's event stream: written line by line, read back, followed like tail -f."""

import json
import threading
import time

import pytest

from rwkv_tune.runs import EventWriter, RunDir, follow_events, read_events


def test_events_are_written_and_read_back(tmp_path):
    run = RunDir(tmp_path / "run")
    with EventWriter(run.metrics) as w:
        w.emit("run_start", plan={"total_steps": 3})
        w.emit("step", step=1, loss=2.5)
        w.emit("done", step=1, reason="finished")
    events = read_events(run.metrics)
    assert [e["event"] for e in events] == ["run_start", "step", "done"]
    assert all(e["v"] == 1 and "time" in e for e in events)
    with pytest.raises(ValueError):
        EventWriter(run.metrics).emit("nonsense")


def test_a_torn_last_line_is_ignored(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"event": "step", "step": 1}) + "\n" + '{"event": "st')
    assert [e["step"] for e in read_events(path)] == [1]


def test_follow_sees_lines_as_they_come_and_stops_at_done(tmp_path):
    path = tmp_path / "metrics.jsonl"
    w = EventWriter(path)

    def write():
        for i in range(3):
            w.emit("step", step=i)
            time.sleep(0.05)
        w.emit("done", step=2, reason="finished")

    thread = threading.Thread(target=write)
    thread.start()
    seen = [e["event"] for e in follow_events(path, poll_s=0.02, stop=lambda: False)]
    thread.join()
    assert seen == ["step", "step", "step", "done"]


def test_checkpoint_listing_ignores_incomplete(tmp_path):
    run = RunDir(tmp_path)
    run.checkpoint(5).mkdir(parents=True)
    (run.checkpoint(5) / "complete").write_text("5")
    run.checkpoint(9).mkdir()
    assert run.latest_checkpoint() == run.checkpoint(5)
