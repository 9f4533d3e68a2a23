"""innerq.Model from Python against the innerq tool on the same files: the
same greedy tokens, the same perplexity and KLD (so the same logits through
the same caches), plus tokens, chat turns, extend vs decode, and refusals."""

import json
import subprocess

import numpy as np
import pytest

import innerq

THREADS = 2  # the tool and the module split the matmuls alike


@pytest.fixture(autouse=True)
def two_threads():
    before = innerq.threads()
    innerq.set_threads(THREADS)
    yield
    innerq.set_threads(before)


def run_tool(binary, *args):
    out = subprocess.run(
        [str(binary), *args, "-t", str(THREADS), "--json"], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.parametrize("kv", ["f16", "innerq"])
def test_greedy_tokens_equal_the_tool(smollm2, smollm2_file, innerq_binary, kv):
    prompt = "The three primary colors are"
    tool = run_tool(innerq_binary, "generate", "-m", str(smollm2_file), "-p", prompt, "-n", "40", "--kv", kv)
    mine = smollm2.generate(prompt, n=40, kv=kv)
    assert mine.tokens == tool["tokens"]
    assert mine.text == tool["text"]
    assert mine.prompt_tokens == tool["n_prompt"] and mine.stop == tool["stop"]
    assert mine.kv_bytes == tool["kv_bytes"] and mine.kv_bytes_f16 == tool["kv_bytes_f16"]


def test_perplexity_equals_the_tool(smollm2, smollm2_file, innerq_binary, wikitext):
    args = ["--ctx", "256", "--prefix", "128", "--chunks", "2", "-b", "1"]
    tool = run_tool(
        innerq_binary,
        "perplexity",
        "-m",
        str(smollm2_file),
        "-f",
        str(wikitext),
        *args,
        "--kv",
        "innerq,q4_0:rot=kv",
    )
    mine = smollm2.perplexity(file=wikitext, kv=["innerq", "q4_0:rot=kv"], ctx=256, prefix=128, chunks=2)
    assert [r.kv for r in mine] == [r["kv"] for r in tool] == ["f16", "innerq", "q4_0:rot=kv"]
    for got, want in zip(mine, tool, strict=True):
        assert got.tokens == want["tokens"] == 2 * 128
        assert got.ppl == pytest.approx(want["ppl"], rel=1e-4)
        assert got.kld == pytest.approx(want["kld"], rel=1e-4, abs=1e-9)
        assert got.top1 == want["top1"]
        assert got.kv_bytes == want["kv_bytes"]
    assert mine[1].kld > 0 and mine[0].kld == 0


def test_extend_then_decode_equals_one_extend(smollm2):
    ids = smollm2.tokenize("Paris is the capital and most populous city of France.").tolist()
    a = smollm2.pool("f32", max_tokens=64).sequence()
    b = smollm2.pool("f32", max_tokens=64).sequence()
    whole = smollm2.extend(a, ids, all_logits=True)
    assert whole.shape == (len(ids), smollm2.n_vocab) and whole.dtype == np.float32
    smollm2.extend(b, ids[:-3])
    smollm2.extend(b, ids[-3:-1])  # a held sequence goes through its cache
    last = smollm2.decode([b], ids[-1:])[0]
    # The two runs sum attention in other orders; with the default int16
    # activations a reordering difference that crosses a rounding step moves
    # an activation by 1/32767 of its chunk's largest, so the logits differ by
    # up to about 1.2e-4 of the largest (measured), not f32 rounding alone.
    np.testing.assert_allclose(last, whole[-1], rtol=0, atol=1e-3 * np.abs(whole[-1]).max())
    assert len(a) == len(b) == len(ids)


def test_tokens_and_chat(smollm2, stories):
    text = "Hello, world! Ünïcödé \u2581 too."
    ids = smollm2.tokenize(text, add_bos=False)
    assert ids.dtype == np.int32
    assert smollm2.detokenize(ids) == text
    turn = smollm2.chat_turn("Hi there", "Be brief.", True)
    assert "<|im_start|>user\nHi there<|im_end|>" in turn and "Be brief." in turn
    assert smollm2.ends_generation(smollm2.eos)
    with pytest.raises(NotImplementedError, match="chat template"):
        stories.chat_turn("hi")
    with pytest.raises(ValueError, match="text: expected str or bytes"):
        smollm2.tokenize(42)
    assert "chat" not in repr(smollm2) and "30 layers" in repr(smollm2)


def test_generate_chat_and_budget(smollm2):
    g = smollm2.generate("What is 2+2?", n=16, chat=True, kv="innerq")
    assert g.stop in ("eos", "length") and 0 < len(g.tokens) <= 16
    assert g.decode_tps > 0 and g.prefill_tps > 0
    assert g.kv_reserved >= g.kv_bytes > 0
    plan = innerq.plan_memory("innerq", model=smollm2, tokens=256)
    pool = smollm2.pool("innerq", max_tokens=256, budget="plan")
    assert pool.stats()["bytes"] <= plan.bytes
    pieces = []
    g2 = smollm2.generate("Once upon a time", n=8, kv="f16", stream=pieces.append)
    assert "".join(pieces) == g2.text


def test_model_refusals(smollm2, tmp_path):
    with pytest.raises(OSError, match="nonexistent.gguf"):
        innerq.Model(tmp_path / "nonexistent.gguf")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 40)
    with pytest.raises(OSError, match="bad.gguf"):
        innerq.Model(bad)
    seq = smollm2.pool("f16", max_tokens=8).sequence()
    with pytest.raises(ValueError, match="tokens\\[1\\] = 99999999"):
        smollm2.extend(seq, [1, 99999999])
    with pytest.raises(ValueError, match="room left"):
        smollm2.extend(seq, list(range(9)))
    other = innerq.Pool("f16", n_layers=2, kv_heads=3, head_dim=64, max_tokens=8).sequence()
    with pytest.raises(ValueError, match="innerq_model_shape"):
        smollm2.extend(other, [1, 2])
    with pytest.raises(ValueError, match="1 tokens for 2 sequences"):
        smollm2.decode([seq, seq], [1])
    with pytest.raises(ValueError, match="n -1"):
        smollm2.generate("hi", n=-1)
    with pytest.raises(ValueError, match="one of the two"):
        smollm2.perplexity()
    with pytest.raises(ValueError, match="k=9"):
        smollm2.perplexity("text", kv="innerq:k=9")
