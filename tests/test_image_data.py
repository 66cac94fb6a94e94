"""Image data (flowcore.data: digits, cifar10, image_folder, uint8 .npy/.npz): each loader on files
the test writes, each bad input's error, and seeded, exactly resumable streams with flips."""
import io
import pickle
import struct
import tarfile

import numpy as np
import pytest
import torch

from flowcore.data import LOADED_DATASETS, digits_with_labels, load_array, make_source, uint8_unit_std
from flowcore.data.digits import DIGITS_COUNT, HELD_OUT, split_indices
from flowcore.train import ConfigError, load_config

PER_BATCH = 10   # images per fake CIFAR-10 batch


def _cifar_batch(seed: int, count: int = PER_BATCH) -> dict:
    rng = np.random.default_rng(seed)
    return {b"batch_label": b"fake", b"labels": rng.integers(0, 10, count).tolist(),
            b"data": rng.integers(0, 256, (count, 3072), dtype=np.uint8), b"filenames": [b"x.png"] * count}


class _Python2Pickler(pickle._Pickler):
    """Writes bytes and str as Python 2 strings (BINSTRING), as the official batches were written by
    Python 2's cPickle with protocol 2 (numpy's dtype arguments included); loading them needs
    encoding="bytes"."""

    def save_bytes(self, obj):
        data = obj.encode("latin-1") if isinstance(obj, str) else obj
        n = len(data)
        self.write((pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING + struct.pack("<i", n)) + data)
        self.memoize(obj)

    dispatch = {**pickle._Pickler.dispatch, bytes: save_bytes, str: save_bytes}


def _python2_pickle(value) -> bytes:
    buffer = io.BytesIO()
    _Python2Pickler(buffer, protocol=2).dump(value)
    # numpy 1's module path, the one the official files name
    return buffer.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")


def _cifar_files(skip: str = "", python2: bool = False) -> dict[str, bytes]:
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    dump = _python2_pickle if python2 else pickle.dumps
    return {name: dump(_cifar_batch(i)) for i, name in enumerate(names) if name != skip}


def _cifar_folder(root, skip: str = ""):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name, blob in _cifar_files(skip, python2=True).items():
        (folder / name).write_bytes(blob)
    return folder


def _cifar_tarball(path, files: dict[str, bytes]):
    with tarfile.open(path, "w:gz") as archive:
        for name, blob in files.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            archive.addfile(info, io.BytesIO(blob))
    return path


def _expected_cifar(split: str) -> np.ndarray:
    seeds = range(5) if split == "train" else [5]
    return np.concatenate([_cifar_batch(s)[b"data"] for s in seeds]).reshape(-1, 3, 32, 32)


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    return torch.round((x.double() + 1) * 127.5).to(torch.uint8).numpy()


def _draw_all(source, count: int) -> torch.Tensor:
    return torch.cat([next(source) for _ in range(-(-count // source.batch_size))])[:count]


# --------------------------------------------------------------------------- digits


def test_digits_shape_range_and_split():
    train, train_labels = digits_with_labels("train")
    test, test_labels = digits_with_labels("test")
    assert train.shape == (DIGITS_COUNT - HELD_OUT, 1, 8, 8) and test.shape == (HELD_OUT, 1, 8, 8)
    assert train.dtype == torch.float32 and train_labels.dtype == torch.int64 and len(test_labels) == HELD_OUT
    both = torch.cat([train, test])
    assert both.min() == -1 and both.max() == 1
    assert torch.allclose((both + 1) * 8, torch.round((both + 1) * 8), atol=1e-5)   # the 17 grey levels 0…16
    train_idx, test_idx = split_indices("train"), split_indices("test")
    assert set(train_idx.tolist()).isdisjoint(test_idx.tolist())
    assert sorted(train_idx.tolist() + test_idx.tolist()) == list(range(DIGITS_COUNT))
    assert torch.equal(split_indices("test"), test_idx)   # fixed: the same split every call
    assert set(test_labels.tolist()) == set(range(10))


def test_digits_upsampled_bilinear():
    small, _ = digits_with_labels("test")
    big, _ = digits_with_labels("test", resolution=16)
    assert big.shape == (HELD_OUT, 1, 16, 16) and big.min() >= -1 and big.max() <= 1
    # bilinear ×2, align_corners=False: along each axis the two outputs of pixel i are ¼x[i−1] + ¾x[i] and
    # ¾x[i] + ¼x[i+1], so each 2×2 block averages to the source blurred by [⅛, ¾, ⅛] ⊗ [⅛, ¾, ⅛]
    # (interior; tolerance: float32 rounding of values of size 1)
    pooled = torch.nn.functional.avg_pool2d(big, 2)
    kernel = torch.tensor([0.125, 0.75, 0.125])
    blurred = torch.nn.functional.conv2d(small, (kernel[:, None] * kernel[None, :]).view(1, 1, 3, 3))
    assert torch.allclose(pooled[..., 1:-1, 1:-1], blurred, atol=1e-5)
    source = make_source("digits", 8, options={"resolution": 16, "split": "test"})
    assert source.dims == (1, 16, 16) and source.kind == "digits" and next(source).shape == (8, 1, 16, 16)


# --------------------------------------------------------------------------- cifar10


@pytest.mark.parametrize("split", ["train", "test"])
def test_cifar10_folder_and_tarball(tmp_path, split):
    folder = _cifar_folder(tmp_path / "unpacked")
    tarball = _cifar_tarball(tmp_path / "cifar-10-python.tar.gz", _cifar_files())
    expected = _expected_cifar(split)
    for path in (folder, folder.parent, tarball):   # the batch folder, its parent, the archive
        images = LOADED_DATASETS["cifar10"].load(path=str(path), split=split)
        assert images.dtype == torch.uint8 and images.shape == (len(expected), 3, 32, 32)
        assert np.array_equal(images.numpy(), expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar-10-python.tar.gz", "unpacked"]   # nothing extracted
    source = make_source("cifar10", 7, seed=3, options={"path": str(tarball), "split": split})
    assert source.dims == (3, 32, 32) and source.kind == "images"
    drawn = _draw_all(source, len(expected))   # one epoch: every image once, scaled to [−1, 1]
    assert drawn.min() >= -1 and drawn.max() <= 1
    assert sorted(map(bytes, _to_uint8(drawn).reshape(len(expected), -1))) == \
        sorted(map(bytes, expected.reshape(len(expected), -1)))
    assert source.std == pytest.approx(float(np.std(expected / 127.5 - 1)), rel=1e-12)


def test_cifar10_bad_input(tmp_path):
    with pytest.raises(ValueError, match=r"missing data_batch_3 .*expected data_batch_1"):
        make_source("cifar10", 4, options={"path": str(_cifar_folder(tmp_path / "a", skip="data_batch_3"))})
    tarball = _cifar_tarball(tmp_path / "b.tar.gz", _cifar_files(skip="test_batch"))
    with pytest.raises(ValueError, match=r"b\.tar\.gz: not a CIFAR-10 python archive: missing test_batch"):
        make_source("cifar10", 4, options={"path": str(tarball), "split": "test"})
    with pytest.raises(FileNotFoundError, match="nowhere.*data.path"):
        make_source("cifar10", 4, options={"path": str(tmp_path / "nowhere")})
    with pytest.raises(ValueError, match=r"give the path .*\(data.path\)"):
        make_source("cifar10", 4)
    (tmp_path / "junk.tar.gz").write_bytes(b"not a tarball")
    with pytest.raises(ValueError, match=r"junk\.tar\.gz: expected the CIFAR-10 python \.tar\.gz"):
        make_source("cifar10", 4, options={"path": str(tmp_path / "junk.tar.gz")})
    # wrong dtype / shape of b"data", missing keys, not a pickle
    folder = _cifar_folder(tmp_path / "c")
    wrong = _cifar_batch(9)
    wrong[b"data"] = wrong[b"data"].astype(np.float32)
    (folder / "test_batch").write_bytes(pickle.dumps(wrong))
    with pytest.raises(ValueError, match=r"test_batch: expected b'data' as uint8 of shape \(N, 3072\), "
                                         r"got dtype float32"):
        make_source("cifar10", 4, options={"path": str(folder), "split": "test"})
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)}))
    with pytest.raises(ValueError, match="test_batch: expected a pickled dict with b'data' and b'labels'"):
        make_source("cifar10", 4, options={"path": str(folder), "split": "test"})
    (folder / "test_batch").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="test_batch: not a CIFAR-10 python batch"):
        make_source("cifar10", 4, options={"path": str(folder), "split": "test"})
    with pytest.raises(ValueError, match=r"split must be one of train, test \(data.split\)"):
        make_source("cifar10", 4, options={"path": str(folder), "split": "valid"})


class _Payload:
    """Unpickling this would call os.system: the restricted unpickler must refuse to resolve it."""

    def __reduce__(self):
        import os

        return os.system, ("echo should-never-run",)


def test_cifar10_refuses_any_other_global(tmp_path):
    folder = _cifar_folder(tmp_path)
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": _Payload(), b"labels": []}))
    with pytest.raises(ValueError, match=r"test_batch: refusing to unpickle (posix|os|nt)\.system"):
        make_source("cifar10", 4, options={"path": str(folder), "split": "test"})


# --------------------------------------------------------------------------- image folders


def _png_folder(root, count=5, size=(12, 9)):
    from PIL import Image

    rng = np.random.default_rng(0)
    (root / "class_b").mkdir(parents=True)
    pixels = []
    for i in range(count):
        array = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        where = root / ("class_b" if i % 2 else "") / f"img{i}.{'png' if i < 3 else 'jpg'}"
        Image.fromarray(array).save(where)
        pixels.append(array)
    return root, pixels


def test_image_folder_centre_crop_and_resize(tmp_path):
    from PIL import Image

    folder, _ = _png_folder(tmp_path / "pics")
    (folder / "notes.txt").write_text("not an image, and not read")
    rgb = LOADED_DATASETS["image_folder"].load(path=str(folder), resolution=6)
    assert rgb.dtype == torch.uint8 and rgb.shape == (5, 3, 6, 6)
    # the first file in sorted order is class_b/img1.png: centre 9×9 of a 12×9 image, then 6×6 Lanczos
    with Image.open(folder / "class_b" / "img1.png") as image:
        expected = np.asarray(image.convert("RGB").crop((1, 0, 10, 9)).resize((6, 6), Image.Resampling.LANCZOS))
    assert np.array_equal(rgb[0].numpy(), expected.transpose(2, 0, 1))
    grey = make_source("image_folder", 4, options={"path": str(folder), "resolution": 8, "mode": "L", "flip": True})
    assert grey.dims == (1, 8, 8) and grey.kind == "images" and next(grey).shape == (4, 1, 8, 8)


def test_image_folder_bad_input(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(ValueError, match=r"empty: empty image folder: no \.png / \.jpg / \.jpeg files"):
        make_source("image_folder", 4, options={"path": str(tmp_path / "empty"), "resolution": 8})
    folder, _ = _png_folder(tmp_path / "pics")
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ValueError, match=r"broken\.png: unreadable image .*expected a PNG or JPEG"):
        make_source("image_folder", 4, options={"path": str(folder), "resolution": 8})
    with pytest.raises(ValueError, match=r"resolution\)"):
        make_source("image_folder", 4, options={"path": str(folder)})
    with pytest.raises(ValueError, match=r"mode must be one of RGB, L \(data.mode\)"):
        make_source("image_folder", 4, options={"path": str(folder), "resolution": 8, "mode": "CMYK"})
    with pytest.raises(FileNotFoundError, match="missing: no such folder"):
        make_source("image_folder", 4, options={"path": str(tmp_path / "missing"), "resolution": 8})


# --------------------------------------------------------------------------- uint8 arrays


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("suffix", [".npz", ".npy"])
def test_uint8_arrays_in_both_layouts(tmp_path, layout, suffix):
    images = np.random.default_rng(2).integers(0, 256, (6, 3, 5, 4), dtype=np.uint8)   # (N, C, H, W)
    stored = images if layout == "NCHW" else images.transpose(0, 2, 3, 1)
    path = tmp_path / f"images{suffix}"
    np.savez(path, x=stored) if suffix == ".npz" else np.save(path, stored)
    assert np.array_equal(load_array(path).numpy(), images)
    source = make_source(path, 6, seed=1)
    assert source.dims == (3, 5, 4) and source.kind == "images"
    batch = next(source)
    assert batch.dtype == torch.float32 and batch.min() >= -1 and batch.max() <= 1
    assert sorted(map(bytes, _to_uint8(batch).reshape(6, -1))) == sorted(map(bytes, images.reshape(6, -1)))
    assert source.std == pytest.approx(float(np.std(images / 127.5 - 1)), rel=1e-12)


def test_uint8_arrays_grey_and_ambiguous(tmp_path):
    grey = np.arange(2 * 4 * 5, dtype=np.uint8).reshape(2, 4, 5)
    np.save(tmp_path / "grey.npy", grey)
    assert load_array(tmp_path / "grey.npy").shape == (2, 1, 4, 5)
    ambiguous = np.zeros((2, 3, 5, 3), dtype=np.uint8)
    np.save(tmp_path / "ambiguous.npy", ambiguous)
    with pytest.raises(ValueError, match=r"ambiguous\.npy: cannot tell the channel axis .*layout='NHWC' or 'NCHW'"):
        make_source(tmp_path / "ambiguous.npy", 2)
    assert make_source(tmp_path / "ambiguous.npy", 2, options={"layout": "NHWC"}).dims == (3, 3, 5)
    np.save(tmp_path / "wide.npy", np.zeros((2, 4, 5, 6), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"wide\.npy: cannot tell the channel axis .*neither axis 1 nor axis 3"):
        make_source(tmp_path / "wide.npy", 2)
    np.save(tmp_path / "flat.npy", np.zeros((2, 12), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"flat\.npy: expected uint8 images shaped \(N, H, W, C\)"):
        make_source(tmp_path / "flat.npy", 2)
    np.save(tmp_path / "floats.npy", np.zeros((2, 3, 4, 4), dtype=np.float32))
    with pytest.raises(ValueError, match=r"floats\.npy: layout='NCHW' only applies to uint8"):
        make_source(tmp_path / "floats.npy", 2, options={"layout": "NCHW"})
    with pytest.raises(ValueError, match=r"takes no option split"):
        make_source(tmp_path / "grey.npy", 2, options={"split": "test"})


def test_uint8_std_is_exact():
    x = torch.randint(0, 256, (7, 3, 4, 4), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    assert uint8_unit_std(x) == pytest.approx(float((x.double() / 127.5 - 1).std(unbiased=False)), rel=1e-12)


# --------------------------------------------------------------------------- streams: seeds, flips, resume


def _roundtrip(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("before", [0, 3, 7])
def test_seeded_resume_is_exact_with_flips(flip, before):
    """Batches of 64 from 297 held-out digits straddle epochs; a stream restored from any point
    continues exactly, flips included."""
    options = {"split": "test", "flip": flip}
    source = make_source("digits", 64, seed=5, options=options)
    first = [next(source) for _ in range(before)]
    again = make_source("digits", 64, seed=5, options=options)
    assert all(torch.equal(a, next(again)) for a in first)
    state = _roundtrip(source.state_dict())
    expected = [next(source) for _ in range(8)]
    fresh = make_source("digits", 64, seed=0, options=options)
    fresh.load_state_dict(state)
    assert all(torch.equal(a, next(fresh)) for a in expected)


def test_flips_mirror_about_half_and_only_horizontally():
    plain = make_source("digits", 297, seed=4, options={"split": "test"})
    flipped = make_source("digits", 297, seed=4, options={"split": "test", "flip": True})
    a, b = next(plain), next(flipped)
    # the same permutation (the coins are drawn after it), each image either itself or mirrored in W
    same = (a == b).flatten(1).all(1)
    mirrored = (a.flip(-1) == b).flatten(1).all(1)
    assert bool((same | mirrored).all())
    assert 0.3 < float((mirrored & ~same).double().mean()) < 0.7
    assert not make_source("digits", 4).flip   # off by default, as the paper trains
    with pytest.raises(ValueError, match=r"flip mirrors images shaped \(C, H, W\); these samples are shaped \(2,\)"):
        make_source("checkerboard", 4, options={"flip": True})


# --------------------------------------------------------------------------- config


def test_data_options_from_a_config_name_the_field():
    config = load_config(None, ["data.name=digits", "data.resolution=16", "data.split=test", "data.flip=true"])
    assert config.data.source_options() == {"split": "test", "resolution": 16, "flip": True}
    assert load_config(None, ["data.name=digits"]).data.source_options() == {}
    with pytest.raises(ConfigError, match=r"data.path = 'x': data 'digits' takes no path \(its options: "
                                          r"data.flip, data.split, data.resolution\)"):
        load_config(None, ["data.name=digits", "data.path=x"])
    with pytest.raises(ConfigError, match=r"data.layout = 'NHWC': data 'checkerboard' takes no layout"):
        load_config(None, ["data.layout=NHWC"])
    with pytest.raises(ValueError, match=r"digits: resolution \(data.resolution\) must be 0"):
        make_source("digits", 4, options={"resolution": 5})


# --------------------------------------------------------------------------- the trainer

TINY_UNET = ["network.kind=unet", "network.model_channels=8", "network.channel_mult=[1, 2]", "network.num_blocks=1",
             "network.attn_resolutions=[]", "network.channels_per_head=8", "data.batch=16", "eval.samples=64",
             "eval.steps=1", "eval.ema=0.999", "log.tensorboard=false", "log.progress=off", "checkpoint.every=0",
             "objective.name=fm"]
DIGITS_OPTIONS = ["data.name=digits", "data.split=test", "data.resolution=16", "data.flip=true"]


def test_a_config_trains_on_digits_with_its_options_and_resumes_exactly(tmp_path):
    from flowcore.train import Trainer

    def config(out, figures="false"):
        return load_config(None, ["steps=4", f"log.figures={figures}", *TINY_UNET, *DIGITS_OPTIONS, f"out={out}"])

    straight = Trainer(config(tmp_path / "straight", figures="true"))
    assert straight.data.dims == (1, 16, 16) and straight.data.flip and len(straight.data._array) == HELD_OUT
    summary = straight.train()
    assert set(summary.results[1]) == {"energy", "sw2", "fd_digits"} and summary.samples.is_file()   # 16×16 digits
    first = Trainer(config(tmp_path / "split"))        # the same run, interrupted after 2 steps (as test_train)
    step = first.train_step

    def step_then_interrupt():
        if first.step == 1:
            first._signal = "SIGINT"
        return step()

    first.train_step = step_then_interrupt
    assert first.train().step == 2
    resumed = Trainer(config(tmp_path / "split"), resume=True)
    assert resumed.step == 2
    resumed.train()
    assert all(torch.equal(a, b) for a, b in zip(straight.net.state_dict().values(), resumed.net.state_dict().values()))
    assert torch.equal(straight.data.state_dict()["generator"], resumed.data.state_dict()["generator"])


def test_bad_image_data_fails_before_training(tmp_path):
    from flowcore.train import Trainer

    config = load_config(None, [*TINY_UNET, "data.name=cifar10", f"data.path={tmp_path / 'absent'}",
                                f"out={tmp_path / 'run'}"])
    with pytest.raises(FileNotFoundError, match=r"absent: no such CIFAR-10 folder or \.tar\.gz \(data.path\)"):
        Trainer(config)
    assert not (tmp_path / "run").exists()


def test_a_registered_loaded_data_set_takes_its_options_by_name():
    from flowcore.data import get_dataset, register_loaded_dataset

    def squares(resolution: int = 4) -> torch.Tensor:
        images = torch.zeros(6, 1, resolution, resolution, dtype=torch.uint8)
        for i in range(6):
            images[i, :, : i % resolution + 1, : i % resolution + 1] = 255
        return images

    try:
        register_loaded_dataset("squares", squares, kind="images", options=("resolution",))
        source = make_source("squares", 4, seed=0, options={"resolution": 5, "flip": True})
        assert source.dims == (1, 5, 5) and source.kind == "images"
        assert get_dataset("squares").options == ("resolution",)
        assert set(torch.unique(next(source)).tolist()) <= {-1.0, 1.0}
        with pytest.raises(ValueError, match=r"data set 'squares' takes no option path \(its options: resolution\)"):
            make_source("squares", 4, options={"path": "x"})
        with pytest.raises(ValueError, match="data set 'squares' is already registered"):
            register_loaded_dataset("squares", squares, kind="images")
        with pytest.raises(ValueError, match="data set 'digits' is already registered"):
            from flowcore.data import register_dataset

            register_dataset("digits", lambda n, g=None, d=torch.float32: torch.zeros(n, 2), shape=(2,),
                             kind="points2d")
    finally:
        LOADED_DATASETS.pop("squares", None)
