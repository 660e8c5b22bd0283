"""er_ace (Caccia et al. 2022): asymmetric cross-entropy.

Current rows: logits masked to the classes present in the current batch plus every class not
seen before; replay rows: plain CE. Mammoth's mask starts "not seen before" at the largest seen
class itself (`mask[:, seen.max():] = 1`) and masks only from task 1 on; we keep both.
"""
import torch
import torch.nn.functional as F

from engine.methods import REGISTRY
from engine.methods.base import Method


@REGISTRY.register("er_ace", "er-ace", "erace")
class ErAce(Method):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen = torch.zeros(self.data.n_classes, dtype=torch.bool, device=self.device)

    def loss(self, logits, batch):
        y_cur = batch.current(batch.y)
        self.seen[y_cur] = True
        cur = batch.current(logits)
        if self.task > 0:
            allowed = torch.zeros_like(self.seen)
            allowed[y_cur] = True
            # classes from the largest seen one upwards (reverse cumsum <= 1), without a host sync
            allowed |= self.seen.flip(0).cumsum(0).flip(0) <= 1
            cur = cur.masked_fill(~allowed, torch.finfo(cur.dtype).min)
        loss = F.cross_entropy(cur, y_cur)
        if batch.replay:
            loss = loss + F.cross_entropy(logits[batch.n_current:], batch.y[batch.n_current:])
        return loss

    def extra_state(self):
        return {"seen": self.seen}

    def load_extra_state(self, state):
        self.seen = state["seen"].to(self.device)
