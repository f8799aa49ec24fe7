"""What the config knows of each dataset before reading it: its name, what its `data.root`
holds, which keys apply to it, and one example's (C, H, W) for the memory estimate. The
readers are in bnexp.data (one module per dataset; docs/datasets.md)."""

from __future__ import annotations

from typing import Literal

DatasetName = Literal[
    "digits",
    "catvnoncat",
    "cifar10",
    "npz",
    "cifar100",
    "mnist",
    "fashion_mnist",
    "svhn",
    "imagefolder",
]

# torchvision's datasets, read here from torchvision's files (bnexp/data/{cifar100,mnist,svhn}.py)
TORCHVISION_SETS = ("cifar100", "mnist", "fashion_mnist", "svhn")
# dataset -> what its data.root holds (the datasets read from a folder)
ROOT_HOLDS = {
    "catvnoncat": "train_catvnoncat.h5 and test_catvnoncat.h5",
    "cifar10": "cifar-10-batches-py/",
    "cifar100": "cifar-100-python/",
    "mnist": "MNIST/raw/",
    "fashion_mnist": "FashionMNIST/raw/",
    "svhn": "train_32x32.mat and test_32x32.mat",
    "imagefolder": "train/<class>/ and test/<class>/ image folders",
}
# the datasets with the subset keys (classes, binary, train_per_class, test_per_class)
SUBSET_SETS = ("cifar10", "npz", *TORCHVISION_SETS, "imagefolder")
# the datasets data.download fetches (with torchvision's downloaders)
DOWNLOADS = ("cifar10", *TORCHVISION_SETS)

# one example's (C, H, W), for the memory estimate (npz, imagefolder: unknown, taken as 1 value)
INPUT_SHAPES = {
    "digits": (1, 8, 8),
    "catvnoncat": (3, 64, 64),
    "cifar10": (3, 32, 32),
    "cifar100": (3, 32, 32),
    "svhn": (3, 32, 32),
    "mnist": (1, 28, 28),
    "fashion_mnist": (1, 28, 28),
}
