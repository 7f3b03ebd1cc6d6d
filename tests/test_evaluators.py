import torch

from ctxenc.encoders import create_encoder
from ctxenc.evaluators import KNNConfig, LinearProbeConfig, knn, linear_probe
from ctxenc.evaluators.knn import knn_classifier
from ctxenc.evaluators.linear_probe import fit_logistic


def test_knn_classifier_known_answer():
    train = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    labels = torch.tensor([0, 0, 1, 1])
    test = torch.tensor([[5.0, 0.2], [0.3, 4.0]])  # cosine: scale does not matter
    assert knn_classifier(train, labels, test, k=2, temperature=0.07, num_classes=2).tolist() == [0, 1]


def test_logistic_regression_separates_separable_data():
    torch.manual_seed(0)
    x = torch.randn(200, 5)
    y = (x[:, 0] > 0).long()
    head = fit_logistic(x, y, 2, 1e-4, 50)
    assert ((head(x).argmax(1) == y).float().mean()) > 0.97


def test_probes_run_on_a_frozen_encoder():
    torch.manual_seed(0)
    encoder = create_encoder("small").eval()
    labels = torch.arange(120) % 3
    images = torch.full((120, 1, 32, 32), -1.0)
    for k in range(3):  # class k: a bright square in one of three places
        images[labels == k, :, 4 + 8 * k : 10 + 8 * k, 4 + 8 * k : 10 + 8 * k] = 1.0
    images += 0.1 * torch.randn_like(images)
    train, test = (images[:90], labels[:90]), (images[90:], labels[90:])
    result = linear_probe(encoder, train, test, LinearProbeConfig(weight_decays=(1e-4, 1e-2), max_iter=30))
    assert set(result) == {"accuracy", "val_accuracy", "weight_decay"}
    assert result["accuracy"] > 0.9 and result["weight_decay"] in (1e-4, 1e-2)
    assert knn(encoder, train, test, KNNConfig(k=5))["accuracy"] > 0.9
