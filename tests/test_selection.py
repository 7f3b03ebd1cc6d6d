"""The learning-rate selection loop run three ways: the sequential grid, successive halving, and
every rate's head in one pass (frozen encoders). A rate trains the same weights whichever way."""

import math

import pytest
import torch
from torch import nn

from ctxenc.errors import UserError
from ctxenc.evaluators import FinetuneConfig
from ctxenc.evaluators.selection import train_and_select, train_heads_and_select

X = torch.randn(40, 4, generator=torch.Generator().manual_seed(1))
Y = X @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
FIT, VAL = torch.arange(30), torch.arange(30, 40)
# SGD at 1e5 overflows within an epoch: a rate that diverges beside the others.
GRID = dict(fit=FIT, val=VAL, lrs=(1e-3, 1e-2, 3e-2, 1e5), max_epochs=30, patience=2, batch_size=8,
            optimizer=torch.optim.SGD, seed=0)


def build():
    # Dropout draws from torch's global random state: each rate must keep its own stream.
    return nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.2), nn.Linear(16, 1))


def augmented(idx, gen):
    """A batch with random sign flips drawn from the run's generator (as the evaluators draw flips)."""
    sign = torch.where(torch.rand(len(idx), 1, generator=gen) < 0.5, -1.0, 1.0)
    return X[idx] * sign, Y[idx] * sign


def mse(model, batch):
    return ((model(batch[0]) - batch[1]) ** 2).mean()


def neg_val_mse(model, idx):
    return -((model(X[idx]) - Y[idx]) ** 2).mean().item()


def grid_loss(model, idx, gen):
    return mse(model, augmented(idx, gen))


def same(a, b):
    assert (a.lr, a.epochs, a.val_score, a.lr_drops, a.max_epochs) == (b.lr, b.epochs, b.val_score, b.lr_drops, b.max_epochs)
    assert math.isnan(a.lr_margin) and math.isnan(b.lr_margin) or a.lr_margin == b.lr_margin
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("decays", [0, 1])
def test_heads_in_one_pass_choose_what_the_grid_chooses_bit_for_bit(decays):
    grid = train_and_select(build, grid_loss, neg_val_mse, decays=decays, **GRID)
    heads = train_heads_and_select(build, augmented, mse, lambda models, idx: [neg_val_mse(m, idx) for m in models],
                                   decays=decays, **GRID)
    same(heads, grid)
    assert grid.lr in (1e-2, 3e-2) and grid.lr_margin > 0  # an interior rate, the diverging one lost


@pytest.mark.parametrize("first_rung, decays", [(2, 0), (None, 1), (12, 0)])
def test_heads_in_one_pass_halve_as_halving_does_bit_for_bit(first_rung, decays):
    halving = train_and_select(build, grid_loss, neg_val_mse, decays=decays, selection="halving", first_rung=first_rung,
                               **GRID)
    heads = train_heads_and_select(build, augmented, mse, lambda models, idx: [neg_val_mse(m, idx) for m in models],
                                   decays=decays, selection="halving", first_rung=first_rung, **GRID)
    same(heads, halving)  # the margin too: the cut heads' best scores are those at their cut
    if first_rung == 2:  # halving cuts the grid's 1e-2 here (see below): the heads do not train on as the grid's would
        assert heads.lr == 3e-2


def test_halving_heads_validate_as_halving_does_and_stop_when_cut():
    schedule = dict(lrs=(1e-4, 1e-3, 1e-2, 1e-1), max_epochs=10, patience=2, batch_size=4, optimizer=torch.optim.Adam,
                    seed=0)
    fit, val = torch.arange(8), torch.arange(2)
    for first_rung in (1, 2, 4):
        build_tagged, score = scripted(CURVES)
        halving = train_and_select(build_tagged, lambda m, idx, gen: m(torch.ones(len(idx), 1)).sum(), score, fit, val,
                                   selection="halving", first_rung=first_rung, **schedule)
        calls = score.calls
        build_tagged, score = scripted(CURVES)
        heads = train_heads_and_select(build_tagged, lambda idx, gen: idx, lambda m, idx: m(torch.ones(len(idx), 1)).sum(),
                                       lambda ms, idx: [score(m, idx) for m in ms], fit, val, selection="halving",
                                       first_rung=first_rung, **schedule)
        # Rung 4: 1e-2 stopped by itself after 3 validations (patience) and ranks with its 0.3.
        assert score.calls == calls == {1: [1, 6, 1, 2], 2: [2, 6, 2, 4], 4: [4, 6, 3, 7]}[first_rung]
        assert (heads.lr, heads.val_score, heads.epochs, heads.lr_margin) == (
            halving.lr, halving.val_score, halving.epochs, halving.lr_margin)


def test_heads_run_the_features_once_a_step_and_stop_updating_when_stopped():
    batches, updates = [], {}

    def counted_batch(idx, gen):
        batches.append(len(idx))
        return augmented(idx, gen)

    def counted_loss(model, batch):
        updates[id(model)] = updates.get(id(model), 0) + 1
        return mse(model, batch)

    chosen = train_heads_and_select(build, counted_batch, counted_loss, lambda ms, idx: [neg_val_mse(m, idx) for m in ms],
                                    **{**GRID, "lrs": (1e-3, 3e-2)})
    steps = sorted(updates.values())
    assert len(batches) == max(steps) == 3 * 30  # 3 steps an epoch, until the last head stopped (or the cap)
    assert steps[0] < steps[1] and steps[0] % 3 == 0  # the other head stopped earlier, at an epoch's end
    assert chosen.lr in (1e-3, 3e-2)


def test_halving_picks_the_grids_rate_with_the_grids_weights_when_it_survives():
    grid = train_and_select(build, grid_loss, neg_val_mse, **GRID)
    assert grid.lr == 1e-2 and grid.epochs == 27  # slow: ahead of 3e-2 only after its 11th validation
    # A first rung of 12 validations lets it show that: halving then trains the grid's weights,
    # paused and resumed between rungs.
    same(train_and_select(build, grid_loss, neg_val_mse, selection="halving", first_rung=12, **GRID), grid)
    # One of 2 cuts it at the first rung: halving's risk, which benchmarks/selection_agreement.py measures.
    assert train_and_select(build, grid_loss, neg_val_mse, selection="halving", first_rung=2, **GRID).lr == 3e-2


def scripted(curves):
    """build and score for `curves`: the k-th model built (the k-th rate) validates curves[k] in turn;
    score.calls[k] counts its validations."""
    models = []

    def build_tagged():
        models.append(nn.Linear(1, 1))
        return models[-1]

    def score(model, idx):
        k = next(i for i, m in enumerate(models) if m is model)
        score.calls[k] += 1
        return curves[k][score.calls[k] - 1]

    score.calls = [0] * len(curves)
    return build_tagged, score


CURVES = [[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95],  # a late bloomer: the grid's choice
          [0.5, 0.55, 0.56, 0.57, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5],
          [0.3, 0.2, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1],
          [0.4, 0.45, 0.5, 0.52, 0.53, 0.4, 0.4, 0.4, 0.4, 0.4]]


def test_halving_cuts_the_worse_half_each_rung_and_lets_the_last_rate_finish():
    schedule = dict(lrs=(1e-4, 1e-3, 1e-2, 1e-1), max_epochs=10, patience=2, batch_size=4, optimizer=torch.optim.Adam,
                    seed=0)
    loss = lambda m, idx, gen: m(torch.ones(len(idx), 1)).sum()  # noqa: E731
    fit, val = torch.arange(8), torch.arange(2)
    build_tagged, score = scripted(CURVES)
    grid = train_and_select(build_tagged, loss, score, fit, val, **schedule)
    assert grid.lr == 1e-4 and grid.val_score == 0.95 and score.calls == [10, 6, 3, 7]
    build_tagged, score = scripted(CURVES)
    halving = train_and_select(build_tagged, loss, score, fit, val, selection="halving", first_rung=2, **schedule)
    # Rung 1 (2 validations): 1e-3 (0.55) and 1e-1 (0.45) go on; rung 2 (4 in all): 1e-3 (0.57) is left,
    # and trains to its own stop (patience 2 after its 4th validation).
    assert score.calls == [2, 6, 2, 4]
    assert halving.lr == 1e-3 and halving.val_score == 0.57 and halving.epochs == 4
    assert halving.lr_margin == pytest.approx(0.57 - 0.52)  # the best other rate, as far as it trained


def test_an_unknown_selection_is_one_sentence():
    with pytest.raises(UserError, match="finetune's selection must be one of grid, halving, got 'random'"):
        FinetuneConfig(selection="random")
