"""Checkpoints: portable across devices, never unpickled, never half-written."""

import io
import json
import os
import re
import struct
import tracemalloc
import zipfile

import numpy as np
import pytest

from twolayer_xp import TwoLayerNet, to_numpy
from twolayer_xp.core import model
from twolayer_xp.io import checkpoint
from twolayer_xp.io.checkpoint import CheckpointError


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
    loaded, arrays = model.load_net(tmp_path / "model.npz", device=where.device, backend=where.name)
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
    W2 = np.ones((3, 2))
    W2[0, 0] = np.nan  # save refuses to write this (test_untrusted); another writer might
    with pytest.raises(CheckpointError, match="W2 is not a finite"):
        TwoLayerNet.load(write_v1(path, arrays={"W2": W2}))


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


# ------------------------------------------------------------------------------------------
# Hardening (issue #11): any file, any header, one-line CheckpointError, never a traceback.


def v1_header(**changes):
    """A header as TwoLayerNet.save writes it (format version 1), with ``changes`` applied."""
    from twolayer_xp.core.rng import HostRNG

    header = {
        "format": "twolayer-xp-checkpoint",
        "version": 1,
        "dtype": "float64",
        "iteration": 20,
        "learning_rate": 0.1,
        "rng_state": HostRNG(0).get_state(),
        "saved_from": {"backend": "numpy", "device": "cpu"},
        "metadata": {
            "config": {"dataset": "digits", "hidden_size": 3},
            "history": {"loss_history": [2.3, 2.1], "train_acc_history": [0.5], "val_acc_history": [0.4]},
        },
    }
    header.update(changes)
    return header


def write_v1(path, header=None, header_text=None, arrays=()):
    """A checkpoint built byte for byte the way version-1 checkpoint.save writes one: np.savez of
    W1, b1, W2, b2, extra_<name> arrays and the JSON header as a 0-d unicode array."""
    contents = {
        "W1": np.ones((4, 3)),
        "b1": np.zeros(3),
        "W2": np.ones((3, 2)),
        "b2": np.zeros(2),
        "extra_mean_image": np.arange(4.0),
    }
    text = header_text if header_text is not None else json.dumps(header or v1_header())
    contents["header"] = np.asarray(text)
    contents.update(arrays)  # may replace the header too
    np.savez(path, **contents)
    return path


def load_error(path):
    """The CheckpointError TwoLayerNet.load raises (any other exception fails the test)."""
    with pytest.raises(CheckpointError) as excinfo:
        TwoLayerNet.load(path)
    message = str(excinfo.value)
    assert "\n" not in message and str(path) in message, message
    return message


def test_a_version_1_file_written_by_the_old_code_still_loads(tmp_path):
    path = write_v1(tmp_path / "old.npz")
    net, arrays = model.load_net(path)
    assert (net.input_size, net.hidden_size, net.output_size) == (4, 3, 2)
    assert net.iteration == 20 and net.state.learning_rate == 0.1
    assert net.metadata["history"]["loss_history"] == [2.3, 2.1]
    np.testing.assert_array_equal(arrays["mean_image"], np.arange(4.0))
    legacy = write_v1(tmp_path / "legacy.npz", v1_header(rng_state=HostRNGState.legacy()))
    assert TwoLayerNet.load(legacy).state.rng.is_legacy


class HostRNGState:
    @staticmethod
    def legacy():
        from twolayer_xp.core.rng import HostRNG

        return HostRNG(np.random.RandomState(5)).get_state()


MT = ["MT19937", [1] * 624, 624, 0, 0.0]
BAD_FIELDS = [
    ("rng_state", {}),
    ("rng_state", []),
    ("rng_state", "PCG64"),
    ("rng_state", {"kind": "RandomState", "state": [1, 2]}),
    ("rng_state", {"kind": "RandomState", "state": ["MT19937", [1] * 623, 0, 0, 0.0]}),
    ("rng_state", {"kind": "RandomState", "state": ["MT19937", ["x"] * 624, 0, 0, 0.0]}),
    ("rng_state", {"kind": "RandomState", "state": ["MT19937", [1] * 624, 0, 0, "0"]}),
    ("rng_state", {"kind": "RandomState", "state": ["MT19937", [2**40] * 624, 0, 0, 0.0]}),
    ("rng_state", {"kind": "RandomState", "state": ["MT19937", [1] * 624, 9999, 0, 0.0]}),
    ("rng_state", {"kind": "Generator", "state": "PCG64"}),
    ("rng_state", {"kind": "Generator", "state": {"bit_generator": "PCG64", "state": 5}}),
    (
        "rng_state",
        {"kind": "Generator", "state": {"bit_generator": "PCG64", "state": {"state": "x", "inc": 1}}},
    ),
    ("rng_state", {"kind": "Generator", "state": {"bit_generator": "os.system", "state": {}}}),
    ("rng_state", {"kind": "Mystery", "state": MT}),
    ("metadata", []),
    ("metadata", "notes"),
    ("metadata", {"config": ["dataset", "digits"]}),
    ("metadata", {"history": [1.0, 2.0]}),
    ("metadata", {"history": {"loss_history": "2.3"}}),
    ("metadata", {"history": {"loss_history": [2.3, "nan"]}}),
    ("metadata", {"history": {"loss_history": [[2.3]]}}),
    ("metadata", {"history": {"loss_history": [True]}}),
    ("metadata", {"history": {"losses": [2.3]}}),
    ("iteration", "20"),
    ("iteration", -1),
    ("iteration", 2.5),
    ("iteration", True),
    ("iteration", None),
    ("learning_rate", "0.1"),
    ("learning_rate", [0.1]),
    ("learning_rate", True),
    ("learning_rate", -0.1),
    ("dtype", "int8"),
    ("dtype", 64),
    ("dtype", None),
    ("saved_from", "cpu"),
    ("saved_from", {"backend": 1, "device": "cpu"}),
    ("version", True),
    ("version", "1"),
]


@pytest.mark.parametrize("field,value", BAD_FIELDS, ids=[f"{f}-{i}" for i, (f, _) in enumerate(BAD_FIELDS)])
def test_header_fields_of_the_wrong_type_or_shape(tmp_path, field, value):
    path = write_v1(tmp_path / "model.npz", v1_header(**{field: value}))
    assert f"header field {field}" in load_error(path)


@pytest.mark.parametrize("field", ["dtype", "rng_state"])
def test_required_header_fields(tmp_path, field):
    header = v1_header()
    del header[field]
    assert f"header field {field}" in load_error(write_v1(tmp_path / "model.npz", header))


@pytest.mark.parametrize("depth", [100, 100_000])
def test_deeply_nested_header_json(tmp_path, depth):
    text = json.dumps(v1_header(metadata={"x": None}))
    text = text.replace('{"x": null}', '{"x": ' + "[" * depth + "]" * depth + "}")
    message = load_error(write_v1(tmp_path / "model.npz", header_text=text))
    assert "nested" in message


@pytest.mark.parametrize("text", ["not json", '"a string"', "[1, 2]", "1" * 5000, '{"format": NaN}'])
def test_header_that_is_not_a_json_object(tmp_path, text):
    assert "header" in load_error(write_v1(tmp_path / "model.npz", header_text=text))


def patch_member(path, member, **fields):
    """Overwrite fields of ``member``'s central-directory entry (what zipfile trusts) in place."""
    offsets = {"flag": (8, "<H"), "method": (10, "<H"), "compress_size": (20, "<I"), "file_size": (24, "<I")}
    data = bytearray(path.read_bytes())
    at = data.find(b"PK\x01\x02")
    while data[at + 46 : at + 46 + len(member)] != member.encode():
        at = data.find(b"PK\x01\x02", at + 4)
    for field, value in fields.items():
        offset, fmt = offsets[field]
        struct.pack_into(fmt, data, at + offset, value)
    path.write_bytes(bytes(data))


def compressed_v1(path):
    write_v1(path)
    with np.load(path) as npz:
        np.savez_compressed(path, **{name: npz[name] for name in npz.files})
    return path


@pytest.mark.parametrize(
    "damage,words",
    [
        (lambda p: patch_member(write_v1(p), "W1.npy", flag=1), "'W1' is encrypted"),
        (lambda p: patch_member(write_v1(p), "W2.npy", method=99), "'W2' uses zip compression method 99"),
        (lambda p: patch_member(compressed_v1(p), "W1.npy", compress_size=20), "CRC|truncated|EOF"),
        (
            lambda p: patch_member(compressed_v1(p), "W1.npy", compress_size=20, file_size=128 + 96),
            "CRC|truncated|EOF",
        ),
    ],
)
def test_zip_level_faults(tmp_path, damage, words):
    path = tmp_path / "model.npz"
    damage(path)
    assert re.search(words, load_error(path))


def flip_data(path, member, at, count=1):
    """Invert ``count`` bytes of ``member``'s (possibly compressed) data, starting at ``at``."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        local = zf.getinfo(member).header_offset
    name_len, extra_len = struct.unpack_from("<HH", data, local + 26)
    start = local + 30 + name_len + extra_len + at
    data[start : start + count] = bytes(b ^ 0xFF for b in data[start : start + count])
    path.write_bytes(bytes(data))


def test_corrupt_compressed_stream_and_crc_mismatch(tmp_path):
    path = compressed_v1(tmp_path / "model.npz")
    flip_data(path, "W1.npy", at=0, count=8)  # the deflate block header: an invalid stream
    assert re.search("error|CRC", load_error(path))
    path = write_v1(tmp_path / "stored.npz")
    flip_data(path, "b2.npy", at=128 + 15)  # last data byte: the bytes still parse, the CRC does not
    assert "Bad CRC-32 for file 'b2.npy'" in load_error(path)


def npy_bytes(shape, dtype="<f8", data=b""):
    """A .npy file whose header announces ``shape`` but that holds only ``data``."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue() + data


def test_a_memory_bomb_is_refused_before_any_data_is_read(tmp_path):
    """A member announcing 3.2 GB (zeros inflate ~1000x) must not be allocated, let alone read."""
    path = write_v1(tmp_path / "model.npz")
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("extra_bomb.npy", npy_bytes((20000, 20000), data=bytes(1 << 20)))
    tracemalloc.start()
    message = load_error(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 50e6, peak
    assert "bomb" in message


@pytest.mark.parametrize(
    "arrays,words",
    [
        ({"W1": np.ones((4, 3), dtype=np.int64)}, "param W1 has dtype int64"),
        ({"b1": np.ones((3,), dtype=np.float16)}, "param b1 has dtype float16"),
        ({"W2": np.ones((5, 2))}, "param shapes .* inconsistent"),
        ({"W1": np.ones((0, 3))}, "param shapes .* inconsistent"),
        ({"b2": np.ones((2, 1))}, "param shapes .* inconsistent"),
        ({"extra_big": np.zeros(9 << 20)}, "extra array 'big' is 75497472 bytes"),
        ({"extra_text": np.array(["a", "b"])}, "extra array 'text' has dtype <U1"),
        ({f"extra_{i}": np.zeros(1) for i in range(20)}, "21 extra arrays"),
        ({"header": np.array(["{}", "{}"])}, "header must be a 0-d unicode string"),
        ({"header": np.asarray(b"{}")}, "header must be a 0-d unicode string"),
        ({"header": np.asarray("x" * (33 << 20))}, "header is 34603008 characters"),
    ],
)
def test_arrays_of_the_wrong_shape_dtype_or_size(tmp_path, arrays, words):
    assert re.search(words, load_error(write_v1(tmp_path / "model.npz", arrays=arrays)))


def test_zip_entry_size_must_match_the_npy_header(tmp_path):
    path = write_v1(tmp_path / "model.npz")
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr("extra_padded.npy", npy_bytes((2,), data=bytes(16 + 4096)))
    assert re.search(
        "'extra_padded' is 4240 bytes in the zip but its header .* implies 144", load_error(path)
    )


def test_save_refuses_what_load_would_refuse(tmp_path, make_net, blobs):
    net, _, _ = trained(make_net, blobs, "numpy")
    for arrays, words in [
        ({"names": np.array([{"a": 1}], dtype=object)}, "extra array 'names' has dtype object"),
        ({"labels": np.array(["cat", "dog"])}, "extra array 'labels' has dtype <U3"),
    ]:
        with pytest.raises(ValueError, match=words):
            net.save(tmp_path / "model.npz", arrays=arrays)
    net.metadata = {"history": {"loss_history": ["high"]}}
    with pytest.raises(ValueError, match="header field metadata"):
        net.save(tmp_path / "model.npz")
    assert os.listdir(tmp_path) == []


def test_save_adds_npz_like_numpy_and_load_suggests_it(tmp_path, make_net, blobs):
    net, _, _ = trained(make_net, blobs, "numpy")
    header = {"dtype": "float64", "rng_state": net.state.rng.get_state()}
    params = {k: to_numpy(v) for k, v in net.params.items()}
    assert checkpoint.save(tmp_path / "model", params, header, None, model.LAYOUT) == tmp_path / "model.npz"
    net.save(tmp_path / "other")
    assert sorted(os.listdir(tmp_path)) == ["model.npz", "other.npz"]
    with pytest.raises(CheckpointError, match=f"did you mean {tmp_path / 'model.npz'}"):
        TwoLayerNet.load(tmp_path / "model")
