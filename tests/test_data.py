"""The data path on generated CIFAR-format archives: fetch, verify, extract, read, split, and every error."""

from __future__ import annotations

import json
import pickle
import re
import shutil
import tarfile

import numpy as np
import pytest

from cifarbench.cli import main
from cifarbench.data import load_split
from cifarbench.data.archive import read_batch, safe_extract
from cifarbench.data.download import fetch_archive, md5_of
from cifarbench.data.splits import prepare_splits
from cifarbench.errors import DataError
from fake_cifar import write_archive


def test_fetch_over_http_verifies_and_keeps(cifar_archive, http_root, tmp_path):
    archive, md5 = cifar_archive
    root, base = http_root
    shutil.copy(archive, root / "c10.tar.gz")
    dest = tmp_path / "raw" / "c10.tar.gz"
    assert fetch_archive(f"{base}/c10.tar.gz", md5, dest, progress=False) == dest
    assert md5_of(dest) == md5
    assert [p.name for p in dest.parent.iterdir()] == ["c10.tar.gz"]  # no temporary left


def test_a_download_off_a_terminal_logs_one_line_not_a_redrawn_bar(cifar_archive, http_root, tmp_path, capfd):
    archive, md5 = cifar_archive
    root, base = http_root
    shutil.copy(archive, root / "c10.tar.gz")
    fetch_archive(f"{base}/c10.tar.gz", md5, tmp_path / "c10.tar.gz")  # progress on; pytest's capture is no tty
    out, err = capfd.readouterr()
    assert "\r" not in out + err and "\x1b" not in out + err
    assert re.fullmatch(r"download CIFAR-10: \d+\.\d MB in \d+ s\n", out), out


@pytest.mark.parametrize("kind", ["path", "file_url"])
def test_fetch_from_local_path_or_file_url(cifar_archive, tmp_path, kind):
    archive, md5 = cifar_archive
    source = str(archive) if kind == "path" else archive.as_uri()
    dest = fetch_archive(source, md5, tmp_path / "a.tar.gz", progress=False)
    assert md5_of(dest) == md5


def test_bad_md5_names_both_sums_and_removes_file(cifar_archive, tmp_path):
    archive, md5 = cifar_archive
    dest = tmp_path / "a.tar.gz"
    with pytest.raises(DataError, match=f"expected md5 {'0' * 32}, got {md5}.*data.md5"):
        fetch_archive(str(archive), "0" * 32, dest, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_unreachable_host_names_the_key_and_the_fix(tmp_path):
    with pytest.raises(DataError, match=r"data.url=http://127.0.0.1:9/x.*local path"):
        fetch_archive("http://127.0.0.1:9/x.tar.gz", "0" * 32, tmp_path / "a.tar.gz", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_missing_local_file(tmp_path):
    with pytest.raises(DataError, match="not an existing file"):
        fetch_archive(str(tmp_path / "nope.tar.gz"), "0" * 32, tmp_path / "a.tar.gz", progress=False)


def test_truncated_archive_is_refused(cifar_archive, tmp_path):
    archive, _ = cifar_archive
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DataError, match="truncated or not a valid tar.gz"):
        safe_extract(cut, tmp_path / "out")


def _member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.size = 4 if kind == tarfile.REGTYPE else 0
    return info


@pytest.mark.parametrize(
    "member, reason",
    [
        (_member("../evil.txt"), "escape"),
        (_member("/tmp/evil.txt"), "escape"),
        (_member("cifar-10-batches-py/link", tarfile.SYMTYPE, "/etc/passwd"), "links"),
        (_member("cifar-10-batches-py/hard", tarfile.LNKTYPE, "cifar-10-batches-py/test_batch"), "links"),
        (_member("cifar-10-batches-py/dev", tarfile.CHRTYPE), "device"),
    ],
)
def test_unsafe_members_are_refused_before_writing(tmp_path, member, reason):
    archive = tmp_path / "bad.tar.gz"
    write_archive(archive, per_batch=10, test_size=10, extra=[member])
    out = tmp_path / "out"
    with pytest.raises(DataError, match=reason):
        safe_extract(archive, out)
    assert not out.exists() or not any(out.rglob("*"))
    assert not (tmp_path / "evil.txt").exists()


class _RunsCode:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickle_that_would_run_code_is_refused(tmp_path, capsys):
    archive = tmp_path / "evil.tar.gz"
    write_archive(archive, per_batch=10, test_size=10, replace={"data_batch_2": pickle.dumps({"data": _RunsCode()}, protocol=2)})
    folder = safe_extract(archive, tmp_path / "out")
    with pytest.raises(DataError, match=r"global [\w.]*print is not allowed"):
        read_batch(folder / "data_batch_2")
    assert "pwned" not in capsys.readouterr().out


def test_missing_batch_is_named(tmp_path):
    archive = tmp_path / "partial.tar.gz"
    write_archive(archive, per_batch=10, test_size=10, omit=("data_batch_3",))
    with pytest.raises(DataError, match="lacks cifar-10-batches-py/data_batch_3"):
        safe_extract(archive, tmp_path / "out")


@pytest.mark.parametrize(
    "batch, match",
    [
        ({b"data": np.zeros((10, 1024), np.uint8), b"labels": [0] * 10}, r"expected \(10000, 3072\) uint8"),
        ({b"data": np.zeros((10, 3072), np.float32), b"labels": [0] * 10}, "uint8"),
        ({b"data": np.zeros((10, 3072), np.uint8), b"labels": [11] * 10}, "integers in 0..9"),
        ({b"data": np.zeros((10, 3072), np.uint8), b"labels": [0] * 9}, "one per image"),
        ({b"labels": [0] * 10}, "no 'data' entry"),
    ],
)
def test_wrong_shapes_are_refused(tmp_path, batch, match):
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(DataError, match=match):
        read_batch(path)


def test_read_batch_layout(tmp_path):
    data = np.zeros((10, 3072), np.uint8)
    data[:, :1024] = 200  # red plane
    path = tmp_path / "b"
    path.write_bytes(pickle.dumps({b"data": data, b"labels": list(range(10))}, protocol=2))
    images, labels = read_batch(path)
    assert images.shape == (10, 32, 32, 3) and images.dtype == np.uint8
    assert (images[..., 0] == 200).all() and (images[..., 1:] == 0).all()
    assert labels.tolist() == list(range(10))


def test_prepare_writes_stratified_seeded_splits(cifar_archive, tmp_path):
    archive, md5 = cifar_archive
    info = prepare_splits(archive, tmp_path / "a", val_size=100, seed=3)
    assert info["archive_md5"] == md5
    assert info["counts"] == {"train": [40] * 10, "val": [10] * 10, "test": [20] * 10}
    train, val, test = (load_split(tmp_path / "a", s) for s in ("train", "val", "test"))
    assert train.images.shape == (400, 32, 32, 3) and str(train.images.dtype) == "torch.uint8"
    assert len(val) == 100 and len(test) == 200
    first = load_split(tmp_path / "a", "train", limit=30)
    assert len(first) == 30 and (first.images == train.images[:30]).all() and (first.labels == train.labels[:30]).all()
    again = prepare_splits(archive, tmp_path / "b", val_size=100, seed=3)
    assert again == info
    assert (load_split(tmp_path / "b", "val").labels == val.labels).all()
    prepare_splits(archive, tmp_path / "c", val_size=100, seed=4)
    assert not (load_split(tmp_path / "c", "val").labels == val.labels).all()
    assert json.loads((tmp_path / "a" / "info.json").read_text()) == info


def test_cli_reports_bad_params_without_traceback(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("data:\n  val_sise: 10\n  seed: abc\n")
    assert main(["data"]) == 2
    err = capsys.readouterr().err
    assert "data.val_sise: unknown key" in err and "data.seed" in err and "Traceback" not in err


def test_cli_runs_both_steps(cifar_archive, tmp_path, monkeypatch, capsys):
    archive, md5 = cifar_archive
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(f"data:\n  url: {archive}\n  md5: {md5}\n  val_size: 50\n")
    assert main(["data"]) == 0
    assert "val:     50 images" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "data" / "prepared").iterdir()) == [
        "info.json", "test-images.npy", "test-labels.npy", "train-images.npy", "train-labels.npy",
        "val-images.npy", "val-labels.npy"]


def test_each_seed_draws_its_own_stratified_training_subset_and_test_skip_leaves_out_the_first_images(cifar_archive, tmp_path):
    from cifarbench.data.splits import stratified_draw

    archive, _ = cifar_archive
    prepare_splits(archive, tmp_path, val_size=100, seed=0)
    train = load_split(tmp_path, "train")
    draws = {seed: stratified_draw(tmp_path, "train", 50, seed) for seed in (0, 1)}
    for draw in draws.values():
        assert len(set(draw.tolist())) == 50
        assert np.bincount(train.labels[draw].numpy(), minlength=10).tolist() == [5] * 10  # 5 per class
    assert set(draws[0].tolist()) != set(draws[1].tolist())  # the subset is a source of variance the seeds sample
    assert (stratified_draw(tmp_path, "train", 50, 0) == draws[0]).all()  # and the same seed draws the same images
    subset = load_split(tmp_path, "train", draw=draws[1])
    assert (subset.labels == train.labels[np.sort(draws[1])]).all()
    test = load_split(tmp_path, "test")
    scored = load_split(tmp_path, "test", skip=50)
    assert len(scored) == len(test) - 50 and (scored.images == test.images[50:]).all()
    assert (load_split(tmp_path, "test", 20, skip=50).labels == test.labels[50:70]).all()
