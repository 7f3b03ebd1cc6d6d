"""probe_stage on hand-made features: the same fits and scores as the plain computation (copies of
the feature matrix for each part), from one copy of each split's features."""

import importlib

import pytest
import torch

from ctxenc.evaluators.linear_probe import LinearProbeConfig, fit_logistic, probe_stage, score

probe_module = importlib.import_module("ctxenc.evaluators.linear_probe")  # ctxenc.evaluators.linear_probe is the function


def features(n: int, d: int, multi_label: bool, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, d) features, off-centre and of unequal scales, and labels (n,) of 3 classes or (n, 3)
    multi-hot with some -1 ("difficult") entries, tied to the first 3 features but not separable."""
    gen = torch.Generator().manual_seed(seed)
    scale = torch.linspace(0.5, 20, d)
    x = torch.randn(n, d, generator=gen) * scale + torch.linspace(-5, 5, d)
    signal = x[:, :3] / scale[:3] + torch.randn(n, 3, generator=gen)
    if multi_label:
        y = (signal > 0).float()
        y[torch.rand(n, 3, generator=gen) < 0.05] = -1
        return x, y
    return x, signal.argmax(1)


def reference(x_train, y_train, x_test, y_test, cfg) -> tuple[dict, list]:
    """The probe computed plainly, a new matrix for each part -> (its result, the (x, y) of each
    fit and score in turn)."""
    n_val = max(1, int(cfg.val_fraction * len(x_train)))
    order = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(cfg.seed))
    val, fit = order[:n_val], order[n_val:]
    mean, std = x_train[fit].mean(0), x_train[fit].std(0).clamp_min(1e-6)
    calls, scores = [], {}
    for wd in cfg.weight_decays:
        calls += [((x_train[fit] - mean) / std, y_train[fit]), ((x_train[val] - mean) / std, y_train[val])]
        scores[wd] = score(fit_logistic(*calls[-2], 3, wd, cfg.max_iter), *calls[-1])
    best = max(cfg.weight_decays, key=lambda wd: (scores[wd], wd))
    mean, std = x_train.mean(0), x_train.std(0).clamp_min(1e-6)
    calls += [((x_train - mean) / std, y_train), ((x_test - mean) / std, y_test)]
    metric = "map" if y_train.dim() == 2 else "accuracy"
    head = fit_logistic(*calls[-2], 3, best, cfg.max_iter)
    return {metric: score(head, *calls[-1]), f"val_{metric}": scores[best], "weight_decay": best}, calls


def run_probe(monkeypatch, x_train, y_train, x_test, y_test, cfg) -> tuple[dict, list, list]:
    """probe_stage on these features, standing in for an encoder's -> (its result; the (x, y, x as
    handed over) of each fit and score in turn, x and y cloned; the feature matrices it was handed)."""
    extracted, calls = [], []

    def extract(encoder, images, stage, grid):
        extracted.append(images.clone())  # a matrix of its own, as extract_features returns
        return extracted[-1]

    def recorded(fn, x_at):
        def call(*args):
            x, y = args[x_at], args[x_at + 1]
            calls.append((x.clone(), y.clone(), x))  # x itself kept: its memory cannot be reused for another
            return fn(*args)
        return call

    monkeypatch.setattr(probe_module, "extract_features", extract)
    monkeypatch.setattr(probe_module, "fit_logistic", recorded(fit_logistic, 0))
    monkeypatch.setattr(probe_module, "score", recorded(score, 1))
    result = probe_stage(torch.nn.Linear(1, 1), (x_train, y_train), (x_test, y_test), None, cfg)
    return result, calls, extracted


def by_rows(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows sorted by the first feature (distinct here; standardising keeps their order)."""
    order = x[:, 0].argsort()
    return x[order], y[order]


@pytest.mark.parametrize("multi_label", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_probe_fits_and_scores_the_parts_of_the_plain_computation(monkeypatch, multi_label, seed):
    x, y = features(260, 12, multi_label, seed)
    cfg = LinearProbeConfig(weight_decays=(1e-4, 1e-1, 3.0), val_fraction=0.25, max_iter=30, seed=seed)
    train, test = (x[:200], y[:200]), (x[200:], y[200:])
    expected, expected_calls = reference(*train, *test, cfg)
    result, calls, _ = run_probe(monkeypatch, *train, *test, cfg)

    assert len(calls) == len(expected_calls) == 2 * len(cfg.weight_decays) + 2
    # Choosing the penalty: the same fitting and validation rows, in the same order, standardised
    # with the fitting part's statistics, to the bit; so the same validation scores and penalty.
    for (got_x, got_y, _), (want_x, want_y) in zip(calls[:-2], expected_calls[:-2]):
        assert torch.equal(got_x, want_x) and torch.equal(got_y, want_y)
    assert result["weight_decay"] == expected["weight_decay"]
    metric = "map" if multi_label else "accuracy"
    assert result[f"val_{metric}"] == expected[f"val_{metric}"]
    # The final fit: all of train standardised with its own statistics (in the seeded order, from
    # values standardised twice: equal up to rounding), the test set as the reference's.
    (got_x, got_y), (want_x, want_y) = by_rows(*calls[-2][:2]), by_rows(*expected_calls[-2])
    assert torch.equal(got_y, want_y)
    torch.testing.assert_close(got_x, want_x, rtol=0, atol=1e-5)
    assert torch.equal(calls[-1][0], expected_calls[-1][0]) and torch.equal(calls[-1][1], expected_calls[-1][1])
    assert result[metric] == pytest.approx(expected[metric], abs=0.02)  # the fit may stop a rounding apart


def test_probe_holds_one_matrix_per_split_and_leaves_the_labels_alone(monkeypatch):
    x, y = features(120, 6, False, 0)
    labels = y[:100].clone()
    _, calls, (_, x_test) = run_probe(monkeypatch, x[:100], y[:100], x[100:], y[100:],
                                      LinearProbeConfig(weight_decays=(1e-3, 1e-1), max_iter=5))
    # Every fit and validation works in one matrix of train features (views of it, standardised in
    # place), the test score in the test features handed over: no N x D copy for each part.
    storages = [x.untyped_storage().data_ptr() for _, _, x in calls]
    assert storages == [storages[0]] * 5 + [x_test.untyped_storage().data_ptr()]
    assert torch.equal(y[:100], labels)  # the caller's labels keep their order
