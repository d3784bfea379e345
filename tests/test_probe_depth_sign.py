"""The depth-sign probe's Viterbi: a bone turning through the image plane keeps going to the other side."""
import numpy as np

from models.probe_depth_sign import continuity_signs, rebuild


def test_continuity_follows_a_bone_through_the_image_plane():
    t = np.linspace(0.0, 2.0 * np.pi, 48)
    z = np.stack([np.cos(t), 0.5 + 0.3 * np.sin(t), -np.ones_like(t)], 1)  # (T, 3): crosses twice, never, never
    s = continuity_signs(np.abs(z), np.sign(z[0]))
    big = np.abs(z) > 0.05
    np.testing.assert_array_equal(s[big], np.sign(z)[big])
    held = np.broadcast_to(np.sign(z[0]), z.shape)  # the reference's sign on every frame, as the ceiling uses
    assert (held[big] != np.sign(z)[big]).sum() > 15


def test_rebuild_with_true_signs_gives_back_the_pose():
    rng = np.random.default_rng(0)
    parents = [-1, 0, 1, 1]
    heads = np.cumsum(rng.normal(0, 0.2, (5, 4, 3)), axis=1)  # (T, J, 3): a chain-ish layout, lengths vary
    heads[:, 0] = 0.0
    off = heads[0, 1:] - heads[0, [0, 1, 1]]
    for tt in range(1, 5):  # the same lengths on every frame: turn each offset about a random axis
        q = np.linalg.qr(rng.normal(size=(3, 3)))[0]
        for j, p in zip(range(1, 4), parents[1:]):
            heads[tt, j] = heads[tt, p] + off[j - 1] @ q.T
    tails = heads + np.array([0.0, 0.0, 0.1])
    true = {"heads": heads[:, 1:, 2] - heads[:, [0, 1, 1], 2], "tails": tails[..., 2] - heads[..., 2]}
    got_h, got_t = rebuild(heads[..., :2], tails[..., :2], heads[0], tails[0], parents,
                           lambda name, mag: np.where(true[name] < 0, -1.0, 1.0))
    np.testing.assert_allclose(got_h, heads, atol=1e-9)
    np.testing.assert_allclose(got_t, tails, atol=1e-9)
