"""Compactness of 2-D features: how tight each class is, relative to how far apart the classes are."""
from __future__ import annotations

import numpy as np


def compactness(features: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """intra: mean distance of a feature to its class mean; inter: mean distance between class means;
    ratio: intra / inter (smaller is more compact). Classes with no sample are left out."""
    classes = np.unique(labels)
    means = np.stack([features[labels == c].mean(axis=0) for c in classes])
    lookup = {c: i for i, c in enumerate(classes)}
    own = means[np.array([lookup[c] for c in labels])]
    intra = float(np.linalg.norm(features - own, axis=1).mean())
    if len(classes) < 2:
        return {"intra": intra, "inter": float("nan"), "ratio": float("nan")}
    d = np.linalg.norm(means[:, None, :] - means[None, :, :], axis=2)
    inter = float(d[np.triu_indices(len(classes), k=1)].mean())
    return {"intra": intra, "inter": inter, "ratio": intra / inter if inter > 0 else float("inf")}
