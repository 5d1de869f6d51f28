"""Detect an RWKV model's architecture from its state dict, and refuse what we do not support.

Torch-free: detection works on a `{key: shape}` map (plus dtypes), so the estimator, the wizard
and `inspect` can use it without loading weights. `ModelSpec.expected_shapes()` is the single
source of truth for the official key set, order and shapes of each version.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from math import prod
from pathlib import Path
from typing import Any

from rwkv_tune.errors import UnsupportedModelError

Shape = tuple[int, ...]

ARCH_NAMES = {5: "x052", 6: "x060", 7: "x070"}
FAMILY_NAMES = {5: "Eagle", 6: "Finch", 7: "Goose"}
# RWKV-7 variants: extra keys on top of x070 (reference/rwkv7-deepembed.md).
VARIANT_NAMES = {"": "", "7a": "RWKV-7a DeepEmbed", "7b": "RWKV-7b DeepEmbed Attention"}
DE_RANK = 32  # 7a: each token's FFN matrix is DE_RANK × DE_RANK (a 1024-wide table row)
DEA_DIM = 256  # 7b: width of the attention's q and k
DEA_RANK = 32  # 7b: the k1/v1 projections that the attention cache keeps per token
DEEPEMBED_TABLES = ("ffn.s_emb.weight", "qkv.k_emb.weight", "qkv.v_emb.weight")  # 7a/7b per-token [V, ·] tables
_WRAPPER_PREFIXES = ("_forward_module.", "module.")

# (version, n_layer, n_embd) -> the name the released models go by.
_RELEASED_SIZES = {
    (7, 12, 768): "0.1B", (7, 24, 1024): "0.4B", (7, 24, 2048): "1.5B", (7, 32, 2560): "2.9B",
    (7, 32, 4096): "7.2B", (7, 61, 4096): "13.3B",
    (6, 24, 2048): "1.6B", (6, 32, 2560): "3B", (6, 32, 4096): "7B", (6, 61, 4096): "14B",
    (5, 24, 1024): "0.4B", (5, 24, 2048): "1.5B", (5, 32, 2560): "3B", (5, 32, 4096): "7B",
}


@dataclass(frozen=True)
class ModelSpec:
    """Everything about a model's shape that a user used to type by hand."""

    version: int
    n_layer: int
    n_embd: int
    n_head: int
    head_size: int
    vocab_size: int
    dim_ffn: int
    lora_dims: dict[str, int] = field(default_factory=dict)  # v7: w a v g; v6: maa decay
    dtype: str = "float32"
    layer0_v: bool = False  # v7 only: blocks.0.att.v0/v1/v2 present (unused by the math)
    time_state: bool = False  # a trained initial state (state tuning) is stored in the file
    params: int = 0
    variant: str = ""  # v7 only: "" plain x070, "7a" DeepEmbed, "7b" DeepEmbed Attention
    variant_vec3d: bool = False  # 7a/7b: s0 (and 7b's x_q/x_k/x_v) stored [1, 1, n] rather than [n]

    @property
    def variant_name(self) -> str:
        return VARIANT_NAMES[self.variant]

    @property
    def arch(self) -> str:
        return ARCH_NAMES[self.version]

    @property
    def size_name(self) -> str:
        known = _RELEASED_SIZES.get((self.version, self.n_layer, self.n_embd))
        if known:
            return known
        if self.params >= 1e9:
            return f"{self.params / 1e9:.1f}B"
        return f"{self.params / 1e6:.1f}M"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["arch"] = self.arch
        d["size_name"] = self.size_name
        d["variant_name"] = self.variant_name
        return d

    def peft_flags(self) -> str:
        """The equivalent RWKV-PEFT command-line flags (what users used to type)."""
        return (
            f"--my_testing {self.arch} --n_layer {self.n_layer} --n_embd {self.n_embd} "
            f"--vocab_size {self.vocab_size} --head_size {self.head_size} --dim_ffn {self.dim_ffn}"
        )

    def expected_shapes(self, *, layer0_v: bool | None = None, time_state: bool | None = None) -> dict[str, Shape]:
        """The official keys, in official order, with their shapes."""
        return expected_shapes(
            self.version, self.n_layer, self.n_embd, self.head_size, self.vocab_size, self.dim_ffn,
            self.lora_dims,
            layer0_v=self.layer0_v if layer0_v is None else layer0_v,
            time_state=self.time_state if time_state is None else time_state,
            variant=self.variant, variant_vec3d=self.variant_vec3d,
        )


def deep_embed_shapes(variant: str, i: int, C: int, V: int, F: int, vec3d: bool = False) -> dict[str, Shape]:
    """The keys a 7a (FFN DeepEmbed) or 7b (also `qkv` attention) layer adds to x070, in our file order.

    vec3d: the vectors s0, x_q, x_k, x_v as [1, 1, n] (how some writers store them) instead of [n].
    """
    if not variant:
        return {}

    def vec(n: int) -> Shape:
        return (1, 1, n) if vec3d else (n,)
    f = f"blocks.{i}.ffn."
    s: dict[str, Shape] = {f + "s_emb.weight": (V, DE_RANK * DE_RANK), f + "s_emb_x.weight": (DE_RANK * DE_RANK, C),
                           f + "s1": (C, DE_RANK), f + "s2": (DE_RANK, F), f + "s0": vec(F)}
    if variant == "7b":
        q = f"blocks.{i}.qkv."
        s.update({q + "qq.weight": (DEA_DIM, C), q + "k1": (C, DEA_RANK), q + "k2": (DEA_RANK, DEA_DIM),
                  q + "k_emb.weight": (V, DEA_DIM), q + "k_emb_x.weight": (DEA_DIM, C),
                  q + "v1": (C, DEA_RANK), q + "v2": (DEA_RANK, C), q + "v_emb.weight": (V, C),
                  q + "v_emb_x.weight": (C, C), q + "x_q": vec(DEA_DIM), q + "x_k": vec(DEA_DIM), q + "x_v": vec(C),
                  q + "lnq.weight": (DEA_DIM,), q + "lnq.bias": (DEA_DIM,), q + "lnk.weight": (DEA_DIM,),
                  q + "lnk.bias": (DEA_DIM,), q + "lnv.weight": (C,), q + "lnv.bias": (C,)})
    return s


def _block_shapes(version: int, i: int, C: int, N: int, F: int, dims: Mapping[str, int],
                  layer0_v: bool, time_state: bool) -> dict[str, Shape]:
    H = C // N
    vec = (1, 1, C)
    p = f"blocks.{i}."
    s: dict[str, Shape] = {p + "ln1.weight": (C,), p + "ln1.bias": (C,), p + "ln2.weight": (C,), p + "ln2.bias": (C,)}
    if i == 0:
        s[p + "ln0.weight"] = (C,)
        s[p + "ln0.bias"] = (C,)
    a = p + "att."
    if version == 7:
        Dw, Da, Dv, Dg = dims["w"], dims["a"], dims["v"], dims["g"]
        for name in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g"):
            s[a + name] = vec
        s.update({a + "w0": vec, a + "w1": (C, Dw), a + "w2": (Dw, C),
                  a + "a0": vec, a + "a1": (C, Da), a + "a2": (Da, C)})
        if i > 0 or layer0_v:
            s.update({a + "v0": vec, a + "v1": (C, Dv), a + "v2": (Dv, C)})
        s.update({a + "g1": (C, Dg), a + "g2": (Dg, C), a + "k_k": vec, a + "k_a": vec, a + "r_k": (H, N)})
        linears = ("receptance", "key", "value", "output")
    elif version == 6:
        Dm, Dd = dims["maa"], dims["decay"]
        for name in ("time_maa_x", "time_maa_w", "time_maa_k", "time_maa_v", "time_maa_r", "time_maa_g"):
            s[a + name] = vec
        s.update({a + "time_maa_w1": (C, 5 * Dm), a + "time_maa_w2": (5, Dm, C), a + "time_decay": vec,
                  a + "time_decay_w1": (C, Dd), a + "time_decay_w2": (Dd, C), a + "time_faaaa": (H, N)})
        linears = ("receptance", "key", "value", "output", "gate")
    else:
        for name in ("time_mix_k", "time_mix_v", "time_mix_r", "time_mix_g"):
            s[a + name] = vec
        s.update({a + "time_decay": (H, N), a + "time_faaaa": (H, N)})
        linears = ("receptance", "key", "value", "output", "gate")
    if time_state:
        s[a + "time_state"] = (H, N, N)
    for name in linears:
        s[a + name + ".weight"] = (C, C)
    s[a + "ln_x.weight"] = (C,)
    s[a + "ln_x.bias"] = (C,)
    f = p + "ffn."
    if version == 7:
        s.update({f + "x_k": vec, f + "key.weight": (F, C), f + "value.weight": (C, F)})
    else:
        mix = "time_maa" if version == 6 else "time_mix"
        s.update({f + f"{mix}_k": vec, f + f"{mix}_r": vec, f + "key.weight": (F, C),
                  f + "receptance.weight": (C, C), f + "value.weight": (C, F)})
    return s


def expected_shapes(version: int, n_layer: int, n_embd: int, head_size: int, vocab_size: int, dim_ffn: int,
                    lora_dims: Mapping[str, int], *, layer0_v: bool = False,
                    time_state: bool = False, variant: str = "", variant_vec3d: bool = False) -> dict[str, Shape]:
    """The official state-dict layout for one version, in the order RWKV-LM writes it."""
    if variant and version != 7:
        raise ValueError(f"variant {variant!r} exists only for RWKV-7, not version {version}")
    shapes: dict[str, Shape] = {"emb.weight": (vocab_size, n_embd)}
    for i in range(n_layer):
        shapes.update(_block_shapes(version, i, n_embd, head_size, dim_ffn, lora_dims, layer0_v, time_state))
        shapes.update(deep_embed_shapes(variant, i, n_embd, vocab_size, dim_ffn, variant_vec3d))
    shapes.update({"ln_out.weight": (n_embd,), "ln_out.bias": (n_embd,), "head.weight": (vocab_size, n_embd)})
    return shapes


def strip_wrapper_prefix(key: str) -> str:
    for prefix in _WRAPPER_PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix):]
    return key


def _refuse(what: str, why: str, fix: str | None = None) -> UnsupportedModelError:
    return UnsupportedModelError(f"{what}: {why}", fix)


_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.")


def detect_from_shapes(shapes: Mapping[str, Shape], dtypes: Mapping[str, str] | None = None,
                       *, source: str = "state dict") -> ModelSpec:
    """Detect the spec from `{key: shape}`; raise UnsupportedModelError naming what is wrong."""
    if not shapes:
        raise _refuse(source, "contains no tensors", "Pass an RWKV-5/6/7 .pth model file.")
    shapes = {strip_wrapper_prefix(k): tuple(v) for k, v in shapes.items()}
    keys = set(shapes)
    if "_strategy" in keys or "_version" in keys:
        raise _refuse(source, "was converted by the `rwkv` pip package (has a '_strategy' key; weights are "
                      "transposed/quantised)", "Use the original .pth that was downloaded, not the converted one.")
    if any(k.endswith(("lora_A", "lora_B", "lora_A.weight", "lora_B.weight", "bone", "miss")) for k in keys) \
            and "emb.weight" not in keys:
        raise _refuse(source, "is an adapter, not a model", "Pass the base model; adapters go to `rwkv-tune merge`.")
    if "emb.weight" not in keys or "head.weight" not in keys:
        if any(k.startswith(("model.", "rwkv.", "lm_head")) for k in keys):
            raise _refuse(source, "has Hugging Face-format keys (e.g. 'model.layers…'/'rwkv.blocks…')",
                          "Use the official RWKV .pth (e.g. from BlinkDL on Hugging Face), not the transformers conversion.")
        raise _refuse(source, "has no 'emb.weight'/'head.weight', so it is not an RWKV model",
                      "Pass an RWKV-5/6/7 .pth model file.")
    variant = _detect_variant(keys, source)
    if "blocks.0.att.time_first" in keys:
        raise _refuse(source, "is an RWKV-4 model, which is not supported", "Use an RWKV-5.2, 6 or 7 model.")

    V, C = shapes["emb.weight"]
    layer_ids = sorted({int(m.group(1)) for k in keys if (m := _BLOCK_RE.match(k))})
    present = sorted({int(m.group(1)) for k in keys if (m := _BLOCK_RE.match(k)) and k.endswith(".ln1.weight")})
    if not present:
        raise _refuse(source, "has no layers ('blocks.N.…')", "Pass an RWKV-5/6/7 .pth model file.")
    L = len(present)
    if present != list(range(L)):
        missing = sorted(set(range(max(present) + 1)) - set(present))
        raise _refuse(source, f"is missing layer(s) {missing} (found ln1 in layers {present})",
                      "The file is incomplete or was edited; re-download it.")
    extra_layers = [i for i in layer_ids if i >= L]
    if extra_layers:
        raise _refuse(source, f"has keys for layer(s) {extra_layers} beyond its {L} complete layers",
                      "The file is incomplete or was edited; re-download it.")

    def shape(key: str) -> Shape:
        if key not in shapes:
            raise _refuse(source, f"is missing '{key}'", "The file is incomplete or not a supported RWKV version.")
        return shapes[key]

    if "blocks.0.att.r_k" in keys or "blocks.0.att.x_r" in keys:
        version = 7
        H, N = shape("blocks.0.att.r_k")
        F = shape("blocks.0.ffn.key.weight")[0]
        v1_key = "blocks.1.att.v1" if L > 1 else "blocks.0.att.v1"
        Dv = shapes[v1_key][1] if v1_key in shapes else 32
        dims = {"w": shape("blocks.0.att.w1")[1], "a": shape("blocks.0.att.a1")[1], "v": Dv,
                "g": shape("blocks.0.att.g1")[1]}
    elif "blocks.0.att.time_maa_x" in keys:
        version = 6
        H, N = shape("blocks.0.att.time_faaaa")
        F = shape("blocks.0.ffn.key.weight")[0]
        dims = {"maa": shape("blocks.0.att.time_maa_w1")[1] // 5, "decay": shape("blocks.0.att.time_decay_w1")[1]}
    elif "blocks.0.att.time_mix_k" in keys and "blocks.0.att.ln_x.weight" in keys:
        td = shape("blocks.0.att.time_decay")
        if "blocks.0.att.gate.weight" not in keys or len(td) != 2 or td[1] <= 1:
            raise _refuse(source, "is an RWKV-5.0/5.1 model (no gate or a per-head time_decay), which was never "
                          "released as a World model and is not supported", "Use an RWKV-5.2 (x052), 6 or 7 model.")
        version = 5
        H, N = td
        F = shape("blocks.0.ffn.key.weight")[0]
        dims = {}
    elif "blocks.0.att.time_mix_k" in keys:
        raise _refuse(source, "is an RWKV-4 model (time_mix without ln_x), which is not supported",
                      "Use an RWKV-5.2, 6 or 7 model.")
    else:
        raise _refuse(source, "is not a recognised RWKV version (no r_k, time_maa_x or time_mix_k in layer 0)",
                      "rwkv-tune supports RWKV-5.2 (x052), RWKV-6 (x060) and RWKV-7 (x070).")
    if variant and version != 7:
        raise _refuse(source, f"has RWKV-7 DeepEmbed keys ('ffn.s_emb'/'qkv.') on an RWKV-{version} model",
                      "The file mixes two architectures; re-download it.")
    if H * N != C:
        raise _refuse(source, f"has heads × head_size = {H}×{N} ≠ n_embd {C}", "The file is corrupt or edited.")

    layer0_v = version == 7 and "blocks.0.att.v1" in keys
    time_state = any(k.endswith(".att.time_state") for k in keys)
    vec3d = len(shapes.get("blocks.0.ffn.s0", ())) == 3
    expected = expected_shapes(version, L, C, N, V, F, dims, layer0_v=layer0_v, time_state=time_state,
                               variant=variant, variant_vec3d=vec3d)
    missing = [k for k in expected if k not in shapes]
    if missing:
        what = f"is an {VARIANT_NAMES[variant]} model ({variant}) with {len(missing)} missing" if variant \
            else f"is missing {len(missing)}"
        raise _refuse(source, f"{what} key(s), first '{missing[0]}'",
                      "The file is incomplete or not a supported RWKV version.")
    extra = [k for k in shapes if k not in expected]
    if extra:
        hint = "It looks like an adapter was merged in or left inside; merge it with `rwkv-tune merge`." \
            if any("lora" in k or "bone" in k or "miss" in k for k in extra) else "Remove them or re-download the file."
        raise _refuse(source, f"has {len(extra)} unexpected key(s), first '{extra[0]}'", hint)
    for key, want in expected.items():
        if shapes[key] != want:
            raise _refuse(source, f"tensor '{key}' has shape {list(shapes[key])}, expected {list(want)}",
                          "The file is corrupt or mixes layers of different models.")

    dtype = Counter(dtypes.values()).most_common(1)[0][0] if dtypes else "float32"
    return ModelSpec(
        version=version, n_layer=L, n_embd=C, n_head=H, head_size=N, vocab_size=V, dim_ffn=F,
        lora_dims=dims, dtype=dtype, layer0_v=layer0_v, time_state=time_state,
        params=sum(prod(s) for s in shapes.values()), variant=variant, variant_vec3d=vec3d,
    )


_DE_FFN_RE = re.compile(r"\.ffn\.(s_emb|s_emb_x|s0|s1|s2)(\.weight)?$")


def _detect_variant(keys: set[str], source: str) -> str:
    """"" for plain RWKV-7, "7a" with DeepEmbed FFN keys, "7b" with those plus `qkv.*` attention keys."""
    deep_embed = any(_DE_FFN_RE.search(k) for k in keys)
    attention = any(".qkv." in k for k in keys)
    if attention and not deep_embed:
        raise _refuse(source, "has RWKV-7b DeepEmbed Attention keys ('.qkv.') but none of the DeepEmbed FFN keys "
                      "('ffn.s_emb', 's0/s1/s2') that every 7b layer has, so it is a 7b with missing keys",
                      "The file is incomplete or was edited; re-download it.")
    return "7b" if attention else "7a" if deep_embed else ""


def detect(source: str | Path | Mapping[str, Any]) -> ModelSpec:
    """Detect the architecture of a model file (`.pth`/`.safetensors`) or an in-memory state dict."""
    if isinstance(source, (str, Path)):
        from rwkv_tune.checkpoint import read_shapes

        shapes, dtypes = read_shapes(source)
        return detect_from_shapes(shapes, dtypes, source=str(source))
    if not isinstance(source, Mapping):
        raise UnsupportedModelError(f"detect() got a {type(source).__name__}: expected a path or a state dict")
    shapes: dict[str, Shape] = {}
    dtypes: dict[str, str] = {}
    for key, value in source.items():
        if not hasattr(value, "shape") or not hasattr(value, "dtype"):
            raise _refuse("state dict", f"entry '{key}' is a {type(value).__name__}, not a tensor",
                          "Pass a plain {name: tensor} RWKV state dict.")
        shapes[key] = tuple(value.shape)
        dtypes[key] = str(value.dtype).removeprefix("torch.")
    return detect_from_shapes(shapes, dtypes)
