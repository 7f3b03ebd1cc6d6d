"""Human names for figures: methods, protocols, metrics and datasets as a paper would print them.

A suite names any of them in its report section, keyed by the name records use:

    report:
      display:
        context_encoder/random_region/l2: Context encoder (random region)
        linear_probe: Linear probe
        accuracy: accuracy (%)

A key it does not name gets a default made from the internal name:
"context_encoder/random_region/l2" -> "Context encoder (random region, L2)", "linear_probe" ->
"Linear probe", "map@10%" -> "mAP (10% labels)", "fashion_mnist" -> "Fashion-MNIST".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ctxenc.results.records import split_metric

PRETEXTS = {"supervised": "Supervised", "random": "Random init", "autoencoder": "Autoencoder",
            "context_encoder": "Context encoder", "context_prediction": "Context prediction",
            "rotation": "Rotation", "colorization": "Colorization"}
PROTOCOLS = {"knn": "k-NN", "linear_probe": "Linear probe", "finetune": "Fine-tuning", "segmentation": "Segmentation",
             "detection": "Detection", "inpainting": "Inpainting", "layerwise_probe": "Layer-wise probe",
             "segmentation_finetune": "Segmentation (fine-tuned)", "segmentation_frozen": "Segmentation (frozen)"}
DATASETS = {"fashion_mnist": "Fashion-MNIST", "fashion_scenes": "Fashion-MNIST scenes", "mnist": "MNIST",
            "cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "stl10": "STL-10", "voc2007": "PASCAL VOC 2007",
            "voc2012_seg": "PASCAL VOC 2012", "imagefolder": "image folder"}
# Words that are not spelled as their lower-case key: acronyms and proper names.
WORDS = {"l1": "L1", "l2": "L2", "map": "mAP", "miou": "mIoU", "iou": "IoU", "ap": "AP", "auc": "AUC", "coco": "COCO",
         "psnr": "PSNR", "ssim": "SSIM", "knn": "k-NN", "pytorch": "PyTorch", "hog": "HOG", "nn": "NN"}


def words(name: str) -> str:
    """'pixel_accuracy' -> 'pixel accuracy', 'map_coco' -> 'mAP COCO', 'l2+adv' -> 'L2+adv'."""
    return " ".join("+".join(WORDS.get(part, part) for part in word.split("+")) for word in name.split("_"))


def capitalized(text: str) -> str:
    """The first letter upper-case, the rest as given (so 'mAP' inside stays 'mAP')."""
    return text[:1].upper() + text[1:]


@dataclass(frozen=True)
class Names:
    """display: internal name -> the name a figure prints; every lookup tries it first."""

    display: dict = field(default_factory=dict)

    def method(self, method: str) -> str:
        """'context_encoder/random_region/l2/loss_region=image' -> 'Context encoder (random region, L2,
        loss region: image)'."""
        if method in self.display:
            return self.display[method]
        pretext, *options = method.split("/")
        head = PRETEXTS.get(pretext, capitalized(words(pretext)))
        parts = [": ".join(words(side) for side in option.split("=", 1)) for option in options]
        return f"{head} ({', '.join(parts)})" if parts else head

    def protocol(self, protocol: str) -> str:
        return self.display.get(protocol) or PROTOCOLS.get(protocol) or capitalized(words(protocol))

    def metric(self, metric: str) -> str:
        """'map@10%' -> 'mAP (10% labels)', 'map@conv3' -> 'mAP (conv3)', 'accuracy' -> 'accuracy'."""
        if metric in self.display:
            return self.display[metric]
        base, qualifier = split_metric(metric)
        name = self.display.get(base) or words(base)
        if qualifier is None:
            return name
        return f"{name} ({qualifier} labels)" if qualifier.endswith("%") else f"{name} ({qualifier})"

    def axis(self, metric: str) -> str:
        """The value axis of a metric scaled to %: 'mAP (%)'; a display name that already says % is kept."""
        name = self.display.get(metric) or self.display.get(split_metric(metric)[0]) or words(split_metric(metric)[0])
        return name if "%" in name else f"{name} (%)"

    def dataset(self, dataset: str) -> str:
        return self.display.get(dataset) or DATASETS.get(dataset) or words(dataset)

    def column(self, protocol: str, metric: str) -> str:
        """A column without a title of its own: 'Linear probe: accuracy'."""
        return self.display.get(f"{protocol} {metric}") or f"{self.protocol(protocol)}: {self.metric(metric)}"

    def title(self, title: str) -> str:
        """A report column's title as the suite wrote it, or its display name."""
        return self.display.get(title, title)


def wrap(label: str, width: int) -> str:
    """`label` on lines of at most `width` characters where it can be, broken only at spaces or
    after a '/': a word longer than `width` keeps a line of its own, whole."""
    chunks = re.findall(r"[^\s/]+/?\s*|/\s*|\s+", label)  # each word with its trailing separator
    lines, line = [], ""
    for chunk in chunks:
        if line.strip() and len(line) + len(chunk.rstrip()) > width:
            lines.append(line.rstrip())
            line = chunk.lstrip()
        else:
            line += chunk
    return "\n".join([*lines, line.rstrip()])
