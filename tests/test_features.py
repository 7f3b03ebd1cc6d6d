"""batched: outputs written into one preallocated tensor per output, the same bits as concatenating the batches."""

import torch

from ctxenc.evaluators.features import batched, bfloat16_inference


def test_batched_fills_the_outputs_as_concatenation_would():
    torch.manual_seed(0)
    x = torch.randn(103, 8)
    layer = torch.nn.Linear(8, 5)
    fn = lambda t: {"out": layer(t).relu(), "index": t[:, :1].long()}  # noqa: E731 (a float and an integer output)
    for precision in (False, True):
        with bfloat16_inference(precision):
            out = batched(fn, x, batch_size=10)  # an uneven last batch
            with torch.autocast("cpu", torch.bfloat16, enabled=precision), torch.no_grad():
                parts = [fn(x[i : i + 10]) for i in range(0, 103, 10)]
        for key, dtype in (("out", torch.float32), ("index", torch.int64)):  # bfloat16 comes back float32
            assert out[key].dtype == dtype
            assert torch.equal(out[key], torch.cat([p[key].to(dtype) for p in parts]))
        with bfloat16_inference(precision):
            assert torch.equal(batched(lambda t: fn(t)["out"], x, batch_size=10), out["out"])


def test_batched_keeps_nothing_when_the_function_returns_none():
    seen = []
    assert batched(lambda t: seen.append(len(t)), torch.zeros(25, 2), batch_size=10) is None
    assert seen == [10, 10, 5]
