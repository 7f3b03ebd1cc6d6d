import pytest
import torch

from ctxenc.encoders import create_encoder
from ctxenc.engine import TrainConfig, TrainingDiverged, train_loop
from ctxenc.masks import sample_masks
from ctxenc.pretext import PretrainData, build_pretext, pretext_spec
from ctxenc.pretext.layers import Discriminator


def make(encoder, channels=1, **options):
    spec = pretext_spec({"name": "context_encoder", **options})
    return build_pretext(spec, encoder, PretrainData(fill=torch.zeros(channels))), spec


def test_the_discriminator_judges_the_predicted_hole_with_its_border():
    torch.manual_seed(0)
    model, _ = make(create_encoder("small"), mask="center", overlap_px=1, adversarial=True)
    images = torch.rand(4, 1, 32, 32) * 2 - 1
    out = model.forward_loss(images, sample_masks("center", 4, 32))
    # 16 px hole + 1 px border on each side, cropped from the prediction (not the pasted context).
    assert out["fake_view"].shape == (4, 1, 18, 18) and out["real_view"].shape == (4, 1, 18, 18)
    assert torch.equal(out["fake_view"], out["prediction"][..., 7:25, 7:25])
    assert torch.equal(out["real_view"], images[..., 7:25, 7:25])
    assert model.discriminator(out["fake_view"]).shape == (4,)


def test_other_masks_show_the_discriminator_the_completed_image():
    torch.manual_seed(0)
    model, _ = make(create_encoder("small"), mask="random_block", adversarial=True)
    images = torch.rand(2, 1, 32, 32) * 2 - 1
    out = model.forward_loss(images, sample_masks("random_block", 2, 32, torch.Generator().manual_seed(0)))
    assert torch.equal(out["fake_view"], out["completed"]) and torch.equal(out["real_view"], images)


@pytest.mark.parametrize("size", [4, 7, 16, 18, 64, 72])
def test_discriminator_takes_any_size(size):
    assert Discriminator(3, size)(torch.zeros(2, 3, size, size)).shape == (2,)


def test_paper_inpainting_model_128_to_64_trains_one_step(tmp_path):
    """The paper's model: 128 px RGB in, 4000-d bottleneck, only the central 64 px decoded,
    a 4 px overlap inside it (56 px hidden), discriminator on the 64 px prediction."""
    torch.manual_seed(0)
    encoder = create_encoder("dcgan", in_channels=3, input_size=128, bottleneck=4000)
    model, spec = make(encoder, 3, mask="center", overlap_px=4, adversarial=True, predict="center")
    cfg = spec.cfg
    assert encoder.feature_shapes()["bottleneck"] == (4000, 1, 1)
    images = torch.rand(2, 3, 128, 128) * 2 - 1
    masks = sample_masks("center", 2, 128, **cfg.mask_options(128))
    assert masks[0, 0].sum() == 56 * 56
    out = model.forward_loss(images, masks)
    assert model.head(encoder(images)).shape == (2, 3, 64, 64)
    assert out["fake_view"].shape == (2, 3, 64, 64)
    assert torch.equal(out["prediction"][..., :32, :], images[..., :32, :])  # outside the centre: the input
    images = ((images + 1) * 127.5).round().to(torch.uint8)
    train_loop(model, images, None, TrainConfig(batch_size=2, max_steps=1), tmp_path, {"pretext": spec.as_dict()}, progress=False)
    assert (tmp_path / "log.jsonl").read_text().count("loss_adv") == 1


def test_predict_center_needs_the_center_mask():
    from ctxenc.errors import UserError

    with pytest.raises(UserError, match="predict: center needs"):
        pretext_spec({"name": "context_encoder", "mask": "random_region", "predict": "center"})


def test_a_non_finite_loss_stops_training_with_the_step(tmp_path):
    torch.manual_seed(0)
    model, spec = make(create_encoder("small"), mask="center", adversarial=True)
    real_forward_loss = model.forward_loss
    calls = []

    def poisoned(images, masks):  # the third step's reconstruction loss is infinite
        out = real_forward_loss(images, masks)
        calls.append(1)
        if len(calls) == 3:
            out["loss_rec"] = out["loss_rec"] * float("inf")
        return out

    model.forward_loss = poisoned
    images = torch.randint(0, 256, (16, 1, 32, 32), dtype=torch.uint8)
    # The loop reads losses on the host only at its first snapshot (step 4 of 8): it names step 2
    # there, without writing that snapshot.
    with pytest.raises(TrainingDiverged, match="the loss became inf at step 2"):
        train_loop(model, images, None, TrainConfig(batch_size=4, epochs=2, checkpoint_every=4), tmp_path,
                   {"pretext": spec.as_dict()}, progress=False)
    assert len(calls) == 4 and not (tmp_path / "last.pt").exists()
    assert all(torch.isfinite(p).all() for p in model.parameters())  # the bad step never reached the weights


def test_after_a_non_finite_loss_no_update_reaches_the_weights(tmp_path):
    torch.manual_seed(0)
    model, spec = make(create_encoder("small"), mask="center")
    real_forward_loss = model.forward_loss
    weights = []

    def poisoned(images, masks):  # only the second step's loss is infinite; later ones are fine
        weights.append(next(model.encoder.parameters()).detach().clone())
        out = real_forward_loss(images, masks)
        if len(weights) == 2:
            out["loss_rec"] = out["loss_rec"] * float("inf")
        return out

    model.forward_loss = poisoned
    images = torch.randint(0, 256, (16, 1, 32, 32), dtype=torch.uint8)
    with pytest.raises(TrainingDiverged, match="the loss became inf at step 1"):
        train_loop(model, images, None, TrainConfig(batch_size=4, max_steps=4, log_every=4), tmp_path,
                   {"pretext": spec.as_dict()}, progress=False)
    assert not torch.equal(weights[0], weights[1])  # the first step trained
    assert all(torch.equal(weights[1], w) for w in [*weights[2:], next(model.encoder.parameters())])


def snapshot_steps(tmp_path, monkeypatch, **train) -> list[int]:
    """Steps at which a 10-step run (4 steps per epoch, a log line every 3) writes last.pt."""
    import ctxenc.engine as engine

    steps = []
    monkeypatch.setattr(engine, "save_checkpoint", lambda path, payload: steps.append(payload["step"]))
    torch.manual_seed(0)
    model, spec = make(create_encoder("small"), mask="center")
    images = torch.randint(0, 256, (16, 1, 32, 32), dtype=torch.uint8)
    train_loop(model, images, None, TrainConfig(batch_size=4, steps=10, log_every=3, **train), tmp_path,
               {"pretext": spec.as_dict()}, progress=False)
    return steps


def test_snapshots_every_n_steps(tmp_path, monkeypatch):
    # Not at epoch ends: a 1-step epoch (--limit's tiny batches) would rewrite the snapshot every step.
    assert snapshot_steps(tmp_path, monkeypatch, checkpoint_every=5) == [5]
    assert snapshot_steps(tmp_path, monkeypatch, checkpoint_every=2) == [2, 4, 6, 8]


def test_snapshots_by_the_clock_replace_the_step_interval(tmp_path, monkeypatch):
    # 0 minutes: due at every log line (before the last step); a day: never within this run.
    assert snapshot_steps(tmp_path, monkeypatch, checkpoint_every=5, snapshot_minutes=0) == [3, 6, 9]
    assert snapshot_steps(tmp_path, monkeypatch, checkpoint_every=5, snapshot_minutes=24 * 60) == []


def test_snapshot_minutes_must_not_be_negative():
    from ctxenc.errors import UserError

    with pytest.raises(UserError, match="snapshot_minutes must be at least 0"):
        TrainConfig(snapshot_minutes=-1)


def rows_run(tmp_path, monkeypatch, train_step=None, **train):
    """A 16-image run (4 steps per epoch); -> the rows `RowReader` gathered, with the thread that did."""
    import threading

    import ctxenc.engine as engine

    gathered = []
    real_gather = engine.RowReader._gather
    monkeypatch.setattr(engine.RowReader, "_gather",
                        lambda self, rows: gathered.append((rows.tolist(), threading.current_thread().name)) or real_gather(self, rows))
    torch.manual_seed(0)
    model, spec = make(create_encoder("small"), mask="center")
    if train_step is not None:
        model.train_step = lambda batch, ctx: train_step(model, gathered, batch, ctx)
    images = torch.randint(0, 256, (16, 1, 36, 36), dtype=torch.uint8)
    train_loop(model, images, None, TrainConfig(batch_size=4, augment=True, **train), tmp_path,
               {"pretext": spec.as_dict()}, progress=False)
    return gathered


def test_each_steps_rows_are_read_once_in_a_thread_while_the_step_before_trains(tmp_path, monkeypatch):
    import time

    import ctxenc.engine as engine

    asked = []  # at each step: the rows it reads, and the ones it asks the thread to read next
    real_read = engine.RowReader.read
    monkeypatch.setattr(engine.RowReader, "read", lambda self, rows, following=None:
                        asked.append((rows.tolist(), None if following is None else following.tolist())) or real_read(self, rows, following))

    def waits_for_the_next_rows(model, gathered, batch, ctx):
        if asked[-1][1] is not None:  # the thread reads the next step's rows while this one runs
            start = time.perf_counter()
            while len(gathered) < ctx.step + 2:
                assert time.perf_counter() - start < 5, "the next step's rows were not read during this step"
                time.sleep(0.001)
        return type(model).train_step(model, batch, ctx)

    gathered = rows_run(tmp_path, monkeypatch, waits_for_the_next_rows, steps=6)
    assert [following for _, following in asked] == [asked[1][0], asked[2][0], asked[3][0], None, asked[5][0], None]
    assert [rows for rows, _ in gathered] == [rows for rows, _ in asked]  # each step's rows, once
    assert sorted(sum((rows for rows, _ in asked[:4]), [])) == list(range(16))  # an epoch reads every image
    assert {thread for _, thread in gathered} == {"ctxenc-rows_0"}


def test_a_step_that_raises_leaves_no_reading_thread_behind(tmp_path, monkeypatch):
    import threading
    import time

    import ctxenc.engine as engine

    real_gather = engine.RowReader._gather
    monkeypatch.setattr(engine.RowReader, "_gather", lambda self, rows: time.sleep(0.3) or real_gather(self, rows))

    def interrupted(model, gathered, batch, ctx):
        if ctx.step == 1:  # while the thread reads step 2's rows
            raise KeyboardInterrupt
        return type(model).train_step(model, batch, ctx)

    with pytest.raises(KeyboardInterrupt):
        rows_run(tmp_path, monkeypatch, interrupted, steps=4)
    assert not [t for t in threading.enumerate() if t.name.startswith("ctxenc-rows")]


def test_on_cuda_the_thread_reads_rows_into_pinned_memory_of_the_training_device(monkeypatch):
    import threading

    from ctxenc.engine import RowReader

    devices, pinned = [], []
    real_empty = torch.empty
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: devices.append((device, threading.current_thread().name)))
    monkeypatch.setattr(torch, "empty", lambda *shape, pin_memory=False, **kw: pinned.append(pin_memory) or real_empty(*shape, **kw))
    images, labels = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8), torch.arange(5)
    with RowReader(images, labels, torch.device("cuda", 1)) as reader:
        rows = reader.read(torch.tensor([3, 0]))
    assert devices == [(torch.device("cuda", 1), "ctxenc-rows_0")] and pinned == [True, True]
    assert torch.equal(rows["images"], images[[3, 0]]) and torch.equal(rows["labels"], labels[[3, 0]])
