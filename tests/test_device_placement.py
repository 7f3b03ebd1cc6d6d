"""Device bugs found without a GPU: every protocol runs end to end with its encoder on a stand-in accelerator.

The stand-in (`accelerator()`) puts tensors on the `meta` device, but each one carries real CPU
data inside (`OnDevice`, a tensor subclass that runs every op on its data). Like CUDA, an op
refuses to mix them with CPU tensors (0-dim CPU scalars, CPU indices and copies excepted), so a
probe, head, target, mask or metric input left on the CPU fails here as on a GPU, with CUDA's
message. Unlike the plain meta device, values are real: a whole protocol runs, its scores can be
compared with the CPU's, and the host's reads of device values (`.item()`, `bool()`, `.cpu()`:
each one waits for the GPU) can be counted.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from ctxenc.encoders import create_encoder
from ctxenc.evaluators import (PROTOCOLS, DetectionConfig, FinetuneConfig, InpaintingConfig, KNNConfig, LinearProbeConfig,
                               SegmentationConfig)
from ctxenc.pretext import PretrainData, build_pretext, pretext_spec
from tests.test_detection import squares as boxed_squares
from tests.test_evaluators import squares

aten = torch.ops.aten
DEVICE = torch.device("meta")
# Ops that CUDA runs with CPU tensors beside device ones: copies, and indexing with CPU indices.
MIXING_ALLOWED = {aten._to_copy.default, aten.copy_.default, aten.index.Tensor, aten.index_put_.default,
                  aten.index_put.default, aten._index_put_impl_.default}


class OnDevice(torch.Tensor):
    """A tensor on the stand-in device: `device` says meta, `data_` holds its CPU values."""

    @staticmethod
    def __new__(cls, data: torch.Tensor):
        out = torch.Tensor._make_wrapper_subclass(cls, data.shape, strides=data.stride(), storage_offset=data.storage_offset(),
                                                  dtype=data.dtype, layout=data.layout, device=DEVICE,
                                                  requires_grad=data.requires_grad)
        out.data_ = data
        return out

    def __repr__(self):
        return f"OnDevice({self.data_!r})"

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        return run(func, args, kwargs or {})


class Reads:
    count = 0  # device -> host reads so far


def _tensors(x, out: list) -> list:
    if isinstance(x, torch.Tensor):
        out.append(x)
    elif isinstance(x, (list, tuple)):
        for y in x:
            _tensors(y, out)
    return out


def _map(fn, x):
    return type(x)(_map(fn, y) for y in x) if isinstance(x, (list, tuple)) else fn(x)


def run(func, args, kwargs):
    """One aten op under the stand-in: checked for devices as CUDA checks them, run on the CPU data."""
    tensors = _tensors(args, _tensors(list(kwargs.values()), []))
    on_device = any(isinstance(t, OnDevice) for t in tensors)
    to_device = kwargs.get("device") is not None and torch.device(kwargs["device"]).type == DEVICE.type
    if not on_device and not to_device:
        return func(*args, **kwargs)  # all on the CPU
    if func is aten._to_copy.default and kwargs.get("device") is not None and not to_device:
        Reads.count += 1
        return func(args[0].data_, *args[1:], **kwargs)
    if func is aten._local_scalar_dense.default:
        Reads.count += 1
    if func not in MIXING_ALLOWED:
        for t in tensors:
            if not isinstance(t, OnDevice) and (t.dim() > 0 or t.device.type != "cpu"):
                raise RuntimeError(f"Expected all tensors to be on the same device, but found at least two devices, "
                                   f"{DEVICE} and {t.device}! ({func})")
    if to_device:
        kwargs = {**kwargs, "device": torch.device("cpu")}
    wrapper_of = {}

    def unwrap(x):
        if isinstance(x, OnDevice):
            wrapper_of[id(x.data_)] = x
            return x.data_
        return x

    out = func(*_map(unwrap, args), **{k: _map(unwrap, v) for k, v in kwargs.items()})
    # In-place ops return their input: hand back its wrapper, not a second one.
    return _map(lambda x: wrapper_of.get(id(x), OnDevice(x)) if type(x) is torch.Tensor else x, out)


class _FromData(TorchFunctionMode):
    """torch.tensor(data, device=...) makes its tensor below the dispatcher, where no mode sees the
    data: make it on the CPU, then copy it over (what CUDA's does)."""

    FUNCTIONS = {torch.tensor, torch.as_tensor, torch.asarray, torch.Tensor.new_tensor}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self.FUNCTIONS:
            device = kwargs.get("device", args[0].device if func is torch.Tensor.new_tensor else None)
            if device is not None and torch.device(device).type == DEVICE.type:
                return func(*args, **{**kwargs, "device": "cpu"}).to(DEVICE)
        return func(*args, **kwargs)


class _Dispatch(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return run(func, args, kwargs or {})


class accelerator:
    """`with accelerator():` tensors made or moved to `DEVICE` are `OnDevice` tensors."""

    def __enter__(self):
        self.modes = [_FromData(), _Dispatch()]
        for mode in self.modes:
            mode.__enter__()
        return self

    def __exit__(self, *exc):
        for mode in reversed(self.modes):
            mode.__exit__(*exc)


# ---------------------------------------------------------------- the stand-in is honest

def test_the_stand_in_refuses_what_cuda_refuses_and_computes_the_rest():
    x = torch.arange(6.0).view(2, 3)
    with accelerator():
        on = x.to(DEVICE)
        assert isinstance(on, OnDevice) and on.device == DEVICE
        assert torch.equal((on * 2 + torch.tensor(1.0)).cpu(), x * 2 + 1)  # a 0-dim CPU tensor is a scalar
        assert torch.equal(on[torch.tensor([1])].cpu(), x[1:])  # CPU indices
        assert torch.tensor([1, 2], device=DEVICE).sum().item() == 3
        with pytest.raises(RuntimeError, match="found at least two devices, meta and cpu"):
            on + x
        with pytest.raises(RuntimeError, match="found at least two devices, meta and cpu"):
            torch.nn.Linear(3, 1)(on)  # a layer left on the CPU
        before = Reads.count
        on.sum().item(), bool(on.max() > 0), on.cpu()
        assert Reads.count == before + 3


# ---------------------------------------------------------------- every protocol on the device

@dataclasses.dataclass
class Case:
    protocol: str
    config: object
    data: str  # a key of DATA
    trains: bool = True  # an optimizer steps on device parameters
    subject: str = "encoder"  # or "model": the whole pretext model (inpainting)
    channels: int = 1


CASES = {
    "linear_probe": Case("linear_probe", LinearProbeConfig(weight_decays=(1e-3,), max_iter=5), "multi", trains=False),
    "layerwise_probe": Case("linear_probe", LinearProbeConfig(stages=("conv1", "conv3"), weight_decays=(1e-3,), max_iter=5),
                            "single", trains=False),
    "knn": Case("knn", KNNConfig(k=3), "single", trains=False),
    "finetune": Case("finetune", FinetuneConfig(lrs=(1e-3, 1e-2), max_epochs=2, patience=1, min_steps=0, batch_size=8),
                     "multi"),
    "segmentation_frozen": Case("segmentation", SegmentationConfig(mode="frozen", lrs=(1e-2,), max_epochs=2, patience=1,
                                                                   batch_size=8), "maps"),
    "segmentation_finetune": Case("segmentation", SegmentationConfig(lrs=(1e-2,), max_epochs=1, patience=1, batch_size=8),
                                  "maps"),
    "detection": Case("detection", DetectionConfig(lrs=(1e-2,), max_epochs=1, patience=1, batch_size=4, roi_size=4,
                                                   rois_per_image=8, proposals=10), "boxes", channels=3),
    "detection_frozen": Case("detection", DetectionConfig(mode="frozen", lrs=(1e-2,), max_epochs=1, patience=1, batch_size=4,
                                                          roi_size=4, rois_per_image=8, proposals=10), "boxes", channels=3),
    "inpainting": Case("inpainting", InpaintingConfig(num_images=4, methods=("nn_features", "context_encoder")), "single",
                       trains=False, subject="model"),
}


def data(kind: str):
    images, labels, maps = squares(32)
    if kind == "boxes":
        return boxed_squares(12, size=32), boxed_squares(4, size=32, seed=1)
    targets = {"multi": labels, "single": labels[:, 0].long(), "maps": maps}[kind]
    return (images[:24], targets[:24]), (images[24:], targets[24:])


def subject(case: Case) -> torch.nn.Module:
    torch.manual_seed(0)
    encoder = create_encoder("small", in_channels=case.channels)
    if case.subject == "model":
        return build_pretext(pretext_spec({"name": "context_encoder", "mask": "center"}), encoder,
                             PretrainData(fill=torch.zeros(1))).eval()
    return encoder.eval()


def test_every_registered_protocol_has_a_case():
    assert {case.protocol for case in CASES.values()} == set(PROTOCOLS)


@pytest.mark.parametrize("name", CASES)
def test_a_protocol_runs_on_the_device_it_is_given(name):
    """Built and trained on the device (every parameter an optimizer steps is there), with the CPU's results."""
    case = CASES[name]
    run_protocol = PROTOCOLS[case.protocol].run
    train, test = data(case.data)
    on_cpu = run_protocol(subject(case), train, test, case.config)
    stepped = []  # the devices of the parameters of each optimizer step
    hook = register_optimizer_step_pre_hook(
        lambda opt, args, kwargs: stepped.append({p.device for group in opt.param_groups for p in group["params"]}))
    try:
        with accelerator():
            on_device = run_protocol(subject(case).to(DEVICE), train, test, case.config)
    finally:
        hook.remove()
    assert on_device.keys() == on_cpu.keys()
    assert all(on_device[k] == pytest.approx(on_cpu[k], rel=1e-4, abs=1e-5) for k in on_cpu), (on_device, on_cpu)
    if case.trains:
        assert stepped and all(devices == {DEVICE} for devices in stepped), stepped


@pytest.mark.parametrize("name", ["finetune", "segmentation_frozen", "segmentation_finetune"])
def test_a_training_step_reads_the_host_at_most_once(name):
    """Between two optimizer steps of an epoch, at most one read of a device value (each one waits for the GPU).

    Detection is left out: torchvision's Faster R-CNN itself reads the host for every image of a
    training batch (its degenerate-box check, and the sampling and NMS shapes on a real GPU).
    """
    case = CASES[name]
    reads_at = []
    hook = register_optimizer_step_pre_hook(lambda opt, args, kwargs: reads_at.append(Reads.count))
    config = dataclasses.replace(case.config, lrs=case.config.lrs[:1], max_epochs=1)  # one epoch: steps follow each other
    try:
        with accelerator():
            PROTOCOLS[case.protocol].run(subject(case).to(DEVICE), *data(case.data), config)
    finally:
        hook.remove()
    assert len(reads_at) >= 2
    assert max(b - a for a, b in zip(reads_at, reads_at[1:])) <= 1, reads_at
