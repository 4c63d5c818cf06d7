"""Checkpoints: portable across devices, never unpickled, never half-written."""

import os

import numpy as np
import pytest

from twolayer_xp import TwoLayerNet, checkpoint, to_numpy
from twolayer_xp.checkpoint import CheckpointError


def trained(make_net, blobs, case_id, dtype="float64"):
    X, y = blobs(n=120, d=6, c=3)
    net = make_net(case_id, 6, 9, 3, std=0.1, rng=2, dtype=dtype)
    net.train(X, y, X, y, learning_rate=0.3, num_iters=25, batch_size=16)
    return net, X, y


@pytest.mark.parametrize("target", ["numpy", "strict-device1", "torch"])
def test_round_trip_across_devices(case, target, tmp_path, make_net, blobs, backend_of):
    """Saved on one backend/device, loaded on another: same params, same next steps."""
    if "torch" in (case, target):
        pytest.importorskip("torch")
    net, X, y = trained(make_net, blobs, case)
    net.metadata = {"note": "hello"}
    net.save(tmp_path / "model.npz", arrays={"mean_image": np.arange(6.0)})
    where = backend_of(target)
    loaded, arrays = checkpoint.load_net(tmp_path / "model.npz", device=where.device, backend=where.name)
    assert loaded.dtype_name == "float64" and loaded.metadata == {"note": "hello"}
    assert loaded.iteration == 25 and loaded.state.learning_rate == net.state.learning_rate
    np.testing.assert_array_equal(arrays["mean_image"], np.arange(6.0))
    for name in net.params:
        np.testing.assert_array_equal(to_numpy(loaded.params[name]), to_numpy(net.params[name]))
    # the random stream continues where it stopped: both draw the same next minibatches
    kwargs = {"learning_rate": 0.1, "num_iters": 10, "batch_size": 16}
    a = net.train(X, y, X, y, start_iteration=net.iteration, **kwargs)
    b = loaded.train(X, y, X, y, start_iteration=loaded.iteration, **kwargs)
    np.testing.assert_allclose(a["loss_history"], b["loss_history"], atol=1e-12)


def test_legacy_global_rng_state_is_saved_without_touching_the_global(tmp_path, toy_data):
    X, y = toy_data
    np.random.seed(0)
    net = TwoLayerNet(4, 10, 3, std=0.1)
    net.train(X, y, X, y, num_iters=3)
    net.save(tmp_path / "m.npz")
    expected = np.random.choice(5, 200)  # what the global stream gives next
    np.random.seed(123)
    loaded = TwoLayerNet.load(tmp_path / "m.npz")
    np.testing.assert_array_equal(loaded.state.rng.minibatch_indices(5, 200), expected)
    assert loaded.state.rng._source is not np.random  # its own stream, not the global one


def test_float32_checkpoint_loads_as_float32(tmp_path, make_net, blobs):
    net, _, _ = trained(make_net, blobs, "numpy", dtype="float32")
    net.save(tmp_path / "m.npz")
    assert TwoLayerNet.load(tmp_path / "m.npz").params["W1"].dtype == np.float32
    assert TwoLayerNet.load(tmp_path / "m.npz", dtype="float64").params["W1"].dtype == np.float64


@pytest.mark.parametrize(
    "write,words",
    [
        (lambda p: p.write_bytes(os.urandom(300)), "not a readable twolayer-xp checkpoint"),
        (lambda p: p.write_text("W1,b1\n1,2\n"), "not a readable twolayer-xp checkpoint"),
        (lambda p: np.savez(p, W1=np.ones((2, 2))), "no header"),
        (
            lambda p: np.savez(p, header=np.asarray('{"format": "something-else"}')),
            "not a twolayer-xp checkpoint",
        ),
        (lambda p: np.savez(p, W1=np.array([{"a": 1}], dtype=object)), "not a readable"),
    ],
)
def test_files_that_are_not_ours(tmp_path, write, words):
    path = tmp_path / "model.npz"
    write(path)
    with pytest.raises(CheckpointError, match=words):
        TwoLayerNet.load(path)


def test_truncated_and_tampered_checkpoints(tmp_path, make_net, blobs):
    net, _, _ = trained(make_net, blobs, "numpy")
    path = tmp_path / "model.npz"
    net.save(path)
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(CheckpointError):
        TwoLayerNet.load(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        TwoLayerNet.load(tmp_path / "nope.npz")
    net.params["W2"][0, 0] = np.nan
    from twolayer_xp import checkpoint

    checkpoint.save(
        path, {k: to_numpy(v) for k, v in net.params.items()}, {"dtype": "float64", "rng_state": {}}
    )
    with pytest.raises(CheckpointError, match="W2 is not a finite"):
        TwoLayerNet.load(path)


def test_a_failed_write_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch, make_net, blobs):
    net, _, _ = trained(make_net, blobs, "numpy")
    path = tmp_path / "model.npz"
    net.save(path)
    before = path.read_bytes()

    def dies_halfway(file, **arrays):
        file.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt  # a run killed mid-write

    monkeypatch.setattr(np, "savez", dies_halfway)
    net.params["W1"] += 1.0
    with pytest.raises(KeyboardInterrupt):
        net.save(path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["model.npz"]  # no temp file left behind
    monkeypatch.undo()
    np.testing.assert_allclose(TwoLayerNet.load(path).params["W1"], net.params["W1"] - 1.0, atol=1e-12)
