"""finetune (FACIL/TBBN "finetuning" with exemplars): cross-entropy over the seen classes on every
row of the `[current | exemplars]` batch. The offline protocol's baseline; `sgd` is the online,
memory-less lower bound."""
from engine.methods import REGISTRY
from engine.methods.exemplar import ExemplarMethod


@REGISTRY.register("finetune", "finetuning")
class Finetune(ExemplarMethod):
    pass
