"""Training methods by name: which parameters train, which classes the training data hold, and the loss.

| name               | trains         | training classes          | loss                                  |
|--------------------|----------------|---------------------------|---------------------------------------|
| finetune           | head+backbone  | S (target domain)         | CE over all logits                    |
| linear_probe       | head           | S                         | CE                                    |
| frozen_classifier  | backbone       | S                         | CE                                    |
| oracle             | head+backbone  | S and U (upper bound)     | CE                                    |
| ldifs              | head+backbone  | S                         | CE + alpha * LDIFS (ldifs.py)         |
| holistic_transfer  | backbone       | S                         | CE + U-logit distillation (variant)   |
| pretrain           | head+backbone  | all classes, source split | CE                                    |

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
  """
  name: str
  trainable: str
  train_classes: str
  train_split: str
  loss: str
  needs_reference: bool = False
  calibrated: bool = True


_METHODS = {
    m.name: m for m in (
        Method("finetune", "all", "seen", "target", "ce"),
        Method("linear_probe", "head", "seen", "target", "ce"),
        Method("frozen_classifier", "backbone", "seen", "target", "ce"),
        Method("oracle", "all", "all", "target", "ce", calibrated=False),
        Method("ldifs", "all", "seen", "target", "ldifs", needs_reference=True),
        Method("holistic_transfer", "backbone", "seen", "target", "holistic_transfer", needs_reference=True),
        Method("pretrain", "all", "all", "source", "ce", calibrated=False),
    )
}

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
}


def get_method(name: str) -> Method:
  """Returns the named Method; raises ValueError listing the valid names for an unknown one."""
  if name not in _METHODS:
    raise ValueError(f"Unknown method {name!r}. Valid names: {', '.join(list_methods())}.")
  return _METHODS[name]


def list_methods() -> Tuple[str, ...]:
  return tuple(sorted(_METHODS))
