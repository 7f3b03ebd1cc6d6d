"""Pretraining off the CPU, without a GPU: every pretext's training step and the engine's loop on the
`meta` device, and the engine's host syncs counted on the CPU.

A meta tensor has a shape, a dtype and a device but no data. Mixing it with a CPU tensor raises
("Tensor on device cpu is not on the expected device meta"), exactly where a CUDA run would raise
for a tensor left on the CPU; and reading a value on the host (`.item()`, `if tensor:`) raises too,
where on a GPU it would stall the step until the device caught up.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import ctxenc.engine as engine
from ctxenc.device import grad_scaler
from ctxenc.encoders import create_encoder
from ctxenc.engine import TrainConfig, train_loop
from ctxenc.pretext import PRETEXTS, PretrainData, StepContext, build_pretext, pretext_spec

META = torch.device("meta")
TRAINED = sorted(name for name, cls in PRETEXTS.items() if cls.trains)
# Each pretext with the options that add the most to its step (a GAN's second optimizer, a mask with a ring).
OPTIONS = {"context_encoder": {"mask": "center", "adversarial": True}}


@pytest.fixture(autouse=True)
def fused_adam_on_meta(monkeypatch):
    """torch has a meta kernel for fused Adam (torch.compile traces it) but leaves meta off the list
    of devices the optimizer's constructor accepts: add it, so the pretexts' own optimizers run."""
    import torch.optim.optimizer as optimizer

    supported = optimizer._get_fused_kernels_supported_devices()
    monkeypatch.setattr(optimizer, "_get_fused_kernels_supported_devices", lambda: [*supported, "meta"])


def build(name: str, channels: int = 3):
    """`name` around the small encoder at 32 px, on the CPU, with 4 single-label classes."""
    torch.manual_seed(0)
    encoder = create_encoder("small", in_channels=channels, input_size=32)
    spec = pretext_spec({"name": name, **OPTIONS.get(name, {})})
    return build_pretext(spec, encoder, PretrainData(fill=torch.zeros(channels), num_classes=4, task="single_label")), spec


def on_meta(module: torch.nn.Module) -> bool:
    return all(t.device == META for t in [*module.parameters(), *module.buffers()])


@pytest.mark.parametrize("name", TRAINED)
def test_every_pretext_steps_on_the_device_it_is_given(name):
    model, _ = build(name)
    model.to(META)
    optimizers = model.optimizers(TrainConfig(batch_size=4))
    ctx = StepContext(optimizers, META, False, torch.Generator().manual_seed(0), 4, grad_scaler(META, False), Path("last.pt"))
    batch = {"images": torch.zeros(4, 3, 32, 32, device=META), "labels": torch.zeros(4, dtype=torch.int64, device=META)}
    for step in range(2):  # the second step runs on optimizer state made by the first
        ctx.step = step
        metrics = model.train_step(batch, ctx)
    assert metrics and all(v.device == META and v.dim() == 0 for v in metrics.values())
    assert on_meta(model)
    for opt in optimizers.values():
        assert opt.state and all(t.device == META for s in opt.state.values() for t in s.values())


class HostReads(TorchDispatchMode):
    """Counts the reads of a tensor's value on the host (`.item()`, `bool(tensor)`, `float(tensor)`):
    on CUDA each one waits for every queued kernel to finish."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in (torch.ops.aten._local_scalar_dense.default, torch.ops.aten.is_nonzero.default):
            self.count += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("name", TRAINED)
def test_the_loop_reads_values_on_the_host_at_most_once_per_log_line(name, tmp_path):
    model, spec = build(name)
    images = torch.randint(0, 256, (24, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 4, (24,))
    cfg = TrainConfig(batch_size=2, max_steps=12, log_every=4, checkpoint_every=1000, augment=True)
    with HostReads() as reads:
        train_loop(model, images, labels, cfg, tmp_path, {"pretext": spec.as_dict()}, progress=False)
    assert (tmp_path / "log.jsonl").read_text().count("\n") == 3
    assert reads.count <= 3


class BlockingCopies(TorchDispatchMode):
    """Records each copy from the CPU to the meta device made without non_blocking: on CUDA such a
    copy waits for every queued kernel first."""

    def __init__(self):
        super().__init__()
        self.copies = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.ops.aten._to_copy.default and args[0].device.type == "cpu" and kwargs.get("device") == META:
            blocking = not kwargs.get("non_blocking", False)
        elif func is torch.ops.aten.copy_.default and args[0].device == META and args[1].device.type == "cpu":
            blocking = not (args[2] if len(args) > 2 else kwargs.get("non_blocking", False))
        else:
            blocking = False
        if blocking:
            self.copies.append(tuple(args[0].shape if func is torch.ops.aten._to_copy.default else args[1].shape))
        return func(*args, **kwargs)


@pytest.mark.parametrize("name", TRAINED)
def test_the_loop_runs_on_the_device_between_its_host_reads(name, tmp_path, monkeypatch):
    """The whole loop on meta (batches copied and augmented there) except its one host read per
    log line, which returns zeros: meta tensors hold no values to read. Copies onto the device do
    not wait for it."""
    reads = []

    def host_values(values: torch.Tensor) -> list[float]:
        assert values.device == META
        reads.append(len(values))
        return [0.0] * len(values)

    monkeypatch.setattr(engine, "host_values", host_values, raising=False)
    model, spec = build(name)
    model.to(META)
    images = torch.randint(0, 256, (16, 3, 36, 36), dtype=torch.uint8)  # stored larger than the input: crops
    labels = torch.randint(0, 4, (16,))
    cfg = TrainConfig(batch_size=4, max_steps=4, log_every=2, checkpoint_every=1000, augment=True)
    with BlockingCopies() as copies:
        train_loop(model, images, labels, cfg, tmp_path, {"pretext": spec.as_dict()}, progress=False, device=META)
    assert len(reads) == 2 and on_meta(model)
    assert copies.copies == []


@pytest.mark.filterwarnings("ignore:.*copying from a non-meta parameter")  # meta holds no values to copy into
def test_a_snapshot_written_on_the_cpu_resumes_on_another_device(tmp_path, monkeypatch):
    """last.pt holds CPU tensors; resuming copies weights, optimizer moments and loss sums onto
    the model's device."""
    from dataclasses import asdict

    from ctxenc.checkpoint import load_checkpoint

    model, spec = build("context_encoder")
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    cfg = TrainConfig(batch_size=4, max_steps=3, log_every=100, checkpoint_every=2)
    meta = {"encoder": model.encoder.config, "pretext": spec.as_dict(), "train": asdict(cfg), "data": {}}
    train_loop(model, images, None, cfg, tmp_path, meta, progress=False)
    snapshot = load_checkpoint(tmp_path / "last.pt")
    assert snapshot["step"] == 2 and list(snapshot["sums"]) == ["loss_rec", "loss_d", "loss_adv"]

    monkeypatch.setattr(engine, "host_values", lambda values: [0.0] * len(values), raising=False)
    model, _ = build("context_encoder")
    model.to(META)
    loaded = []
    real_load = torch.optim.Adam.load_state_dict
    monkeypatch.setattr(torch.optim.Adam, "load_state_dict", lambda opt, state: loaded.append(opt) or real_load(opt, state))
    train_loop(model, images, None, cfg, tmp_path, meta, progress=False, resume=True, device=META)
    assert on_meta(model) and len(loaded) == 2
    for opt in loaded:
        assert all(t.device == META for s in opt.state.values() for t in s.values())
