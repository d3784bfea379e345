"""BVH read/write: real files round-trip, any channel order, clear errors, and the core FK reproduces BVH motion."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _core_rigs import random_basis, random_parents, random_skeleton
from conftest import MOCAP_DEV
from mocap_blender.core import bvh as B
from mocap_blender.core.errors import MocapError
from mocap_blender.core.rotations import euler_to_matrix
from mocap_blender.core.skeleton import forward_kinematics

REAL_BVH = sorted(MOCAP_DEV.rglob("*.bvh"))


def test_mocap_dev_has_bvh_files():
    assert REAL_BVH, f"no BVH files under {MOCAP_DEV}; the round-trip tests below would test nothing"


def _assert_same(a: B.BvhMotion, b: B.BvhMotion, atol=1e-6):
    assert a.names == b.names
    assert np.array_equal(a.parents, b.parents)
    assert a.channels == b.channels
    assert np.allclose(a.offsets, b.offsets, atol=atol, rtol=0)
    assert sorted(a.end_sites) == sorted(b.end_sites)
    for k in a.end_sites:
        assert np.allclose(a.end_sites[k], b.end_sites[k], atol=atol, rtol=0)
    assert a.values.shape == b.values.shape
    assert np.allclose(a.values, b.values, atol=atol, rtol=0)
    assert a.frame_time == pytest.approx(b.frame_time, abs=1e-9)


@pytest.mark.parametrize("path", REAL_BVH, ids=[p.name for p in REAL_BVH])
def test_real_file_round_trip(path, tmp_path):
    m = B.read_bvh(path)  # read in place, never copied
    assert m.n_frames > 0 and m.n_joints > 1
    out = tmp_path / "again.bvh"
    B.write_bvh(out, m)
    _assert_same(m, B.read_bvh(out), atol=0)  # the default writes every number exactly
    B.write_bvh(out, m, precision=6)
    _assert_same(m, B.read_bvh(out), atol=1e-6)


@pytest.mark.parametrize("path", REAL_BVH, ids=[p.name for p in REAL_BVH])
@pytest.mark.parametrize("blender_axes", [False, True])
def test_real_file_core_fk_reproduces_joint_positions(path, blender_axes):
    m = B.read_bvh(path)
    sm = m.to_skeleton_motion(blender_axes=blender_axes, scale=0.01)
    g = B.BVH_TO_BLENDER if blender_axes else np.eye(3)
    want = 0.01 * m.joint_positions() @ g.T
    assert np.allclose(sm.pose()[..., :3, 3], want, atol=1e-9)
    # Rotations and root location alone (the model's quantities) give the same when only the root translates.
    if not sm.has_joint_translation:
        pose = forward_kinematics(sm.skeleton, sm.rotations, sm.root_location)
        assert np.allclose(pose[..., :3, 3], want, atol=1e-9)


def test_pirouette_contents():
    path = MOCAP_DEV / "threejs" / "pirouette_cmu.bvh"
    m = B.read_bvh(path)
    assert (m.n_joints, m.n_frames, len(m.end_sites)) == (43, 592, 14)  # as documented in LICENSES.md
    assert m.frame_time == pytest.approx(0.00833333)
    assert m.channels[0] == ("Xposition", "Yposition", "Zposition", "Zrotation", "Yrotation", "Xrotation")
    assert m.rotation_order(0) == "XYZ" and m.rotation_order(1) == "YXZ"
    sk = m.to_skeleton_motion().skeleton
    assert sk.names == m.names and np.array_equal(sk.parents, m.parents)
    assert np.allclose(sk.rest[:, :3, :3], np.eye(3))


# --- semantics on small hand-written files ------------------------------------------------------

SMALL = """HIERARCHY
ROOT Hips
{
  OFFSET 1 2 3
  CHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation
  JOINT Left Leg
  {
    OFFSET 1 0 0
    CHANNELS 3 Yrotation Xrotation Zrotation
    End Site
    {
      OFFSET 0 -2 0
    }
  }
}
MOTION
Frames: 2
Frame Time: 0.04
1 2 3 0 0 0 0 0 0
10 20 30 0 0 90 0 0 0
"""


def test_small_file_semantics(tmp_path):
    p = tmp_path / "small.bvh"
    p.write_text(SMALL)
    m = B.read_bvh(p)
    assert m.names == ("Hips", "Left Leg")  # names keep their spaces
    assert m.rotation_order(0) == "YXZ" and m.rotation_order(1) == "ZXY"
    pos = m.joint_positions()
    assert np.allclose(pos[0], [[1, 2, 3], [2, 2, 3]])
    # Frame 1: the root moves to (10, 20, 30) and turns 90 degrees about Y: its child offset (1,0,0) -> (0,0,-1).
    assert np.allclose(pos[1], [[10, 20, 30], [10, 20, 29]])
    assert np.allclose(m.rest_tails(), [[2, 2, 3], [2, 0, 3]])
    sm = m.to_skeleton_motion()
    assert np.allclose(sm.root_location, [[0, 0, 0], [9, 18, 27]])
    assert np.allclose(sm.pose()[..., :3, 3], pos)


@pytest.mark.parametrize("listed", ["XYZ", "XZY", "YXZ", "YZX", "ZXY", "ZYX"])
def test_channel_order_is_the_product_in_listed_order(listed, tmp_path):
    """'Zrotation Xrotation Yrotation' means R = Rz @ Rx @ Ry (Blender order 'YXZ'), for all six orders."""
    vals = {"X": 30.0, "Y": -50.0, "Z": 70.0}
    text = SMALL.replace("Yrotation Xrotation Zrotation", " ".join(f"{a}rotation" for a in listed))
    text = text.replace("10 20 30 0 0 90 0 0 0", "0 0 0 0 0 0 " + " ".join(str(vals[a]) for a in listed))
    p = tmp_path / "o.bvh"
    p.write_text(text)
    m = B.read_bvh(p)
    want = np.eye(3)
    for a in listed:
        want = want @ euler_to_matrix(np.radians([vals["X"] if a == "X" else 0, vals["Y"] if a == "Y" else 0,
                                                  vals["Z"] if a == "Z" else 0]))
    assert np.allclose(m.local_rotations()[1, 1], want)
    order = m.rotation_order(1)
    assert order == listed[::-1]
    assert np.allclose(euler_to_matrix(np.radians([vals["X"], vals["Y"], vals["Z"]]), order), want)


def test_tolerant_layout(tmp_path):
    """CRLF endings, braces beside names, lower-case keywords, named end sites, blank lines, tabs."""
    text = ("hierarchy\r\nroot Hips {\r\n\toffset 0 0 0\r\n\tchannels 3 xrotation yrotation zrotation\r\n"
            "\tjoint Spine{\r\n\t\toffset 0 1 0\r\n\t\tchannels 0\r\n\t\tend site tip\r\n\t\t{ offset 0 1 0 }\r\n"
            "\t}\r\n}\r\nmotion\r\nframes:\t1\r\nframe time: 0.1\r\n\r\n1 2 3\r\n\r\n")
    p = tmp_path / "t.bvh"
    p.write_bytes(text.encode())
    m = B.read_bvh(p)
    assert m.names == ("Hips", "Spine") and m.channels == (("Xrotation", "Yrotation", "Zrotation"), ())
    assert np.allclose(m.values, [[1, 2, 3]]) and np.allclose(m.end_sites[1], [0, 1, 0])


def test_zero_frames_and_leaf_without_end_site(tmp_path):
    text = ("HIERARCHY\nROOT a\n{\nOFFSET 0 0 0\nCHANNELS 3 Zrotation Yrotation Xrotation\n"
            "JOINT b\n{\nOFFSET 0 0 1\nCHANNELS 3 Zrotation Yrotation Xrotation\n}\n}\nMOTION\nFrames: 0\n"
            "Frame Time: 0.0333\n")
    p = tmp_path / "z.bvh"
    p.write_text(text)
    m = B.read_bvh(p)
    assert m.values.shape == (0, 6)
    tails = m.rest_tails()
    assert np.allclose(tails[1], [0, 0.1, 1])  # Blender's rule for a tail on its head: +0.1 along Y
    assert m.to_skeleton_motion().skeleton.lengths.min() > 0
    B.write_bvh(tmp_path / "z2.bvh", m)
    _assert_same(m, B.read_bvh(tmp_path / "z2.bvh"))


def test_repeated_names_become_unique_like_blender(tmp_path):
    text = SMALL.replace("Left Leg", "Hips")
    p = tmp_path / "d.bvh"
    p.write_text(text)
    m = B.read_bvh(p)
    assert m.names == ("Hips", "Hips")
    assert m.to_skeleton_motion().skeleton.names == ("Hips", "Hips.001")


# --- random motions: write and read back ---------------------------------------------------------

ALL = B.POSITION_CHANNELS + B.ROTATION_CHANNELS


def _random_motion(rng) -> B.BvhMotion:
    j = int(rng.integers(1, 12))
    parents = random_parents(rng, j)
    channels = []
    for i in range(j):
        kind = rng.integers(4) if i else rng.integers(1, 4)
        if kind == 0:
            channels.append(())
        elif kind == 1:  # 3 rotations, any order
            channels.append(tuple(rng.permutation(B.ROTATION_CHANNELS)))
        elif kind == 2:  # 6 channels, positions and rotations in any order
            channels.append(tuple(rng.permutation(ALL)))
        else:  # any subset, any order
            channels.append(tuple(rng.permutation(ALL)[: int(rng.integers(1, 7))]))
    c = sum(len(ch) for ch in channels)
    f = int(rng.integers(0, 6))
    values = rng.uniform(-360, 360, (f, c)) * 10.0 ** rng.integers(-6, 4, (f, c))
    leaves = [i for i in range(j) if i not in parents]
    ends = {i: rng.normal(size=3) for i in leaves if rng.random() < 0.7}
    names = [f"joint {i}" if rng.random() < 0.3 else f"j{i}_{'x' * int(rng.integers(0, 3))}" for i in range(j)]
    return B.BvhMotion(names, parents, rng.normal(size=(j, 3)) * 10, channels, ends, values,
                       float(rng.uniform(0.001, 0.1)))


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_random_motion_round_trip(tmp_path_factory, seed):
    m = _random_motion(np.random.default_rng(seed))
    p = tmp_path_factory.mktemp("bvh") / "r.bvh"
    B.write_bvh(p, m)
    back = B.read_bvh(p)
    # Joints come back depth-first (the random tree need not be); each joint's data is unchanged.
    idx = [back.names.index(n) for n in m.names]
    assert [back.names[back.parents[idx[j]]] if j else None for j in range(m.n_joints)] == \
        [m.names[m.parents[j]] if j else None for j in range(m.n_joints)]
    for j in range(m.n_joints):
        assert back.channels[idx[j]] == m.channels[j]
        assert np.array_equal(back.offsets[idx[j]], m.offsets[j])
        assert np.array_equal(back.joint_values(idx[j]), m.joint_values(j))
        assert (idx[j] in back.end_sites) == (j in m.end_sites)
        if j in m.end_sites:
            assert np.array_equal(back.end_sites[idx[j]], m.end_sites[j])
    assert back.frame_time == m.frame_time and back.n_frames == m.n_frames
    B.write_bvh(p, back)
    _assert_same(back, B.read_bvh(p), atol=0)  # depth-first motions come back identical
    assert np.allclose(back.joint_positions()[:, idx], m.joint_positions())
    sm = back.to_skeleton_motion(blender_axes=True)
    assert np.allclose(sm.pose()[:, idx][..., :3, 3], m.joint_positions() @ B.BVH_TO_BLENDER.T, atol=1e-6)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from(["XYZ", "XZY", "YXZ", "YZX", "ZXY", "ZYX"]), st.booleans())
def test_random_rig_to_bvh_and_back(tmp_path_factory, seed, order, blender_axes):
    """A random rig (random rolls) and motion -> BVH file -> read -> core FK: the same head positions."""
    rng = np.random.default_rng(seed)
    skel = random_skeleton(rng)
    _, rot, loc = random_basis(rng, skel, n_frames=4)
    heads = forward_kinematics(skel, rot, loc)[..., :3, 3]
    m = B.motion_from_skeleton(skel, rot, loc, order=order, blender_axes=blender_axes, scale=0.5, frame_time=0.04)
    assert all(m.rotation_order(j) == order for j in range(m.n_joints))
    p = tmp_path_factory.mktemp("bvh") / "rig.bvh"
    B.write_bvh(p, m)
    back = B.read_bvh(p)
    _assert_same(m, back, atol=0)
    sm = back.to_skeleton_motion(blender_axes=blender_axes, scale=0.5)
    assert sm.skeleton.names == skel.names
    assert np.allclose(sm.pose()[..., :3, 3], heads, atol=1e-9)
    leaves = np.flatnonzero(skel.is_leaf)
    assert np.allclose(sm.skeleton.tails[leaves], skel.tails[leaves], atol=1e-9)
    eul = back.values[:, 6:].reshape(4, -1, 3)
    assert np.all(np.abs(np.diff(eul, axis=0)) <= 180 + 1e-9)  # unwrapped: no 360-degree jumps


# --- malformed files -----------------------------------------------------------------------------

BAD = {
    "not a bvh": ("hello world\n", "does not start with HIERARCHY"),
    "no motion": (SMALL.split("MOTION")[0], "no MOTION section"),
    "several roots": (SMALL.replace("MOTION", "ROOT Other\n{\nOFFSET 0 0 0\nCHANNELS 0\n}\nMOTION"),
                      r"several root joints \('Hips', 'Other'"),
    "unknown channel": (SMALL.replace("Yrotation Xrotation Zrotation", "Yrotation Wrotation Zrotation"),
                        "line 9: .*unknown channel 'Wrotation'"),
    "short frame": (SMALL.replace("10 20 30 0 0 90 0 0 0", "10 20 30 0 0 90 0 0"),
                    "line 20: a frame has 8 numbers; the hierarchy declares 9"),
    "frame count": (SMALL.replace("Frames: 2", "Frames: 3"), "says 3 frames but 2"),
    "not a number": (SMALL.replace("10 20 30 0 0 90", "10 20 abc 0 0 90"), "'abc' is not a number"),
    "nan": (SMALL.replace("10 20 30 0 0 90", "10 20 nan 0 0 90"), "non-finite"),
    "unclosed": (SMALL.replace("}\nMOTION", "MOTION"), "unclosed"),
    "unmatched": (SMALL.replace("}\nMOTION", "}\n}\nMOTION"), "unmatched"),
    "bad offset": (SMALL.replace("OFFSET 1 2 3", "OFFSET 1 2"), "expected a number for the OFFSET of 'Hips'"),
    "channel count": (SMALL.replace("CHANNELS 6", "CHANNELS 9"), "declares 9 channels"),
    "no channels": (SMALL.replace("  CHANNELS 3 Yrotation Xrotation Zrotation\n", ""),
                    "'Left Leg' has no CHANNELS line"),
    "joint outside": (SMALL.replace("ROOT Hips", "JOINT Hips"), "outside the ROOT"),
    "two end sites": (SMALL.replace("    End Site", "    End Site\n    {\n      OFFSET 0 1 0\n    }\n    End Site"),
                      "two End Sites"),
    "no header": (SMALL.replace("Frames: 2\nFrame Time: 0.04\n", ""), "expected 'Frames: <count>'"),
    "empty hierarchy": ("HIERARCHY\nMOTION\nFrames: 0\nFrame Time: 0.1\n", "no ROOT"),
    "repeated channel": (SMALL.replace("Yrotation Xrotation Zrotation", "Yrotation Yrotation Zrotation"),
                         "lists a channel twice"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_malformed_files_raise_clear_errors(case, tmp_path):
    text, message = BAD[case]
    p = tmp_path / "bad.bvh"
    p.write_text(text)
    with pytest.raises(MocapError, match=message):
        B.read_bvh(p)


def test_missing_file(tmp_path):
    with pytest.raises(MocapError, match="Cannot read the BVH file"):
        B.read_bvh(tmp_path / "nope.bvh")


def test_motion_validation():
    with pytest.raises(MocapError, match="one root"):
        B.BvhMotion(["a", "b"], [-1, -1], np.zeros((2, 3)), [(), ()])
    with pytest.raises(MocapError, match="unknown channel"):
        B.BvhMotion(["a"], [-1], np.zeros((1, 3)), [("Wposition",)])
    with pytest.raises(MocapError, match=r"\(frames, 3\)"):
        B.BvhMotion(["a"], [-1], np.zeros((1, 3)), [B.ROTATION_CHANNELS], values=np.zeros((2, 4)))
    with pytest.raises(MocapError, match="cannot be written"):
        B.write_bvh("/nonexistent/x.bvh", B.BvhMotion([" a"], [-1], np.zeros((1, 3)), [()]))
    assert B.BvhMotion(["a"], [-1], np.zeros((1, 3)), [B.ROTATION_CHANNELS]).values.shape == (0, 3)
