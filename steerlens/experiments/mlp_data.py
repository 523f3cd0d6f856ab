"""Data and networks of the ``mlp-aux`` experiment (Cloud et al. 2025, "Subliminal learning",
the MNIST auxiliary-logit MLP), offline.

- data: scikit-learn's bundled 8×8 digits (1797 images, the small default) or Fashion-MNIST
  from Debian's ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``, 28×28);
  pixels scaled to [-1, 1];
- the network: an MLP d_in → 256 → 256 → (10 class + 3 auxiliary logits); ``layers.0`` and
  ``layers.1`` (each Linear + ReLU) are the steerlens sites;
- training: Adam, the teacher on the class logits only (cross-entropy), a student on the
  auxiliary logits only of uniform noise images in [-1, 1] (the teacher's aux logits as
  targets: ``mse`` on the logits, or ``kl`` between their softmaxes).
"""

from __future__ import annotations

import copy
import gzip
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

from steerlens.experiments.mlp_records import MlpAuxData
from steerlens.measures.stats import kl_per_row

__all__ = [
    "FASHION_DIR",
    "MLP",
    "Data",
    "accuracy",
    "distill_aux",
    "load_data",
    "make_noise",
    "snapshot_student",
    "tracked_epochs",
    "train_teacher",
]

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
N_CLASSES = 10


@dataclass(frozen=True)
class Data:
    """Train and test images (n, d_in) in [-1, 1] with their labels, and where they came from."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    source: str

    @property
    def d_in(self) -> int:
        return int(self.x_train.shape[1])

    def describe(self) -> MlpAuxData:
        """Name, source, input width and split sizes (the ``data`` block of results.json)."""
        return MlpAuxData(
            name=self.name,
            source=self.source,
            d_in=self.d_in,
            n_train=len(self.x_train),
            n_test=len(self.x_test),
        )


def _idx(path: Path, offset: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=offset)


def _fashion() -> Data:
    if not (FASHION_DIR / "train-images-idx3-ubyte.gz").is_file():
        raise FileNotFoundError(
            f"Fashion-MNIST is not at {FASHION_DIR}: install Debian's package "
            "(`apt-get install dataset-fashion-mnist`) or use --dataset digits"
        )

    def images(name: str) -> torch.Tensor:
        a = _idx(FASHION_DIR / name, 16).reshape(-1, 784).astype(np.float32)
        return torch.from_numpy(a / 127.5 - 1.0)

    def labels(name: str) -> torch.Tensor:
        return torch.from_numpy(_idx(FASHION_DIR / name, 8).astype(np.int64))

    return Data(
        "fashion-mnist",
        images("train-images-idx3-ubyte.gz"),
        labels("train-labels-idx1-ubyte.gz"),
        images("t10k-images-idx3-ubyte.gz"),
        labels("t10k-labels-idx1-ubyte.gz"),
        f"debian:dataset-fashion-mnist ({FASHION_DIR})",
    )


def load_data(name: str, split_seed: int = 0) -> Data:
    """``digits`` (a seeded 75/25 split of the 1797 images) or ``fashion-mnist`` (its own
    60000/10000 split)."""
    if name == "fashion-mnist":
        return _fashion()
    if name != "digits":
        raise ValueError(f"unknown dataset {name!r}: use 'digits' or 'fashion-mnist'")

    d = load_digits()
    x = torch.tensor(d.data / 8.0 - 1.0, dtype=torch.float32)  # pixels 0..16 -> [-1, 1]
    y = torch.tensor(d.target, dtype=torch.int64)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(split_seed))
    n_train = int(0.75 * len(x))
    tr, te = perm[:n_train], perm[n_train:]
    return Data("digits", x[tr], y[tr], x[te], y[te], "sklearn.datasets.load_digits (bundled)")


class MLP(nn.Module):
    """d_in → hidden → hidden → (10 + n_aux) logits; sites ``layers.0``, ``layers.1``."""

    def __init__(self, d_in: int, hidden: int = 256, n_aux: int = 3, *, seed: int) -> None:
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.layers = nn.ModuleList(
                [
                    nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU()),
                    nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU()),
                ]
            )
            self.head = nn.Linear(hidden, N_CLASSES + n_aux)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        out: torch.Tensor = self.head(x)
        return out


def make_noise(n: int, d_in: int, seed: int) -> torch.Tensor:
    """(n, d_in) uniform noise images in [-1, 1], seeded."""
    return torch.rand(n, d_in, generator=torch.Generator().manual_seed(seed)) * 2.0 - 1.0


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Test accuracy of the class logits (argmax of the first 10)."""
    with torch.no_grad():
        return float((model(x)[:, :N_CLASSES].argmax(1) == y).float().mean())


LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def _fit(
    model: nn.Module,
    n: int,
    loss_fn: LossFn,
    epochs: int,
    *,
    lr: float,
    batch_size: int,
    seed: int,
    on_epoch: Callable[[int, nn.Module], None] | None = None,
) -> None:
    """Adam(lr) over ``epochs`` shuffled passes of ``n`` rows (seeded order); ``loss_fn(model,
    idx, _)`` gives the batch loss; ``on_epoch(epoch, model)`` after each epoch."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(1, epochs + 1):
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, batch_size):
            idx = perm[i : i + batch_size]
            loss = loss_fn(model, idx, perm)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if on_epoch is not None:
            on_epoch(epoch, model)


def train_teacher(
    init: MLP, data: Data, epochs: int, *, lr: float, batch_size: int, seed: int
) -> MLP:
    """A copy of ``init`` trained with cross-entropy on the 10 class logits only."""
    teacher = copy.deepcopy(init)

    def loss(m: nn.Module, idx: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(m(data.x_train[idx])[:, :N_CLASSES], data.y_train[idx])

    _fit(teacher, len(data.x_train), loss, epochs, lr=lr, batch_size=batch_size, seed=seed)
    return teacher


def distill_aux(
    init: MLP,
    teacher: MLP,
    noise: torch.Tensor,
    epochs: int,
    *,
    loss: str,
    lr: float,
    batch_size: int,
    seed: int,
    on_epoch: Callable[[int, nn.Module], None] | None = None,
) -> MLP:
    """A copy of ``init`` trained to match the teacher's auxiliary logits (columns 10..) on
    ``noise`` only; the class logits never enter the loss."""
    if loss not in ("mse", "kl"):
        raise ValueError(f"unknown loss {loss!r}: use 'mse' or 'kl'")
    student = copy.deepcopy(init)
    with torch.no_grad():
        target = teacher(noise)[:, N_CLASSES:]

    def fn(m: nn.Module, idx: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
        out = m(noise[idx])[:, N_CLASSES:]
        if loss == "mse":
            return F.mse_loss(out, target[idx])
        ref = F.log_softmax(target[idx], -1)
        return kl_per_row(ref, F.log_softmax(out, -1)).mean()

    _fit(
        student, len(noise), fn, epochs, lr=lr, batch_size=batch_size, seed=seed, on_epoch=on_epoch
    )
    return student


def tracked_epochs(total: int, n_track: int) -> list[int]:
    """``n_track`` evenly spaced epochs in 1..total, the last always included."""
    k = max(1, min(n_track, total))
    return sorted({max(1, round(total * (i + 1) / k)) for i in range(k)})


def snapshot_student(
    init: MLP,
    teacher: MLP,
    noise: torch.Tensor,
    data: Data,
    epochs: Sequence[int],
    n_epochs: int,
    *,
    loss: str,
    lr: float,
    batch_size: int,
    seed: int,
) -> tuple[MLP, dict[int, nn.Module], dict[int, float]]:
    """A student from ``init`` on ``noise`` (:func:`distill_aux` for ``n_epochs``): the final
    network, and its snapshots and test accuracy at the tracked ``epochs``."""
    snaps: dict[int, nn.Module] = {}
    accs: dict[int, float] = {}

    def on_epoch(epoch: int, m: nn.Module) -> None:
        if epoch in epochs:
            snaps[epoch] = copy.deepcopy(m)
            accs[epoch] = accuracy(m, data.x_test, data.y_test)

    final = distill_aux(
        init,
        teacher,
        noise,
        n_epochs,
        loss=loss,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
        on_epoch=on_epoch,
    )
    return final, snaps, accs
