"""DVS-CIFAR10: AEDAT 2.0 reading, frame integration, downsampling, folder reader and split, DVS augmentation."""

import struct
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from snn_core.data import (
    ARCHIVES,
    CIFAR10_DVS_CLASSES,
    DataFormatError,
    augment_dvs,
    download_archives,
    events_to_frames,
    frames_to_sequence,
    hflip,
    load_cifar10_dvs,
    make_events,
    random_roll,
    read_aedat,
    roll,
    split_per_class,
    write_aedat,
)
from snn_core.data.download import Archive, ArchiveSet, md5sum

HEADER = b"#!AER-DAT2.0\r\n# This is a raw AE data file created by saveAEDataToFile\r\n# Start-Time: 2016-01-01\r\n"


def _random_events(rng, n, t_max=100_000):
    return make_events(np.sort(rng.integers(0, t_max, n)), rng.integers(0, 128, n), rng.integers(0, 128, n),
                       rng.integers(0, 2, n))


# --------------------------------------------------------------------------- AEDAT


def test_hand_made_aedat_address_layout(tmp_path):
    # address = polarity | x_raw << 1 | y_raw << 8, then a timestamp; both uint32 big-endian
    raw = [(0, 5, 7, 100), (1, 127, 0, 250), (1, 0, 127, 4_000_000_000)]  # (p, x_raw, y_raw, t)
    body = b"".join(struct.pack(">II", p | x << 1 | y << 8, t) for p, x, y, t in raw)
    f = tmp_path / "cifar10_cat_0.aedat"
    f.write_bytes(HEADER + body)
    ev, header = read_aedat(f, raw=True)
    assert header == ["#!AER-DAT2.0", "# This is a raw AE data file created by saveAEDataToFile",
                      "# Start-Time: 2016-01-01"]
    assert ev["p"].tolist() == [0, 1, 1] and ev["x"].tolist() == [5, 127, 0] and ev["y"].tolist() == [7, 0, 127]
    assert ev["t"].tolist() == [100, 250, 4_000_000_000]
    up, _ = read_aedat(f)  # CIFAR10-DVS orientation: x = 127 - y_raw, y = 127 - x_raw, p = 1 - bit
    assert up["x"].tolist() == [120, 127, 0] and up["y"].tolist() == [122, 0, 127] and up["p"].tolist() == [1, 0, 0]


@pytest.mark.parametrize("raw", [False, True])
def test_aedat_round_trip(tmp_path, rng, raw):
    ev = _random_events(rng, 500)
    write_aedat(tmp_path / "a.aedat", ev, raw=raw)
    back, header = read_aedat(tmp_path / "a.aedat", raw=raw)
    assert back.dtype == ev.dtype and header[0] == "#!AER-DAT2.0"
    np.testing.assert_array_equal(back, ev)
    empty = make_events([], [], [], [])
    write_aedat(tmp_path / "e.aedat", empty)
    assert read_aedat(tmp_path / "e.aedat")[0].shape == (0,)


@pytest.mark.parametrize("content, msg", [
    (struct.pack(">II", 3, 4), "no AEDAT header"),
    (b"#!AER-DAT3.1\r\n#End Of ASCII Header\r\n", "AEDAT version 3.1 is not supported"),
    (b"# no version line\r\n" + struct.pack(">II", 3, 4), "first header line is '# no version line'"),
    (b"#!AER-DAT2.0\r\n# caf\xe9\r\n", "header line 2 is not ASCII"),
    (b"#!AER-DAT2.0\r\n# cut here", "unterminated AEDAT header line"),
    (HEADER + struct.pack(">II", 3, 4) + b"\x00\x01\x02", "11 bytes of events after the header is not a multiple of 8"),
])
def test_malformed_aedat_names_the_file(tmp_path, content, msg):
    f = tmp_path / "bad.aedat"
    f.write_bytes(content)
    with pytest.raises(DataFormatError, match=msg) as e:
        read_aedat(f)
    assert str(e.value).startswith(str(f)) and "\n" not in str(e.value)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.none() | st.integers(0, 400), flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)),
                                                           max_size=3))
def test_fuzzed_aedat_reads_or_raises_data_format_error(tmp_path, cut, flips):
    body = b"".join(struct.pack(">II", i * 37 % 0x8000, i * 1000) for i in range(30))
    blob = bytearray((HEADER + body)[:cut] if cut is not None else HEADER + body)
    for pos, val in flips:
        if blob:
            blob[pos % len(blob)] = val
    f = tmp_path / "fuzz.aedat"
    f.write_bytes(bytes(blob))
    try:
        ev, header = read_aedat(f)
    except DataFormatError as e:
        assert str(e).startswith(str(f)) and "\n" not in str(e)
    else:
        assert header[0].startswith("#!AER-DAT2") and ev["x"].max(initial=0) < 128 and ev["y"].max(initial=0) < 128
        assert events_to_frames(ev, 4).sum() == ev.size


def test_write_aedat_refuses_bad_events(tmp_path):
    with pytest.raises(ValueError, match="x, y in 0..127"):
        write_aedat(tmp_path / "a.aedat", make_events([0], [128], [0], [0]))
    assert not (tmp_path / "a.aedat").exists()


# --------------------------------------------------------------------------- frames


def test_frames_by_number_hand_computed():
    # 5 events, T = 2: N // T = 2 per frame, the last frame takes the remainder (events 2, 3, 4).
    ev = make_events(t=[0, 1, 2, 3, 4], x=[0, 1, 1, 3, 3], y=[0, 2, 2, 3, 3], p=[0, 1, 1, 0, 1])
    f = events_to_frames(ev, 2, sensor_size=(4, 4), out_size=None)
    expect = np.zeros((2, 2, 4, 4), np.float32)
    expect[0, 0, 0, 0] = 1  # event 0: frame 0, polarity 0, (y, x) = (0, 0)
    expect[0, 1, 2, 1] = 1  # event 1: frame 0, polarity 1, (2, 1)
    expect[1, 1, 2, 1] = 1  # event 2
    expect[1, 0, 3, 3] = 1  # event 3
    expect[1, 1, 3, 3] = 1  # event 4
    assert f.dtype == np.float32
    np.testing.assert_array_equal(f, expect)


def test_frames_by_time_hand_computed():
    # span [0, 90], T = 3 windows [0, 30), [30, 60), [60, 90]
    ev = make_events(t=[0, 29, 30, 59, 60, 90, 90], x=[0] * 7, y=[0] * 7, p=[0] * 7)
    f = events_to_frames(ev, 3, sensor_size=(2, 2), out_size=None, split_by="time")
    assert f[:, 0, 0, 0].tolist() == [2, 2, 3]
    by_number = events_to_frames(ev, 3, sensor_size=(2, 2), out_size=None)
    assert by_number[:, 0, 0, 0].tolist() == [2, 2, 3]  # 7 // 3 = 2, remainder to the last frame
    same_t = make_events([5, 5], [0, 1], [0, 0], [1, 1])
    assert events_to_frames(same_t, 4, (2, 2), None, "time")[0].sum() == 2


def test_fewer_events_than_frames_go_to_the_last_frame():
    ev = make_events([0, 1], [0, 1], [0, 1], [0, 1])
    f = events_to_frames(ev, 5, (2, 2), None)
    assert f[:4].sum() == 0 and f[4].sum() == 2
    assert events_to_frames(make_events([], [], [], []), 3).shape == (3, 2, 48, 48)


def test_downsampling_conserves_event_counts(rng):
    ev = _random_events(rng, 20_000)
    for split in ("number", "time"):
        full = events_to_frames(ev, 10, out_size=None, split_by=split, dtype=np.int64)
        small = events_to_frames(ev, 10, out_size=(48, 48), split_by=split, dtype=np.int64)
        assert small.shape == (10, 2, 48, 48) and small.sum() == ev.size
        np.testing.assert_array_equal(small.sum(axis=(2, 3)), full.sum(axis=(2, 3)))  # per frame and polarity
    # output column = x * 48 // 128 = x * 3 // 8: input columns 0-2 -> 0, 3-5 -> 1, 6-7 -> 2, ..., 126-127 -> 47
    cols = np.arange(128)
    f = events_to_frames(make_events(cols, cols, np.zeros(128), np.zeros(128)), 1, dtype=np.int64)
    np.testing.assert_array_equal(f[0, 0, 0], np.tile([3, 3, 2], 16))
    assert f.sum() == 128


def test_frames_bad_input():
    ev = make_events([0], [128], [0], [0])
    with pytest.raises(ValueError, match="events outside the sensor"):
        events_to_frames(ev, 2)
    with pytest.raises(ValueError, match="T must be >= 1"):
        events_to_frames(make_events([0], [0], [0], [0]), 0)
    with pytest.raises(ValueError, match="split_by must be"):
        events_to_frames(make_events([0], [0], [0], [0]), 2, split_by="rate")
    with pytest.raises(TypeError, match="structured array"):
        events_to_frames(np.zeros(3), 2)


# --------------------------------------------------------------------------- split and folder reader


def test_split_per_class_nine_to_one():
    labels = np.repeat(np.arange(3), [10, 20, 7])
    tr, te = split_per_class(labels, 0.9)
    assert np.bincount(labels[tr]).tolist() == [9, 18, 7] and np.bincount(labels[te], minlength=3).tolist() == [1, 2, 0]
    assert np.array_equal(np.sort(np.concatenate([tr, te])), np.arange(37))
    assert te.tolist() == [9, 28, 29]  # the last ones of each class
    tr2, te2 = split_per_class(labels, 0.9)
    assert np.array_equal(tr, tr2) and np.array_equal(te, te2)
    with pytest.raises(ValueError, match="train_fraction"):
        split_per_class(labels, 0.0)


def _write_tree(root, rng, classes=("airplane", "bird", "cat"), per_class=10):
    events = {}
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            ev = _random_events(rng, int(rng.integers(40, 80)))
            write_aedat(root / c / f"cifar10_{c}_{i}.aedat", ev)
            events[f"{c}/cifar10_{c}_{i}.aedat"] = ev
    return events


def test_load_folder_per_class(tmp_path, rng):
    events = _write_tree(tmp_path, rng)
    ds = load_cifar10_dvs(tmp_path, T=4, classes=("airplane", "bird", "cat"))
    assert ds.x_train.shape == (27, 4, 2, 48, 48) and ds.x_test.shape == (3, 4, 2, 48, 48)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert np.bincount(ds.y_train).tolist() == [9, 9, 9] and ds.y_test.tolist() == [0, 1, 2]
    # lexicographic order within a class (as torchvision's DatasetFolder): _0, _1, _2 ... _9, 10 files: test = _9
    assert ds.files_test == ("airplane/cifar10_airplane_9.aedat", "bird/cifar10_bird_9.aedat", "cat/cifar10_cat_9.aedat")
    for i, f in enumerate(ds.files_train):
        np.testing.assert_array_equal(ds.x_train[i], events_to_frames(events[f], 4))
        assert ds.x_train[i].sum() == events[f].size
    auto = load_cifar10_dvs(tmp_path, T=2, classes=None, out_size=None, dtype=np.uint16)
    assert auto.classes == ("airplane", "bird", "cat") and auto.x_train.shape[-2:] == (128, 128)
    assert auto.x_train.dtype == np.uint16


def test_custom_reader_hook(tmp_path, rng):
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(2):
            (tmp_path / c / f"{i}.npy").write_bytes(b"")
    calls = []

    def reader(path):
        calls.append(path.name)
        return make_events([0, 1], [0, 127], [0, 127], [0, 1])

    ds = load_cifar10_dvs(tmp_path, T=1, classes=("a", "b"), reader=reader, suffix=".npy", train_fraction=0.5)
    assert len(calls) == 4 and ds.x_train.shape == (2, 1, 2, 48, 48) and ds.x_train[0, 0, 1, 47, 47] == 1


def test_folder_errors_name_the_file(tmp_path, rng):
    _write_tree(tmp_path, rng, classes=("airplane", "bird"), per_class=3)
    bad = tmp_path / "bird" / "cifar10_bird_1.aedat"
    bad.write_bytes(bad.read_bytes()[:-3])
    with pytest.raises(DataFormatError, match=r"cifar10_bird_1\.aedat: \d+ bytes of events"):
        load_cifar10_dvs(tmp_path, classes=("airplane", "bird"))
    with pytest.raises(FileNotFoundError, match="missing class folder .*automobile"):
        load_cifar10_dvs(tmp_path)  # the 10 published class names by default
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataFormatError, match="empty: class folder holds no"):
        load_cifar10_dvs(tmp_path, classes=("airplane", "empty"))
    with pytest.raises(FileNotFoundError, match="DVS data folder not found"):
        load_cifar10_dvs(tmp_path / "nowhere")
    assert CIFAR10_DVS_CLASSES[0] == "airplane" and len(CIFAR10_DVS_CLASSES) == 10


def test_frames_to_sequence_layout(rng):
    x = rng.integers(0, 4, (3, 5, 2, 6, 7)).astype(np.uint16)  # (B, T, C, H, W)
    seq = frames_to_sequence(x)
    assert seq.shape == (5, 3, 2 * 6 * 7) and seq.dtype == np.float32
    for b in range(3):
        for t in range(5):
            np.testing.assert_array_equal(seq[t, b], x[b, t].ravel())
    assert seq.transpose(2, 0, 1).flags.c_contiguous  # feature-major buffer, as the layers want
    with pytest.raises(ValueError, match=r"\(B, T, C, H, W\)"):
        frames_to_sequence(x[0])


# --------------------------------------------------------------------------- augmentation


def test_roll_and_flip_of_frames(rng):
    x = rng.integers(0, 5, (6, 3, 2, 12, 12)).astype(np.float32)  # (N, T, C, H, W)
    np.testing.assert_array_equal(roll(x, np.zeros((6, 2), int)), x)
    np.testing.assert_array_equal(roll(x, np.full((6, 2), 12)), x)  # full turn
    s = rng.integers(-5, 6, (6, 2))
    np.testing.assert_array_equal(roll(roll(x, s), -s), x)
    np.testing.assert_array_equal(roll(x, s).sum(axis=(-2, -1)), x.sum(axis=(-2, -1)))  # nothing lost
    out = random_roll(x, rng, max_shift=5)
    for n in range(6):  # one shift per sample, the same for every step and channel, within ±5
        found = [(dy, dx) for dy in range(-5, 6) for dx in range(-5, 6)
                 if np.array_equal(out[n], np.roll(x[n], (dy, dx), axis=(-2, -1)))]
        assert found
    a = augment_dvs(x, np.random.default_rng(3))
    np.testing.assert_array_equal(a, augment_dvs(x, np.random.default_rng(3)))
    assert a.shape == x.shape and a.dtype == x.dtype
    np.testing.assert_array_equal(a.sum(axis=(1, 2, 3, 4)), x.sum(axis=(1, 2, 3, 4)))
    np.testing.assert_array_equal(hflip(hflip(x)), x)
    np.testing.assert_array_equal(hflip(x)[:, :, :, :, 0], x[:, :, :, :, -1])


# --------------------------------------------------------------------------- download


def test_download_class_zips_then_load(tmp_path, rng, monkeypatch):
    src = tmp_path / "src"
    archives = []
    for c in ("airplane", "truck"):
        (src / c).mkdir(parents=True)
        for i in range(2):
            write_aedat(src / c / f"cifar10_{c}_{i}.aedat", _random_events(rng, 30))
        z = tmp_path / f"{c}.zip"
        with zipfile.ZipFile(z, "w") as zf:
            for f in sorted((src / c).iterdir()):
                zf.write(f, f"{c}/{f.name}")
        archives.append(Archive(z.name, (z.as_uri(),), md5sum(z)))
    monkeypatch.setitem(ARCHIVES, "cifar10-dvs", ArchiveSet(tuple(archives), "t", "r"))
    root = download_archives("cifar10-dvs", tmp_path / "dvs")
    ds = load_cifar10_dvs(root, T=3, classes=("airplane", "truck"), train_fraction=0.5)
    assert ds.x_train.shape == (2, 3, 2, 48, 48) and ds.x_train.sum() == 60
