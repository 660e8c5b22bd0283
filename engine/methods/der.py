"""der (Buzzega et al. 2020): CE(current) + alpha * MSE(replay logits, stored logits)."""
import torch
import torch.nn.functional as F

from engine.methods import REGISTRY
from engine.methods.base import Method
from engine.options import Option


@REGISTRY.register("der")
class Der(Method):
    OPTIONS = {"alpha": Option(float, 0.1, "weight of the logit-matching (MSE) term", low=0)}
    aux_loss_needs_replay = True   # the AdaB2N fork (derpp_ada.py) adds it once the buffer is non-empty

    def loss(self, logits, batch):
        loss = F.cross_entropy(batch.current(logits), batch.current(batch.y))
        if batch.replay:
            first = batch.slices[0]
            loss = loss + self.args["alpha"] * F.mse_loss(logits[first], batch.replay[0]["logits"])
        return loss

    def store(self, x, y, logits):
        self.buffer.add(self.task, x=x, y=y, task=torch.full_like(y, self.task), logits=logits)
