"""er_ace (Caccia et al. 2022): asymmetric cross-entropy.

Current rows: logits masked to the classes present in the current batch plus every class not
seen before; replay rows: plain CE. As in the AdaB2N fork (`models/er_ace.py`, `er_ace_ada.py`)
and mammoth without `task_free`, replay and masking start at task 1. "Not seen before" starts
at the largest seen class itself; `mask=fork` (default, the AdaB2N fork) unmasks that tail only
while the largest seen class is below C-1, `mask=mammoth` always (docs/fidelity.md).
"""
import torch
import torch.nn.functional as F

from engine.methods import REGISTRY
from engine.methods.base import Method
from engine.options import Option


@REGISTRY.register("er_ace", "er-ace", "erace")
class ErAce(Method):
    OPTIONS = {"mask": Option(str, "fork", "last-class mask: fork (AdaB2N's code: no tail once class C-1 "
                                           "is seen) or mammoth (always unmask from the largest seen class)",
                              choices=("fork", "mammoth"))}
    aux_loss_needs_replay = True   # the AdaB2N fork (er_ace_ada.py) adds it inside `if task > 0`

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen = torch.zeros(self.data.n_classes, dtype=torch.bool, device=self.device)

    def replays(self):
        return self.task > 0   # the fork and mammoth replay only from task 1, not from task 0's second step

    def loss(self, logits, batch):
        y_cur = batch.current(batch.y)
        self.seen[y_cur] = True
        cur = batch.current(logits)
        if self.task > 0:
            allowed = torch.zeros_like(self.seen)
            allowed[y_cur] = True
            # classes from the largest seen one upwards (reverse cumsum <= 1), without a host sync
            tail = self.seen.flip(0).cumsum(0).flip(0) <= 1
            if self.args["mask"] == "fork":
                tail &= ~self.seen[-1]   # the fork unmasks the tail only while max seen < C-1
            allowed |= tail
            cur = cur.masked_fill(~allowed, torch.finfo(cur.dtype).min)
        loss = F.cross_entropy(cur, y_cur)
        if batch.replay:
            loss = loss + F.cross_entropy(logits[batch.n_current:], batch.y[batch.n_current:])
        return loss

    def extra_state(self):
        return {"seen": self.seen}

    def load_extra_state(self, state):
        self.seen = state["seen"].to(self.device)
