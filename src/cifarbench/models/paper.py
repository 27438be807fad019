"""What each family's paper built, beside what this package builds: the report's disclosure reads it to say
where a preset's model departs from the paper (batch norm, dropout, parts left out).

Kept apart from the registry on purpose: no training code imports this module, so a fact added here changes
no cell's key and no study's name (cifarbench.codeclosure hashes the training code's import closure).
The 32x32 adaptations (stems, pools, classifier sizes) are in each family module's docstring.
"""

from __future__ import annotations

from dataclasses import dataclass

from cifarbench.errors import ConfigError


@dataclass(frozen=True)
class PaperFacts:
    batch_norm: bool  # the paper's model has batch norm
    dropout: float  # the paper's dropout p before the classifier (0 = none)
    not_here: str = ""  # what else of the paper's model this package leaves out or changes


# By ModelInfo.family, one line per family.
PAPER_FACTS: dict[str, PaperFacts] = {
    "lenet": PaperFacts(False, 0.0, "scaled tanh, trainable pooling and RBF outputs (ReLU, max pool, linear here)"),
    "alexnet": PaperFacts(False, 0.5, "local response normalization"),
    "vgg": PaperFacts(False, 0.5, "the two hidden 4096-unit FC layers (one linear classifier here)"),
    "resnet": PaperFacts(True, 0.0),
    "googlenet": PaperFacts(False, 0.4, "the two auxiliary classifiers; 5x5 convs are two 3x3 here"),
    "densenet": PaperFacts(True, 0.0, "dropout 0.2 after each conv, which the paper uses only without augmentation"),
    "recurrent": PaperFacts(False, 0.0),
    "mlp": PaperFacts(False, 0.0),
}


def paper_facts(family: str) -> PaperFacts:
    try:
        return PAPER_FACTS[family]
    except KeyError:
        raise ConfigError(f"no paper facts for model family {family!r}: add a line to "
                          f"cifarbench.models.paper.PAPER_FACTS (families: {', '.join(PAPER_FACTS)})") from None
