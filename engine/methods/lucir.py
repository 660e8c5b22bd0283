"""lucir (Hou et al. CVPR 2019), algorithms.md §4, as FACIL/TBBN implement it.

- Cosine classifier `sigma * cos(f, w)`, sigma learnable and shared; the last block's ReLU is
  removed so features can be negative.
- t > 0, with the previous model frozen in eval mode (old_net):
  loss = CE(sigma*cos over seen classes)
       + lambda * (1 - cos(f, f_old)) averaged over every row      (less-forget, Eq. 6)
       + lamb_mr * margin ranking on old-class rows: max(0, m - cos_gt + cos_k) for the K
         highest new-class cosines, averaged over those rows x K    (Eq. 8)
  with lambda = lamb * sqrt(n_old_classes / n_new_classes) (Eq. 7; `adapt_lamb`).
- With less-forget, old classes' weights stay frozen: the optimizer holds the backbone, the
  new task's weights and sigma (original code). `less_forget=false` instead distils the old
  cosines by MSE (Eq. 5, FACIL) and trains every seen block.
- New-class weights: random (FACIL/TBBN) or imprinted (original) from the normalised mean of the
  new classes' normalised features, scaled to the old weights' mean norm (`imprint`).
"""
import math

import torch
import torch.nn.functional as F

from engine.backbones.heads import CosineLinear
from engine.errors import ConfigError
from engine.methods import REGISTRY
from engine.methods.exemplar import ExemplarMethod
from engine.options import Option


@REGISTRY.register("lucir")
class Lucir(ExemplarMethod):
    OPTIONS = {
        "lamb": Option(float, 5.0, "lambda_base of the less-forget term (paper: 5 CIFAR, 10 ImageNet)", low=0),
        "lamb_mr": Option(float, 1.0, "weight of the margin-ranking loss", low=0),
        "margin": Option(float, 0.5, "margin m of the ranking loss", low=0),
        "K": Option(int, 2, "hard negatives: top-K new-class cosines per old-class row", low=1),
        "adapt_lamb": Option(bool, True, "lambda = lamb * sqrt(old classes / new classes) (Eq. 7)"),
        "less_forget": Option(bool, True, "feature less-forget loss, old class weights frozen "
                                          "(false: MSE on old cosines, every seen block trains)"),
        "imprint": Option(bool, False, "initialise new-class weights from feature means (original LUCIR; "
                                       "false: random, as FACIL/TBBN)"),
    }
    keeps_old_model = True
    needs_features = True

    def prepare_net(self):
        if not hasattr(self.net, "last_block"):
            raise ConfigError(f"lucir removes the last block's ReLU; backbone {self.cfg.backbone} "
                              "has no last_block()")
        self.net.last_block().last_relu = False
        super().prepare_net()

    def make_head(self):
        return CosineLinear(self.net.feature_dim, self.data.task_sizes)

    def head_tasks(self):
        return [self.task] if self.args["less_forget"] else super().head_tasks()

    def begin_task(self, task, x=None, y=None):
        super().begin_task(task, x, y)
        if self.args["imprint"] and task > 0 and x is not None:
            self.imprint(x, y)

    @torch.no_grad()
    def imprint(self, x, y):
        head, lo = self.net.head, self.old_hi
        old_norm = torch.cat(list(head.weights)[: self.task]).norm(dim=1).mean()
        feats = F.normalize(self.embed(x), dim=1)
        sums = torch.zeros(self.seen_hi - lo, feats.shape[1], device=feats.device).index_add_(0, y - lo, feats)
        head.weights[self.task].copy_(F.normalize(sums, dim=1) * old_norm)

    def loss(self, logits, batch):
        ce = F.cross_entropy(logits[:, : self.seen_hi], batch.y)
        if self.task == 0 or self.old_net is None:
            return ce
        with torch.no_grad():
            old_feats = self.old_net.features(batch.x)
        cos = self.net.head.cosine(batch.features)[:, : self.seen_hi]
        if self.args["less_forget"]:
            distill = less_forget_loss(batch.features, old_feats)
        else:
            old_cos = self.old_net.head.cosine(old_feats)[:, : self.old_hi]
            distill = F.mse_loss(cos[:, : self.old_hi], old_cos) * self.old_hi
        mr = margin_ranking_loss(cos, batch.y, self.old_hi, self.args["K"], self.args["margin"])
        lamb = adaptive_lambda(self.args["lamb"], self.old_hi, self.seen_hi - self.old_hi, self.args["adapt_lamb"])
        return ce + lamb * distill + self.args["lamb_mr"] * mr


def adaptive_lambda(lamb_base: float, n_old: int, n_new: int, adapt: bool = True) -> float:
    """Eq. 7: lambda = lambda_base * sqrt(|old classes| / |new classes|)."""
    return lamb_base * math.sqrt(n_old / n_new) if adapt else lamb_base


def less_forget_loss(features: torch.Tensor, old_features: torch.Tensor) -> torch.Tensor:
    """mean over rows of 1 - cos(f, f_old) (torch's CosineEmbeddingLoss with target 1, as FACIL)."""
    target = torch.ones(features.shape[0], device=features.device)
    return F.cosine_embedding_loss(features, old_features.detach(), target)


def margin_ranking_loss(cos: torch.Tensor, y: torch.Tensor, n_old: int, k: int, margin: float) -> torch.Tensor:
    """LUCIR Eq. 8 on the rows of old classes: mean over those rows and the K hardest new classes of
    max(0, margin - cos(f, w_y) + cos(f, w_new)); 0 without such rows. No host sync: every row is
    computed and masked. K is capped at the number of new classes."""
    hard = (y < n_old).to(cos.dtype)
    k = min(k, cos.shape[1] - n_old)
    gt = cos.gather(1, y[:, None])
    top_new = cos[:, n_old:].topk(k, dim=1).values
    hinge = (margin - gt + top_new).clamp_min(0)
    return (hinge * hard[:, None]).sum() / (hard.sum() * k).clamp_min(1)
