"""The control file: save, stop, pause until resume or stop, and stale words cleared (no torch, no model)."""

from __future__ import annotations

import threading
import time

from rwkv_tune.train.control import ControlFile


def poll(control: ControlFile, stopping=lambda: False):
    actions, saves = [], []
    stop = control.poll(emit=lambda event, **kw: actions.append(kw["action"]), save=lambda: saves.append(1),
                        stopping=stopping)
    return stop, actions, len(saves)


def test_save_and_stop_words_and_no_word(tmp_path):
    control = ControlFile(tmp_path / "control")
    assert poll(control) == (False, [], 0)
    control.path.write_text("save\n")
    assert poll(control) == (False, ["save"], 1)
    assert not control.path.exists()  # a word acts once
    control.path.write_text("stop")
    assert poll(control) == (True, ["stop"], 0)


def test_pause_waits_for_resume_or_stop(tmp_path):
    control = ControlFile(tmp_path / "control")
    for then, stops in (("resume", False), ("stop", True)):
        control.path.write_text("pause")
        threading.Timer(0.3, lambda word=then: control.path.write_text(word)).start()
        started = time.time()
        assert poll(control) == (stops, ["pause", then], 0)
        assert time.time() - started >= 0.3


def test_a_signal_ends_a_pause_and_stale_words_are_cleared(tmp_path):
    control = ControlFile(tmp_path / "control")
    control.path.write_text("pause")
    assert poll(control, stopping=lambda: True) == (False, ["pause"], 0)  # the trainer keeps its own stop reason
    control.path.write_text("stop")
    control.clear()
    assert poll(control) == (False, [], 0)
