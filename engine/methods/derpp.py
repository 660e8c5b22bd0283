"""derpp (DER++): der + beta * CE on a second, independent replay minibatch.

Both replay draws and the current rows go through ONE forward (mammoth runs three), so the
norm layers see the whole batch and its layout.
"""
import torch.nn.functional as F

from engine.methods import REGISTRY
from engine.methods.der import Der
from engine.options import Option


@REGISTRY.register("derpp", "der++")
class Derpp(Der):
    OPTIONS = {**Der.OPTIONS, "beta": Option(float, 0.5, "weight of the replay cross-entropy term", low=0)}
    replay_draws = 2

    def loss(self, logits, batch):
        loss = super().loss(logits, batch)
        if batch.replay:
            second = batch.slices[1]
            loss = loss + self.args["beta"] * F.cross_entropy(logits[second], batch.replay[1]["y"])
        return loss
