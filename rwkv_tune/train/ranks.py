"""Which rank this process is, whoever started it; and the multi-node hostfile check (torch-free).

Ranks come from torchrun / DeepSpeed's launcher (RANK, WORLD_SIZE, LOCAL_RANK) or from SLURM's srun
(SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID). A process with neither is the one `rwkv-tune train`
starts by hand, which launches the ranks itself when `devices × nodes` > 1.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from rwkv_tune.errors import ConfigError

SLURM_TO_TORCH = {"SLURM_PROCID": "RANK", "SLURM_NTASKS": "WORLD_SIZE", "SLURM_LOCALID": "LOCAL_RANK"}
HOST_LINE = re.compile(r"^(?P<host>[^\s#]+)\s+slots=(?P<slots>\d+)\s*$")
DEFAULT_MULTI_NODE_PORT = 29500


def started_as_rank(env: dict[str, str] | None = None) -> bool:
    """Whether an external launcher (torchrun, deepspeed, srun) started this process as one rank."""
    env = os.environ if env is None else env
    return "RANK" in env or "SLURM_PROCID" in env


def adopt_slurm_rank(master_addr: str, master_port: int, env: dict[str, str] | None = None) -> None:
    """Under srun, give torch.distributed the RANK / WORLD_SIZE / LOCAL_RANK / MASTER_* it reads."""
    env = os.environ if env is None else env
    if "RANK" in env or "SLURM_PROCID" not in env:
        return
    for slurm, torch_name in SLURM_TO_TORCH.items():
        if slurm in env:
            env[torch_name] = env[slurm]
    env.setdefault("MASTER_ADDR", master_addr)
    env.setdefault("MASTER_PORT", str(master_port or DEFAULT_MULTI_NODE_PORT))


def read_hostfile(path: str, *, devices: int, nodes: int) -> list[tuple[str, int]]:
    """The (host, slots) lines of a DeepSpeed hostfile, checked against train.devices and train.nodes."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"train.hostfile = {path}: no such file",
                          "Write one line per node, e.g. 'node1 slots=8', and point train.hostfile at it.")
    hosts: list[tuple[str, int]] = []
    for number, raw in enumerate(file.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = HOST_LINE.match(line)
        if match is None:
            raise ConfigError(f"train.hostfile = {path}, line {number}: {raw.strip()!r} is not 'HOST slots=N'",
                              "Write one node per line as 'HOST slots=N', e.g. 'node1 slots=8'.")
        slots = int(match["slots"])
        if slots != devices:
            raise ConfigError(f"train.hostfile = {path}, line {number}: host {match['host']} has slots={slots}, "
                              f"but train.devices = {devices}",
                              f"Make every host's slots equal train.devices (slots={devices}), or change train.devices.")
        hosts.append((match["host"], slots))
    if len(hosts) < nodes:
        raise ConfigError(f"train.hostfile = {path} lists {len(hosts)} host(s), but train.nodes = {nodes}",
                          f"List {nodes} hosts (one 'HOST slots={devices}' line each), or lower train.nodes.")
    return hosts
