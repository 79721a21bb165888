"""Training methods by name: which parameters train, which classes the training data hold, and the loss.

| name               | trains         | training classes          | loss                                  |
|--------------------|----------------|---------------------------|---------------------------------------|
| finetune           | head+backbone  | S (target domain)         | CE over all logits                    |
| linear_probe       | head           | S                         | CE                                    |
| frozen_classifier  | backbone       | S                         | CE                                    |
| oracle             | head+backbone  | S and U (upper bound)     | CE                                    |
| ldifs              | head+backbone  | S                         | CE + alpha * LDIFS (ldifs.py)         |
| holistic_transfer  | backbone       | S                         | CE + U-logit distillation (variant)   |
| holistic_transfer_lolsgd | backbone | S, each copy leaving some out | as holistic_transfer, by LOLSGD rounds |
| pretrain           | head+backbone  | all classes, source split | CE                                    |

'holistic_transfer_lolsgd' trains by leave-out local SGD rounds (lolsgd.py) instead of one optimiser step per batch.
Cross-entropy runs over ALL head logits, as in the official code: absent classes are only ever negatives.

DISPLAY_NAMES is the one table of the names the report, its Markdown and its figures show for each model.
"""

import dataclasses
from typing import Tuple


@dataclasses.dataclass(frozen=True)
class Method:
  """What one training method does.

  Attributes:
    name: registry key.
    trainable: 'all', 'head' or 'backbone' (see optimizers.param_labels).
    train_classes: 'seen' (S only), 'all' (S and U: the Oracle, and pre-training).
    train_split: 'target' (the config's fine-tuning split) or 'source' (the pre-training split).
    loss: 'ce', 'ldifs' or 'holistic_transfer'.
    needs_reference: whether the loss needs a frozen copy of the pre-trained parameters.
    calibrated: whether the report calibrates it with ALG (it is trained on S only).
    update: 'sgd' (one optimiser step per batch, train_step.py) or 'lolsgd' (one leave-out local SGD round per
      batch, lolsgd.py).
  """
  name: str
  trainable: str
  train_classes: str
  train_split: str
  loss: str
  needs_reference: bool = False
  calibrated: bool = True
  update: str = "sgd"


_METHODS = {
    m.name: m for m in (
        Method("finetune", "all", "seen", "target", "ce"),
        Method("linear_probe", "head", "seen", "target", "ce"),
        Method("frozen_classifier", "backbone", "seen", "target", "ce"),
        Method("oracle", "all", "all", "target", "ce", calibrated=False),
        Method("ldifs", "all", "seen", "target", "ldifs", needs_reference=True),
        Method("holistic_transfer", "backbone", "seen", "target", "holistic_transfer", needs_reference=True),
        Method("pretrain", "all", "all", "source", "ce", calibrated=False),
        Method("holistic_transfer_lolsgd", "backbone", "seen", "target", "holistic_transfer", needs_reference=True,
               update="lolsgd"),
    )
}

# Each method's per-run seed offset (train.py) is its index here: the sorted names of the first registry, then
# later methods appended, so that adding a method changes no existing run's seed.
_SEED_ORDER = ("finetune", "frozen_classifier", "holistic_transfer", "ldifs", "linear_probe", "oracle", "pretrain",
               "holistic_transfer_lolsgd")

# The models a report scores, in its table order, with their display names ('pretrained' is the starting point,
# not a training method). report.py, report_markdown.py and plots.py all read this table.
DISPLAY_NAMES = {
    "pretrained": "Pre-trained",
    "finetune": "FT",
    "oracle": "Oracle (S ∪ U)",
    "linear_probe": "Linear probe",
    "frozen_classifier": "Frozen classifier",
    "ldifs": "LDIFS",
    "holistic_transfer": "Holistic Transfer (variant)",
    "holistic_transfer_lolsgd": "Holistic Transfer (LOLSGD)",
}


def get_method(name: str) -> Method:
  """Returns the named Method; raises ValueError listing the valid names for an unknown one."""
  if name not in _METHODS:
    raise ValueError(f"Unknown method {name!r}. Valid names: {', '.join(list_methods())}.")
  return _METHODS[name]


def list_methods() -> Tuple[str, ...]:
  return tuple(sorted(_METHODS))


def seed_index(name: str) -> int:
  """The method's stable seed offset: its position in _SEED_ORDER (adding a method moves no other's)."""
  get_method(name)
  return _SEED_ORDER.index(name)
