"""Run the official `rwkv` pip runtime (0.8.32) on a model file; used by the parity tests in a subprocess.

usage: python rwkv_pip_oracle.py MODEL.pth VERSION TOKENS_JSON SPLIT OUT.pt
VERSION is 5, 6, 7 or 7a (RWKV-7a DeepEmbed: the runtime's RWKV_DE_VERSION=1 path).
Writes {"seq": logits[T, V], "split_last": logits[V]} where split_last continues from a state
carried after the first SPLIT tokens.
"""

import json
import os
import sys

model_path, version, tokens_json, split, out_path = sys.argv[1:6]
os.environ["RWKV_V7_ON"] = "1" if version.startswith("7") else "0"
if version == "7a":
    os.environ["RWKV_DE_VERSION"] = "1"
os.environ["RWKV_CUDA_ON"] = "0"
os.environ["RWKV_JIT_ON"] = "1"

import torch  # noqa: E402
from rwkv.model import RWKV  # noqa: E402

tokens = json.loads(tokens_json)
split = int(split)
model = RWKV(model=model_path.removesuffix(".pth"), strategy="cpu fp32")
seq, _ = model.forward(tokens, None, full_output=True)
_, state = model.forward(tokens[:split], None)
last, _ = model.forward(tokens[split:], state)
torch.save({"seq": seq.float(), "split_last": last.float()}, out_path)
