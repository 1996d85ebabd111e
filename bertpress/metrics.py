"""Classification metrics, one definition for every stage (finetune's dev evaluation, compress,
export's gate accuracy, bench): accuracy always; for two classes the F1 of the positive class
(class id 1, e.g. MRPC's "paraphrase"); for more than two, macro-F1.

Accuracies and F1 scores are fractions in [0, 1], like every accuracy bertpress records. F1 comes
from scikit-learn (already installed with nncf; named in pyproject) rather than hand-written:
its handling of classes that never occur (`zero_division=0`) and of the label set of macro
averaging (the classes in the gold labels or the predictions) is the one people compare with.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

POSITIVE_CLASS = 1  # binary tasks: the class whose F1 is reported (GLUE: 1 = paraphrase / duplicate / entailment)


def classification_metrics(predictions: Sequence[int] | np.ndarray, labels: Sequence[int] | np.ndarray,
                           num_labels: int) -> dict[str, float]:
    """{"accuracy"} plus {"f1"} (binary: F1 of class POSITIVE_CLASS) or {"macro_f1"} (> 2 classes)."""
    pred = np.asarray(predictions, dtype=np.int64).reshape(-1)
    gold = np.asarray(labels, dtype=np.int64).reshape(-1)
    if pred.shape != gold.shape:
        raise ValueError(f"{pred.size} predictions for {gold.size} labels")
    if gold.size == 0:
        return {"accuracy": 0.0}
    out = {"accuracy": float(np.mean(pred == gold))}
    if num_labels == 2:
        from sklearn.metrics import f1_score

        out["f1"] = float(f1_score(gold, pred, pos_label=POSITIVE_CLASS, average="binary", zero_division=0))
    elif num_labels > 2:
        from sklearn.metrics import f1_score

        out["macro_f1"] = float(f1_score(gold, pred, average="macro", zero_division=0))
    return out


def metric_names(num_labels: int) -> tuple[str, ...]:
    """The keys `classification_metrics` returns for a task with `num_labels` classes."""
    return ("accuracy", "f1") if num_labels == 2 else ("accuracy", "macro_f1") if num_labels > 2 else ("accuracy",)


def prefixed(metrics: dict[str, Any], prefix: str) -> dict[str, Any]:
    """{"accuracy": a, "f1": f} -> {"<prefix>accuracy": a, "<prefix>f1": f} (manifest keys)."""
    return {f"{prefix}{k}": v for k, v in metrics.items()}
