"""Building an embedded dataset says what happens (generated locally, nothing downloaded) and
hides TFDS' misleading "Downloading and preparing" line; a prepared one builds silently."""
import os
import re

from gen_jax.data import datasets


def test_first_build_says_it_generates_locally_and_hides_the_tfds_download_line(tmp_path, capsys):
    data_dir = str(tmp_path / "tfds")
    datasets.prepare("digits", data_dir)
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert lines[0] == (f"gen_jax: building the embedded digits dataset in {data_dir} (once; generated "
                        f"locally, nothing is downloaded; a few seconds) ...")
    assert re.fullmatch(rf"gen_jax: digits ready in \d+\.\d s; later runs reuse "
                        rf"{re.escape(os.path.join(data_dir, 'digits'))}", lines[1])
    assert len(lines) == 2 and "Downloading" not in out and "downloaded and prepared" not in out
    assert len(datasets.load_split("digits", "test", data_dir)["image"]) == datasets.EMBEDDED["digits"].split_sizes["test"]
    capsys.readouterr()
    datasets.prepare("digits", data_dir)  # prepared: no message
    assert capsys.readouterr().out == ""
