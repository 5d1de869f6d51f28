"""`train.sample_every` alone samples prompts drawn from the data, and the dashboard says when samples come."""

from pathlib import Path

from test_no_hang import plain_text_setup

from rwkv_tune.data.masks import LossMarkers
from rwkv_tune.preset import from_dict
from rwkv_tune.runs import RunDir, read_events
from rwkv_tune.train import run
from rwkv_tune.train.sample_prompts import prompt_from_text


def test_prompt_from_chat_stops_at_the_first_assistant_marker_and_plain_text_gives_its_opening():
    chat = "User: What is 2+2?\n\nAssistant: 4\n\nUser: thanks"
    assert prompt_from_text(chat, LossMarkers()) == "User: What is 2+2?\n\nAssistant:"
    story = "Once upon a time there was a village by a river, and every morning the baker sang loudly."
    prompt = prompt_from_text(story, LossMarkers())
    assert story.startswith(prompt) and 20 < len(prompt) <= 60 and not prompt.endswith(" ")


def test_sample_every_alone_samples_prompts_from_the_data(tmp_path):
    raw = plain_text_setup(tmp_path, loss_mask="pad")
    raw["train"].update({"sample_every": 2, "sample_tokens": 3, "epoch_steps": 2})
    run(from_dict(raw))
    samples = [e for e in read_events(RunDir(Path(raw["output"]["dir"])).metrics) if e["event"] == "sample"]
    assert samples and samples[0]["step"] == 2
    assert {s["prompt"] for s in samples} <= {"Once upon a time there was a village number 0. It rained.",
                                              "Once upon a time there was a village number 1. It rained."}


def test_samples_panel_hint_follows_sample_every():
    from rwkv_tune.tui.state import RunState
    from rwkv_tune.tui.widgets import samples_hint

    state = RunState()
    assert samples_hint(state) == "none (set train.sample_every)"
    state.apply({"event": "run_start", "preset": {"train": {"sample_every": 50}}, "plan": {}})
    assert samples_hint(state) == "none yet (every 50 steps)"
