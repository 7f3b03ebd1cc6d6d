"""knn_classifier: normalised in place and chunked by the similarities' size, the same votes as the plain computation."""

import importlib

import torch
import torch.nn.functional as F

from ctxenc.evaluators.knn import knn_classifier

knn_module = importlib.import_module("ctxenc.evaluators.knn")  # ctxenc.evaluators.knn is the function


def test_knn_classifier_in_small_chunks_votes_as_the_whole_similarity_matrix(monkeypatch):
    gen = torch.Generator().manual_seed(0)
    train, test = torch.randn(40, 6, generator=gen), torch.randn(23, 6, generator=gen)
    labels = torch.randint(0, 4, (40,), generator=gen)
    sims = F.normalize(test, dim=1) @ F.normalize(train, dim=1).T  # (23, 40), all at once
    top_sims, top_idx = sims.topk(5, dim=1)
    expected = torch.zeros(23, 4).scatter_add_(1, labels[top_idx], (top_sims / 0.1).exp()).argmax(1)

    monkeypatch.setattr(knn_module, "SIMILARITY_VALUES", 40 * 3)  # chunks of 3 test rows
    assert torch.equal(knn_classifier(train, labels, test, k=5, temperature=0.1, num_classes=4), expected)
    # The features were normalised in place: no normalised copy of either split.
    torch.testing.assert_close(train.norm(dim=1), torch.ones(40))
    torch.testing.assert_close(test.norm(dim=1), torch.ones(23))
