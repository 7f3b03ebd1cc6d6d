"""Our linear probe's solver (torch full-batch L-BFGS) beside scikit-learn's LogisticRegression(lbfgs).

    OMP_NUM_THREADS=1 python benchmarks/linear_probe_vs_sklearn.py [--data-root DIR] [--train 10000]

Both fit the same standardised features with the same L2 penalty: frozen features (conv3,
pooled 2x2) of a randomly initialised `small` encoder on Fashion-MNIST when `--data-root` (or
$CTXENC_DATA) holds it, else random class-dependent features. scikit-learn minimises
C * sum of losses + ||W||^2 / 2, ours mean loss + weight_decay / 2 * ||W||^2, so C = 1 / (N * weight_decay).
Printed: test accuracy and fit seconds (wall) of each, per penalty.
"""

from __future__ import annotations

import argparse
import time

import torch
from sklearn.linear_model import LogisticRegression

from ctxenc.data import load_dataset, resolve_root
from ctxenc.data.transforms import to_model_input
from ctxenc.encoders import create_encoder
from ctxenc.evaluators.features import extract_features, recalibrated
from ctxenc.evaluators.linear_probe import fit_logistic


def features(args) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, str]:
    root = resolve_root(args.data_root)
    if root is not None:
        train = load_dataset("fashion_mnist", "train", root, limit=args.train)
        test = load_dataset("fashion_mnist", "test", root, limit=args.test)
        torch.manual_seed(0)
        encoder = recalibrated(create_encoder("small").eval(), to_model_input(train.images, 32))
        x_train = extract_features(encoder, to_model_input(train.images, 32), grid=2)
        x_test = extract_features(encoder, to_model_input(test.images, 32), grid=2)
        return x_train, train.labels, x_test, test.labels, "frozen random-init small encoder on Fashion-MNIST"
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(10, 512, generator=gen)
    y = torch.randint(0, 10, (args.train + args.test,), generator=gen)
    x = 0.05 * centres[y] + torch.randn(len(y), 512, generator=gen)
    return x[: args.train], y[: args.train], x[args.train :], y[args.train :], "random class-dependent features"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--train", type=int, default=10_000)
    parser.add_argument("--test", type=int, default=2_000)
    parser.add_argument("--max-iter", type=int, default=100, help="L-BFGS iterations of both (ours: eval/linear_probe.yaml)")
    args = parser.parse_args()

    x_train, y_train, x_test, y_test, what = features(args)
    mean, std = x_train.mean(0), x_train.std(0).clamp_min(1e-6)
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    print(f"{what}: {len(x_train)} train / {len(x_test)} test, {x_train.shape[1]} features, "
          f"{torch.get_num_threads()} threads, max_iter {args.max_iter}")
    for wd in (1e-4, 1e-3, 1e-2):
        tic = time.perf_counter()
        head = fit_logistic(x_train, y_train, 10, wd, args.max_iter)
        ours = time.perf_counter() - tic
        with torch.no_grad():
            acc_ours = (head(x_test).argmax(1) == y_test).float().mean().item()
        tic = time.perf_counter()
        sk = LogisticRegression(C=1 / (len(x_train) * wd), solver="lbfgs", max_iter=args.max_iter)
        sk.fit(x_train.numpy(), y_train.numpy())
        theirs = time.perf_counter() - tic
        acc_sk = float((sk.predict(x_test.numpy()) == y_test.numpy()).mean())
        print(f"weight_decay {wd:g}: torch L-BFGS {acc_ours:.4f} in {ours:5.2f} s | "
              f"sklearn lbfgs {acc_sk:.4f} in {theirs:5.2f} s")


if __name__ == "__main__":
    main()
