"""The RWKV World tokenizer as llama.cpp reads it from a GGUF file (tokenizer model "rwkv").

llama.cpp's RWKV tokenizer is the same greedy longest-match over bytes as ours. It takes the token
list as text: each token's bytes written the way Python's `repr(bytes)` writes them, without the
b'' quotes (`\\n`, `\\t`, `\\xff`, `\\\\`, `\\'`), and unescapes them when it builds its trie. As in
llama.cpp's converter, id 0 (our end-of-document) is the control token "<s>" and is also bos/eos,
"\\n\\n" (id 261) is end-of-turn, and the rows past the vocab file are unused "[PAD<id>]" tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

from rwkv_tune.errors import UnsupportedModelError

EOT_ID = 261  # "\n\n": where a chat turn ends
TOKEN_NORMAL, TOKEN_CONTROL, TOKEN_UNUSED = 1, 3, 5  # gguf.TokenType values
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}{{- 'System: ' + message['content']|trim + '\\n\\n' -}}"
    "{%- elif message['role'] == 'user' -%}{{- 'User: ' + message['content']|trim + '\\n\\n' -}}"
    "{%- elif message['role'] == 'assistant' -%}{{- 'Assistant: ' + message['content']|trim + '\\n\\n' -}}"
    "{%- endif -%}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- 'Assistant:' -}}{%- endif -%}"
)


@dataclass
class GGUFVocab:
    """Token texts and types for `tokenizer.ggml.tokens` / `token_type`, plus the special ids."""

    tokens: list[bytes]
    types: list[int]
    bos_id: int = 0
    eos_id: int = 0
    eot_id: int = EOT_ID
    model: str = "rwkv"
    chat_template: str = CHAT_TEMPLATE


def escape_token(raw: bytes) -> bytes:
    """A token's bytes as llama.cpp's RWKV vocab expects them: Python's bytes repr without b'' quotes."""
    return repr(raw)[2:-1].encode("ascii")


def world_vocab(vocab_size: int) -> GGUFVocab:
    """The World tokenizer padded to the model's `vocab_size` rows."""
    from rwkv_tune.data.tokenizer import get_tokenizer

    tok = get_tokenizer()
    lengths = tok.token_lengths
    n_real = int(lengths.nonzero()[0].max()) + 1  # 65530: ids 1..65529 are in the vocab file
    if vocab_size < n_real:
        raise UnsupportedModelError(f"the model has {vocab_size} vocab rows but the World tokenizer has {n_real} ids, "
                                    "so llama.cpp could not tokenize text for it",
                                    "Export a model with the World vocab (65536 rows).")
    tokens = [b"<s>"] + [escape_token(tok.token_bytes(i)) for i in range(1, n_real)]
    types = [TOKEN_CONTROL] + [TOKEN_NORMAL] * (n_real - 1)
    tokens += [f"[PAD{i}]".encode() for i in range(n_real, vocab_size)]
    types += [TOKEN_UNUSED] * (vocab_size - n_real)
    return GGUFVocab(tokens, types)
