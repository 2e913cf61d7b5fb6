"""The command lines a newcomer meets first (issue 11 sections 2-3): --help documents every
flag and the --config.a.b=v overrides, --list shows the configs with their purpose, an
unknown config name suggests the closest, the console scripts point at real entry points,
a locked workdir fails in one line, and sample --out writes exactly the file it names."""
import configparser
import importlib
import os
import subprocess
import sys

import numpy as np
import pytest

from experiments import common, evaluate, sample
from experiments import train as train_cli
from gen_jax.config import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _exit(main, argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


@pytest.mark.parametrize("cli, flags", [
    (train_cli, ["--config", "--workdir", "--list", "--no_progress", "--step", "--allow_config_change",
                 "--cluster", "--coordinator", "--num_processes", "--process_id", "--init_timeout",
                 "--heartbeat_timeout", "--shutdown_timeout"]),
    (sample, ["--config", "--workdir", "--list", "--num", "--out", "--labels", "--seed", "--step"]),
    (evaluate, ["--config", "--workdir", "--list", "--num", "--seed", "--step", "--train_feature_net"]),
])
def test_help_documents_every_flag_and_the_overrides(cli, flags, capsys):
    code, out, _ = _exit(cli.main, ["--help"], capsys)
    assert code == 0
    assert "--config.SECTION.FIELD=VALUE" in out and "--config.train.steps=2000" in out
    documented = {a.option_strings[0]: a.help for a in cli.parser()._actions if a.option_strings}
    assert sorted(documented) == sorted(flags + ["-h"])
    for flag in flags:
        assert flag in out and documented[flag], flag


def test_list_shows_every_config_with_its_docstring_line(capsys):
    code, out, _ = _exit(train_cli.main, ["--list"], capsys)
    assert code == 0
    lines = out.strip().splitlines()
    assert len(lines) == len(common.config_names()) and "base" not in common.config_names()
    vae = [l for l in lines if l.split()[0] == "vae_digits"]
    assert vae and vae[0].endswith("VAE on digits: MLP encoder/decoder, discretized logistic-mixture "
                                   "decoder over the 17 levels.")


def test_unknown_config_name_suggests_the_closest(capsys):
    with pytest.raises(ConfigError, match=r"^--config: no config file at vae_digts and no config named "
                                          r"'vae_digts' in .*experiments/configs; did you mean vae_digits"):
        common.config_path("vae_digts")
    code, _, err = _exit(train_cli.main, ["--config", "vae_digts", "--workdir", "w"], capsys)
    assert code == 2 and "did you mean vae_digits" in err and "Traceback" not in err


def test_missing_workdir_is_an_argparse_error(capsys):
    code, _, err = _exit(sample.main, ["--config", "vae_digits", "--out", "x.npy"], capsys)
    assert code == 2 and "the following arguments are required: --workdir" in err


def test_console_scripts_name_real_entry_points():
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(REPO, "setup.cfg"))
    scripts = dict(l.split(" = ") for l in cfg["options.entry_points"]["console_scripts"].strip().splitlines())
    assert set(scripts) == {"gen-jax-train", "gen-jax-sample", "gen-jax-evaluate", "gen-jax-bakeoff"}
    for target in scripts.values():
        module, fn = target.split(":")
        assert callable(getattr(importlib.import_module(module), fn)), target


def test_config_names_resolve_against_the_package_not_the_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert common.config_path("vae_digits") == os.path.join(common.CONFIG_DIR, "vae_digits.py")


HOLDER = """import sys, time
from gen_jax.train.lock import WorkdirLock
with WorkdirLock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


def test_train_into_a_locked_workdir_fails_in_one_line(tmp_path, digits_data_dir, capsys):
    wd = tmp_path / "wd"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(wd)], env=dict(os.environ, PYTHONPATH=REPO),
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        code, _, err = _exit(train_cli.main, ["--config", "gmm_digits", "--workdir", str(wd), "--no_progress",
                                              "--config.mesh.num_devices=1"], capsys)
    finally:
        holder.kill()
        holder.wait()
    assert code == 2
    assert err.strip().splitlines() == [f"error: workdir {wd} is in use by pid {holder.pid} on {os.uname().nodename} "
                                        f"(lock file {wd}/.lock); wait for that run to end or choose another --workdir"]


@pytest.fixture(scope="module")
def gmm_workdir(tmp_path_factory, digits_data_dir):
    wd = tmp_path_factory.mktemp("gmm") / "wd"
    assert train_cli.main(["--config", "gmm_digits", "--workdir", str(wd), "--no_progress",
                           "--config.train.steps=2", "--config.train.ckpt_every=1",
                           "--config.mesh.num_devices=1"]) == 0
    return wd


def test_sample_out_writes_exactly_the_named_file(gmm_workdir, tmp_path, capsys):
    out = tmp_path / "samples.bin"
    args = ["--config", "gmm_digits", "--workdir", str(gmm_workdir), "--num", "4", "--config.mesh.num_devices=1"]
    assert sample.main(args + ["--out", str(out), "--step", "1"]) == 0
    err = capsys.readouterr().err
    assert f"note: --out {out} has no .npy suffix; writing .npy data to exactly {out}" in err
    assert np.load(out).shape == (4, 8, 8, 1) and not (tmp_path / "samples.bin.npy").exists()


@pytest.mark.parametrize("bad, why", [("file.txt/x.npy", "cannot write {p}: "), ("dir", "{p} is a directory")])
def test_sample_out_unwritable_fails_before_sampling(bad, why, tmp_path, capsys):
    (tmp_path / "file.txt").write_text("")
    (tmp_path / "dir").mkdir()
    p = tmp_path / bad
    code, _, err = _exit(sample.main, ["--config", "gmm_digits", "--workdir", str(tmp_path / "none"),
                                       "--out", str(p)], capsys)
    assert code == 2 and err.strip().splitlines()[-1].startswith("error: --out: " + why.format(p=p)), err
