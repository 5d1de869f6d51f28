"""Multi-node launch checks that need no second machine: the hostfile, SLURM's rank variables, and the
launch command `rwkv-tune train` builds (nothing starts when the hostfile is wrong)."""

from __future__ import annotations

import subprocess

import pytest
import yaml
from typer.testing import CliRunner

from rwkv_tune.cli import app
from rwkv_tune.errors import ConfigError
from rwkv_tune.train.launcher import rank_launch_command
from rwkv_tune.train.ranks import adopt_slurm_rank, read_hostfile, started_as_rank


def multi_node_preset(train_setup, tmp_path, hostfile) -> str:
    _, _, raw = train_setup(7, "lora")
    raw["train"].update(devices=2, nodes=2, strategy="deepspeed_stage_2", hostfile=hostfile, master_addr="10.0.0.1",
                        master_port=29600)
    path = tmp_path / "multi.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


@pytest.mark.parametrize(("text", "says", "fix"), [
    (None, "no such file", "Write one line per node, e.g. 'node1 slots=8'"),
    ("node1 slots=2\nnode2 gpus=2\n", "line 2: 'node2 gpus=2' is not 'HOST slots=N'", "Write one node per line"),
    ("node1 slots=2\nnode2 slots=4\n", "host node2 has slots=4, but train.devices = 2", "(slots=2)"),
    ("node1 slots=2\n", "lists 1 host(s), but train.nodes = 2", "List 2 hosts"),
])
def test_a_missing_or_malformed_hostfile_exits_2_with_the_fix_and_starts_nothing(train_setup, tmp_path, monkeypatch,
                                                                                  text, says, fix):
    hostfile = tmp_path / "hostfile"
    if text is not None:
        hostfile.write_text(text)
    preset = multi_node_preset(train_setup, tmp_path, str(hostfile))
    started = []
    monkeypatch.setattr(subprocess, "call", lambda *a, **k: started.append(a) or 0)
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: started.append(a))
    monkeypatch.delenv("RANK", raising=False)
    result = CliRunner().invoke(app, ["train", preset, "--no-tui"])
    assert result.exit_code == 2, result.output
    assert says in result.output
    assert fix in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert started == []
    assert not (tmp_path / "run").exists()


def test_a_good_hostfile_builds_the_deepspeed_launcher_command(train_setup, tmp_path):
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("# two nodes\nnode1 slots=2\nnode2 slots=2  # the second\n")
    assert read_hostfile(str(hostfile), devices=2, nodes=2) == [("node1", 2), ("node2", 2)]
    cmd = rank_launch_command(multi_node_preset(train_setup, tmp_path, str(hostfile)), [], "auto")
    assert cmd[:13] == ["deepspeed", "--hostfile", str(hostfile), "--num_nodes", "2", "--num_gpus", "2",
                        "--master_addr", "10.0.0.1", "--master_port", "29600", "--module", "rwkv_tune.train.worker"]
    assert cmd[-2:] == ["--resume", "auto"]


def test_nodes_without_a_hostfile_is_refused_with_the_fix(train_setup, tmp_path):
    with pytest.raises(ConfigError, match="needs train.hostfile"):
        rank_launch_command(multi_node_preset(train_setup, tmp_path, None), [], None)


def test_slurm_rank_variables_become_torch_ones():
    env = {"SLURM_PROCID": "3", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1"}
    assert started_as_rank(env) and not started_as_rank({})
    adopt_slurm_rank("node1", 0, env)
    assert (env["RANK"], env["WORLD_SIZE"], env["LOCAL_RANK"]) == ("3", "8", "1")
    assert (env["MASTER_ADDR"], env["MASTER_PORT"]) == ("node1", "29500")
    torchrun = {"RANK": "0", "WORLD_SIZE": "2", "SLURM_PROCID": "5"}
    adopt_slurm_rank("x", 1, torchrun)  # torchrun's own variables win
    assert torchrun["RANK"] == "0" and "MASTER_ADDR" not in torchrun


def test_quantized_base_under_zero3_is_refused_when_the_preset_is_checked(train_setup):
    from rwkv_tune.preset import from_dict

    _, _, raw = train_setup(7, "lora")
    raw["train"].update(devices=2, strategy="deepspeed_stage_3")
    with pytest.raises(ConfigError, match="ZeRO-3 partitions every weight"):
        from_dict({**raw, "quant": "nf4"})


def test_a_rank_whose_world_size_is_not_devices_times_nodes_is_refused(train_setup, tmp_path, monkeypatch):
    _, _, raw = train_setup(7, "lora")
    raw["train"].update(devices=2, strategy="deepspeed_stage_2")
    preset = tmp_path / "p.yaml"
    preset.write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "3")
    result = CliRunner().invoke(app, ["train", str(preset), "--no-tui"])
    assert result.exit_code == 2, result.output
    assert "started 3 ranks (WORLD_SIZE), but train.devices × train.nodes = 2 × 1" in result.output
