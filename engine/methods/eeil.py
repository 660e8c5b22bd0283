"""eeil (End-to-End Incremental Learning, Castro et al. ECCV 2018), as FACIL/TBBN implement it.

loss = CE over the seen classes + lamb * sum over old tasks k of
       BCE(softmax(new_k / T), softmax(old_k / T))          (task-wise distillation, mean per task)
Offline, every task t > 0 gets a second stage, the balanced finetuning: `ft_epochs` more epochs at
lr * `ft_lr_factor` (fresh optimizer and schedule, its own best-epoch selection). By default it
trains on the full current stream beside the memory, as TBBN's fork (its eeil.py builds the
balanced loader but trains on the task's loader). `ft_balanced=true` trains on a truly
class-balanced set instead: `ceil(buffer_size / seen classes)` random rows of every seen class
(new rows and stored exemplars alike), in one shuffled stream (docs/fidelity.md).

Quirks of the official code, not reproduced: FACIL's unbalanced stage distils only tasks 0..t-2
(`range(t - 1)`), dropping the newest old task; here every old task is distilled in both stages, as
in the paper. The paper's temporary distillation of the new
classes during the balanced stage is not in FACIL and not here. Gradient noise (off in TBBN) is not
implemented.
"""
import torch
import torch.nn.functional as F

from engine.buffers.herding import per_class_slots
from engine.methods import REGISTRY
from engine.methods.base import Stage
from engine.methods.exemplar import ExemplarMethod
from engine.options import Option
from engine.sampling import class_balanced_pick


@REGISTRY.register("eeil")
class Eeil(ExemplarMethod):
    OPTIONS = {
        "lamb": Option(float, 1.0, "weight of the distillation term", low=0),
        "T": Option(float, 2.0, "distillation temperature", low=1e-6),
        "ft_epochs": Option(int, 40, "epochs of the balanced finetuning stage (offline, t > 0)", low=0),
        "ft_lr_factor": Option(float, 0.01, "learning-rate factor of the balanced stage (FACIL's default)", low=0),
        "ft_balanced": Option(bool, False, "second stage on a class-balanced set of current rows and exemplars "
                                           "(false: the full current stream, as TBBN's fork)"),
    }
    keeps_old_model = True

    def stages(self, task, y):
        stages = super().stages(task, y)
        if task == 0 or self.cfg.setting != "offline" or self.args["ft_epochs"] == 0:
            return stages   # online: a single pass, no second stage
        lr = self.cfg.lr * self.args["ft_lr_factor"]
        if not self.args["ft_balanced"]:
            return stages + [Stage("balanced", self.args["ft_epochs"], lr)]   # TBBN's fork: the task's stream
        # every seen class as many rows as herding keeps per class after this task
        per_class = per_class_slots(self.cfg.buffer_size, self.data.task_offsets[task + 1])
        n_take = torch.full((self.data.n_classes,), per_class, dtype=torch.long, device=y.device)
        memory_rows = class_balanced_pick(self.replay_memory()["y"], n_take)
        return stages + [Stage("balanced", self.args["ft_epochs"], lr, class_balanced_pick(y, n_take),
                               memory_rows, mixed=True)]

    def loss(self, logits, batch):
        loss = super().loss(logits, batch)
        if self.task == 0 or self.old_net is None:
            return loss
        T, sizes = self.args["T"], self.data.task_sizes[: self.task]
        old = self.old_logits(batch.x)[:, : self.old_hi]
        new = logits[:, : self.old_hi]
        distill = sum(F.binary_cross_entropy(torch.softmax(n / T, dim=1), torch.softmax(o / T, dim=1))
                      for n, o in zip(new.split(sizes, dim=1), old.split(sizes, dim=1)))
        return loss + self.args["lamb"] * distill
