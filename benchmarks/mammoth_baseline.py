"""The same-run baseline of engine_throughput.py: this workload run the way the AdaB2N reference
(mammoth) runs it, so the engine's wall time has a reference measured on the same machine in the
same run instead of a number measured on another day (the VM's speed moves by 2x between days).

Not the reference's code (that stays out of the project): its execution pattern, re-expressed
with torch and torchvision, for exactly this workload (DER++ online, bs 10, replay minibatch 10,
reservoir 500, mammoth's ResNet-18, 5 tasks x 400 CIFAR-10-shaped 32x32x3 images, 100 test
images per task), as lvyilin/AdaB2N's utils/main.py, utils/training.py, models/derpp.py,
utils/buffer.py and datasets/seq_cifar10.py do it:
- process: imports torch, torchvision, PIL and wandb (training.py imports it even with
  --nowand); `torch.set_num_threads(4)` (main.py; on this 2-core machine that oversubscribes);
- data: uint8 HWC arrays; a Dataset whose __getitem__ makes a PIL image and returns the augmented
  tensor (RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor, Normalize), the label and
  the not-augmented ToTensor copy; DataLoader(batch_size=10, shuffle=True, num_workers=4) for the
  task's training rows and DataLoader(batch_size=10, num_workers=4) for every task's test rows;
- network: ResNet-18 (3x3 stem, no max-pool, nf 64) in the default NCHW format; torch.optim.SGD;
- before training: a random-network evaluation on every task's test set (training.py's
  `random_results_*`, on by default), and at the start of every task t > 0 an evaluation of the
  new task (the forward-transfer numbers);
- DER++ step: three forwards (current 10 rows, replay draw 1 for the logit MSE, replay draw 2
  for the CE), one backward, SGD step; the buffer stores float32 not-augmented images, adds item
  by item (reservoir with numpy's RNG), and augments replay rows one by one through PIL
  (ToPILImage + the training transform);
- after every task: evaluation of every seen task in batches of 10 (class-IL and task-IL).
Not reproduced (absent from this workload or negligible): W&B logging (--nowand), the text
logger, the progress bar's printing.

    python benchmarks/mammoth_baseline.py [--threads 4]
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms as T
import wandb  # noqa: F401  (imported by the reference's training loop even with --nowand)
from PIL import Image
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from engine.backbones import build_backbone  # noqa: E402  (the same architecture as mammoth's)

N_TASKS, CLASSES_PER_TASK, TRAIN_PER_CLASS, TEST_PER_CLASS = 5, 2, 200, 50
BS = MINIBATCH = 10
BUFFER_SIZE, LR, ALPHA, BETA, WORKERS = 500, 0.03, 0.1, 0.5, 4
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2615)
TRAIN_TRANSFORM = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                             T.Normalize(MEAN, STD)])
TEST_TRANSFORM = T.Compose([T.ToTensor(), T.Normalize(MEAN, STD)])
BUFFER_TRANSFORM = T.Compose([T.ToPILImage(), TRAIN_TRANSFORM])


class TaskImages(Dataset):
    """mammoth's MyCIFAR10 / TCIFAR10 over one task's rows: PIL per item."""

    def __init__(self, data: np.ndarray, targets: np.ndarray, train: bool):
        self.data, self.targets, self.train = data, targets, train
        self.not_aug = T.ToTensor()

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        img = Image.fromarray(self.data[i], mode="RGB")
        if not self.train:
            return TEST_TRANSFORM(img), int(self.targets[i])
        return TRAIN_TRANSFORM(img), int(self.targets[i]), self.not_aug(img.copy())


class ItemBuffer:
    """mammoth's Buffer: float32 storage, item-by-item reservoir insertion, per-item augmentation."""

    def __init__(self, size: int):
        self.size, self.seen = size, 0
        self.examples = torch.zeros(size, 3, 32, 32)
        self.labels = torch.zeros(size, dtype=torch.int64)
        self.logits = torch.zeros(size, N_TASKS * CLASSES_PER_TASK)

    def add(self, examples: torch.Tensor, labels: torch.Tensor, logits: torch.Tensor) -> None:
        for i in range(examples.shape[0]):
            if self.seen < self.size:
                index = self.seen
            else:
                index = np.random.randint(0, self.seen + 1)
                index = index if index < self.size else -1
            self.seen += 1
            if index >= 0:
                self.examples[index] = examples[i]
                self.labels[index] = labels[i]
                self.logits[index] = logits[i]

    def get(self, n: int):
        filled = min(self.seen, self.size)
        choice = np.random.choice(filled, size=min(n, filled), replace=False)
        x = torch.stack([BUFFER_TRANSFORM(e.cpu()) for e in self.examples[choice]])
        return x, self.labels[choice], self.logits[choice]


@torch.no_grad()
def evaluate(net: torch.nn.Module, loaders: list[DataLoader], only_last: bool = False) -> list[float]:
    net.eval()
    accs = []
    for k, loader in enumerate(loaders):
        if only_last and k < len(loaders) - 1:
            continue
        correct = correct_til = total = 0
        for x, y in loader:
            out = net(x)
            correct += int((out.argmax(1) == y).sum())
            out[:, : k * CLASSES_PER_TASK] = -float("inf")
            out[:, (k + 1) * CLASSES_PER_TASK:] = -float("inf")
            correct_til += int((out.argmax(1) == y).sum())
            total += y.shape[0]
        accs.append(100.0 * correct / total)
    net.train()
    return accs


def make_data(seed: int = 0):
    rng = np.random.default_rng(seed)
    n_classes = N_TASKS * CLASSES_PER_TASK

    def draw(per_class: int):
        y = np.repeat(np.arange(n_classes), per_class)
        return rng.integers(0, 256, (len(y), 32, 32, 3), dtype=np.uint8), y

    return draw(TRAIN_PER_CLASS), draw(TEST_PER_CLASS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=4, help="torch threads (the reference sets 4)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="This DataLoader will create")  # 4 workers on 2 cores, as the reference
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    np.random.seed(0)
    (xtr, ytr), (xte, yte) = make_data()
    net = build_backbone("resnet18", 3, N_TASKS * CLASSES_PER_TASK)
    opt = torch.optim.SGD(net.parameters(), lr=LR)
    buffer = ItemBuffer(BUFFER_SIZE)

    def task_rows(y: np.ndarray, t: int) -> np.ndarray:
        return (y >= t * CLASSES_PER_TASK) & (y < (t + 1) * CLASSES_PER_TASK)

    test_loaders = [DataLoader(TaskImages(xte[task_rows(yte, t)], yte[task_rows(yte, t)], train=False),
                               batch_size=BS, num_workers=WORKERS) for t in range(N_TASKS)]
    evaluate(net, test_loaders)        # the random-network baseline on every task
    steps, start = 0, time.perf_counter()
    for t in range(N_TASKS):
        rows = task_rows(ytr, t)
        loader = DataLoader(TaskImages(xtr[rows], ytr[rows], train=True), batch_size=BS, shuffle=True,
                            num_workers=WORKERS)
        if t:
            evaluate(net, test_loaders[: t + 1], only_last=True)   # forward transfer of task t
        for inputs, labels, not_aug in loader:
            opt.zero_grad()
            outputs = net(inputs)
            loss = F.cross_entropy(outputs, labels)
            if buffer.seen:
                buf_x, _, buf_logits = buffer.get(MINIBATCH)
                loss = loss + ALPHA * F.mse_loss(net(buf_x), buf_logits)
                buf_x, buf_y, _ = buffer.get(MINIBATCH)
                loss = loss + BETA * F.cross_entropy(net(buf_x), buf_y)
            loss.backward()
            opt.step()
            buffer.add(not_aug, labels, outputs.data)
            assert not np.isnan(loss.item())
            steps += 1
        accs = evaluate(net, test_loaders[: t + 1])
        print(f"task {t + 1}/{N_TASKS}: class-IL {np.mean(accs):.2f}", file=sys.stderr, flush=True)
    print(f"{steps} {time.perf_counter() - start:.3f}")


if __name__ == "__main__":
    main()
