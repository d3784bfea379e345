"""Graph tensors (hops, edge types, ancestor mask) against brute force on random trees."""
import time
from collections import deque

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _core_rigs import random_parents, random_skeleton
from mocap_blender.core import graph as G
from mocap_blender.core.errors import MocapError


def _brute(parents, max_hops):
    j = len(parents)
    adj = [[] for _ in range(j)]
    for i, p in enumerate(parents):
        if p >= 0:
            adj[i].append(p)
            adj[p].append(i)
    hops = np.zeros((j, j), dtype=np.int64)
    for s in range(j):
        dist = {s: 0}
        q = deque([s])
        while q:
            u = q.popleft()
            for v in adj[u]:
                if v not in dist:
                    dist[v] = dist[u] + 1
                    q.append(v)
        for k, d in dist.items():
            hops[s, k] = min(d, max_hops)
    anc = np.zeros((j, j), dtype=bool)
    for i in range(j):
        k = i
        while k >= 0:
            anc[i, k] = True
            k = parents[k]
    edge = np.full((j, j), G.OTHER)
    for i in range(j):
        for k in range(j):
            if i == k:
                edge[i, k] = G.LEAF_SELF if i not in parents else G.SELF
            elif parents[i] == k:
                edge[i, k] = G.PARENT
            elif parents[k] == i:
                edge[i, k] = G.CHILD
            elif parents[i] == parents[k] and parents[i] >= 0:
                edge[i, k] = G.SIBLING
    return hops, edge, anc


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40), st.integers(1, 12), st.integers(0, 2**32 - 1))
def test_matches_brute_force(n, max_hops, seed):
    parents = random_parents(np.random.default_rng(seed), n)
    out = G.graph_tensors(parents, max_hops=max_hops)
    hops, edge, anc = _brute(list(parents), max_hops)
    assert out["hops"].dtype == np.int64 and out["edge_type"].dtype == np.int64 and out["ancestor"].dtype == bool
    assert out["hops"].shape == out["edge_type"].shape == out["ancestor"].shape == (n, n)
    assert np.array_equal(out["hops"], hops)
    assert np.array_equal(out["edge_type"], edge)
    assert np.array_equal(out["ancestor"], anc)
    assert np.array_equal(out["hops"], out["hops"].T)
    assert out["hops"].max(initial=0) <= max_hops


def test_constants():
    assert (G.SELF, G.PARENT, G.CHILD, G.SIBLING, G.OTHER, G.LEAF_SELF) == (0, 1, 2, 3, 4, 5)
    assert G.N_EDGE_TYPES == 6 and len(G.EDGE_TYPE_NAMES) == 6


def test_small_tree_by_hand():
    #      0
    #    1   2
    #    3
    out = G.graph_tensors(np.array([-1, 0, 0, 1]))
    assert out["hops"].tolist() == [[0, 1, 1, 2], [1, 0, 2, 1], [1, 2, 0, 3], [2, 1, 3, 0]]
    e = out["edge_type"]
    assert e[0, 0] == G.SELF and e[3, 3] == G.LEAF_SELF and e[2, 2] == G.LEAF_SELF
    assert e[1, 0] == G.PARENT and e[0, 1] == G.CHILD and e[1, 2] == G.SIBLING and e[3, 2] == G.OTHER
    assert out["ancestor"][3].tolist() == [True, True, False, True]
    assert out["ancestor"][0].tolist() == [True, False, False, False]


def test_single_joint():
    out = G.graph_tensors(np.array([-1]))
    assert out["hops"].tolist() == [[0]] and out["edge_type"].tolist() == [[G.LEAF_SELF]]
    assert out["ancestor"].tolist() == [[True]]


def test_skeleton_input_and_speed():
    skel = random_skeleton(np.random.default_rng(0), n_joints=150)
    G.graph_tensors(skel)
    t = time.perf_counter()
    for _ in range(10):
        out = G.graph_tensors(skel, max_hops=8)
    assert (time.perf_counter() - t) / 10 < 0.05  # vectorised: a few ms for 150 joints
    assert out["hops"].shape == (150, 150)
    # A 150-joint chain (the deepest tree) too.
    G.graph_tensors(np.arange(150) - 1)


@pytest.mark.parametrize("parents", [[0, -1], [-1, 2, 0], [-1, -1], [-1, 0, 5]])
def test_bad_parents(parents):
    with pytest.raises(MocapError, match="parent"):
        G.graph_tensors(np.array(parents))


def test_bad_max_hops():
    with pytest.raises(ValueError):
        G.graph_tensors(np.array([-1, 0]), max_hops=0)
