"""ssil (Separated Softmax for Incremental Learning, Ahn et al. ICCV 2021), as TBBN runs it.

With the `[n_c current | n_m exemplar]` batch at t > 0:
  CE_sep = (CE(current rows, softmax over the current task's classes only, sum)
            + CE(exemplar rows, softmax over the old classes only, sum)) / (n_c + n_m)
  KD     = T^2 * sum over old tasks k of KL(softmax(old_k / T) || softmax(new_k / T)),
           batch-mean over every row (task-wise distillation)
  loss   = CE_sep + lamb * KD;  at t = 0 plain cross-entropy.
Quirk of the TBBN code, not reproduced: its loop writes every task's KD term to the same slot
(`loss_KD[t] = ...`), so only the newest old task is distilled; the official SS-IL sums all old
tasks, as here.
"""
import torch
import torch.nn.functional as F

from engine.methods import REGISTRY
from engine.methods.exemplar import ExemplarMethod, taskwise_log_softmax
from engine.options import Option


@REGISTRY.register("ssil", "ss-il")
class Ssil(ExemplarMethod):
    OPTIONS = {
        "T": Option(float, 2.0, "distillation temperature", low=1e-6),
        "lamb": Option(float, 1.0, "weight of the task-wise distillation (official: 1)", low=0),
    }
    keeps_old_model = True

    def loss(self, logits, batch):
        if self.task == 0 or self.old_net is None or batch.n_current == batch.y.shape[0]:
            return super().loss(logits, batch)
        ce = separated_softmax_loss(logits, batch.y, batch.n_current, self.old_hi, self.seen_hi)
        T, sizes = self.args["T"], self.data.task_sizes[: self.task]
        old = self.old_logits(batch.x)[:, : self.old_hi]
        kd = task_wise_kd(logits[:, : self.old_hi], old, sizes, T)
        return ce + self.args["lamb"] * kd


def separated_softmax_loss(logits: torch.Tensor, y: torch.Tensor, n_current: int, lo: int,
                           hi: int) -> torch.Tensor:
    """Current rows: CE within the current task's classes [lo, hi); memory rows: CE within the old
    classes [0, lo); summed and divided by the number of rows."""
    cur = F.cross_entropy(logits[:n_current, lo:hi], y[:n_current] - lo, reduction="sum")
    mem = F.cross_entropy(logits[n_current:, :lo], y[n_current:], reduction="sum")
    return (cur + mem) / y.shape[0]


def task_wise_kd(new: torch.Tensor, old: torch.Tensor, sizes: list[int], T: float) -> torch.Tensor:
    """T^2 * sum over tasks of KL(softmax(old_k/T) || softmax(new_k/T)), batch mean."""
    log_q = taskwise_log_softmax(new / T, sizes)
    p = taskwise_log_softmax(old / T, sizes).exp()
    return F.kl_div(log_q, p, reduction="sum") / new.shape[0] * T * T
