"""icarl (Rebuffi et al. CVPR 2017), as FACIL implements it.

Training: cross-entropy over the seen classes + lamb * the sum over old classes of the binary
cross-entropy between sigmoid(new logit) and sigmoid(old-model logit) (FACIL; the original has
no trade-off, lamb = 1). Classification: nearest mean of exemplars: class means of the
L2-normalised features of the stored exemplars, re-normalised, computed after every task with
the final model; score = -squared distance. Classes without exemplars score -inf.
"""
import torch
import torch.nn.functional as F

from engine.methods import REGISTRY
from engine.methods.exemplar import ExemplarMethod
from engine.options import Option


@REGISTRY.register("icarl")
class Icarl(ExemplarMethod):
    OPTIONS = {"lamb": Option(float, 1.0, "weight of the sigmoid distillation on old classes", low=0)}
    keeps_old_model = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.class_means = torch.zeros(self.data.n_classes, self.net.feature_dim, device=self.device)
        self.has_mean = torch.zeros(self.data.n_classes, dtype=torch.bool, device=self.device)
        self.means_ready = False   # a Python flag: predict must not ask the device per eval chunk

    def loss(self, logits, batch):
        loss = super().loss(logits, batch)
        if self.old_net is None or self.task == 0:
            return loss
        old = self.old_logits(batch.x)[:, : self.old_hi]
        # FACIL: sum over old classes of BCE(sigmoid(g_y), sigmoid(q_y)), each a mean over the batch
        bce = F.binary_cross_entropy_with_logits(logits[:, : self.old_hi], torch.sigmoid(old), reduction="none")
        return loss + self.args["lamb"] * bce.mean(0).sum()

    def finish_task(self, task):
        super().finish_task(task)
        memory = self.buffer.all()
        self.class_means, self.has_mean = exemplar_means(self.embed(memory["x"]), memory["y"], self.data.n_classes)
        self.means_ready = bool(self.has_mean.any())   # one host sync per task

    @torch.no_grad()
    def predict(self, x):
        if not self.means_ready:  # before the first task ends (or without exemplars): the network's scores
            return self.net(x)
        return nme_scores(self.net.features(x), self.class_means, self.has_mean)

    def extra_state(self):
        return {**super().extra_state(), "class_means": self.class_means, "has_mean": self.has_mean,
                "means_ready": self.means_ready}

    def load_extra_state(self, state):
        super().load_extra_state(state)
        self.class_means = state["class_means"].to(self.device)
        self.has_mean = state["has_mean"].to(self.device)
        ready = state.get("means_ready")   # checkpoints written before the flag: ask the tensor once
        self.means_ready = bool(self.has_mean.any()) if ready is None else ready


def exemplar_means(features: torch.Tensor, labels: torch.Tensor,
                   n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per class: mean of the L2-normalised features, re-normalised (iCaRL); and which classes have one."""
    feats = F.normalize(features, dim=1)
    sums = feats.new_zeros(n_classes, feats.shape[1]).index_add_(0, labels, feats)
    counts = torch.bincount(labels, minlength=n_classes)
    return F.normalize(sums / counts.clamp_min(1)[:, None], dim=1), counts > 0


def nme_scores(features: torch.Tensor, means: torch.Tensor, has_mean: torch.Tensor) -> torch.Tensor:
    """-||f/|f| - mu_c||^2 for every class c (argmax = nearest mean), -inf where c has no mean."""
    f = F.normalize(features, dim=1)
    dist = (f * f).sum(1, keepdim=True) - 2 * f @ means.T + (means * means).sum(1)[None, :]
    return (-dist).masked_fill(~has_mean[None, :], float("-inf"))
