import json

import pytest
import torch

from rwkv_tune.data.tokenizer import get_tokenizer
from rwkv_tune.errors import DataError
from rwkv_tune.objectives.pairs import detect_kind, pad_rows, pair_batch, read_objective_data, tokenize_pairs


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_pairs_are_detected_and_tokenised_with_an_end_token(tmp_path):
    tok = get_tokenizer()
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Q: hi A:", "chosen": " yes", "rejected": " no"}])
    kind, pairs = read_objective_data(path)
    assert kind == "pairs"
    assert pairs[0].prompt == tuple(tok.encode("Q: hi A:"))
    assert pairs[0].chosen == tuple(tok.encode(" yes")) + (0,)
    assert pairs[0].rejected == tuple(tok.encode(" no")) + (0,)


def test_chat_pairs_render_the_shared_history_into_the_prompt():
    record = {"chosen": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
              "rejected": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "go away"}]}
    pair = tokenize_pairs([record])[0]
    tok = get_tokenizer()
    assert tok.decode(pair.prompt) == "User: hi\n\nAssistant:"
    assert tok.decode(pair.chosen[:-1]) == " hello\n\n"
    assert tok.decode(pair.rejected[:-1]) == " go away\n\n"
    record["rejected"][0]["content"] = "other"
    with pytest.raises(DataError, match="differ before their last message"):
        tokenize_pairs([record])


def test_prompts_are_detected_and_keep_their_record(tmp_path):
    path = write_jsonl(tmp_path / "q.jsonl", [{"prompt": "2+2=", "answer": "4"}, {"prompt": "", "answer": "x"}])
    kind, prompts = read_objective_data(path)
    assert kind == "prompts" and prompts[0].record == {"prompt": "2+2=", "answer": "4"}
    assert prompts[1].ids == (0,)  # an empty prompt starts from the end-of-document token
    assert detect_kind({"text": "x"}) is None


def test_tokens_beyond_the_vocab_and_bad_lines_are_named(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Q", "chosen": " yes", "rejected": " no"}])
    with pytest.raises(DataError, match="record 0 has token id 22796, beyond the model's vocab \\(200\\)"):
        read_objective_data(path, vocab_size=200)
    (tmp_path / "bad.jsonl").write_text('{"prompt": "a"}\nnot json\n')
    with pytest.raises(DataError, match="line 2 is not valid JSON"):
        read_objective_data(tmp_path / "bad.jsonl")


def test_response_masks_cover_exactly_the_response_tokens():
    tokens, response = pad_rows([((5, 6), (7, 0)), ((5,), (8, 9, 0))])
    assert tokens.tolist() == [[5, 6, 7, 0], [5, 8, 9, 0]]
    assert response.tolist() == [[False, False, True, True], [False, True, True, True]]
    tokens, response = pad_rows([((5, 6, 7), (1, 0)), ((5,), (8, 0))])
    assert tokens[1].tolist() == [5, 8, 0, 0, 0] and response[1].tolist() == [False, True, True, False, False]
    from rwkv_tune.objectives.pairs import Pair

    batch = pair_batch([Pair((1, 2), (3, 0), (4, 4, 0))])
    assert batch["tokens"].shape == (2, 5) and torch.equal(batch["response"].sum(-1), torch.tensor([2, 3]))
