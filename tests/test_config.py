"""The settings schema, tested as pure functions: parsing, validation, naming, resume reconciliation,
and the CLI options and docs/options.md table derived from it."""
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
from conftest import DOCS
from typer.testing import CliRunner

from centerloss_cli.cli import app
from centerloss_cli.errors import CenterLossError, ConfigError
from centerloss_cli.launch import sweep
from centerloss_cli.rundir.files import read_metrics
from centerloss_cli.rundir.folder import reconcile
from centerloss_cli.rundir.records import read_record
from centerloss_cli.settings.config import (
    DEFAULTS,
    SCHEMA,
    SLURM_DEFAULTS,
    TrainConfig,
    resolve,
    resolve_config,
    sbatch_options,
)
from centerloss_cli.settings.schema import default_text, to_dict
from centerloss_cli.settings.schema import from_dict as from_dict_of
from centerloss_cli.settings.voice import Voice


def from_dict(values, where=""):
    return from_dict_of(values, DEFAULTS, where)




@pytest.mark.process  # starts a Python process of its own
def test_the_schema_module_does_not_import_torch():
    code = "import sys, centerloss_cli.settings.config, centerloss_cli.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_every_field_is_declared_with_a_key_and_help():
    assert set(SCHEMA) == {f.name for f in fields(TrainConfig)}
    assert all(s.help for s in SCHEMA.values())
    assert SCHEMA["lam"].key == "lambda" and SCHEMA["lam"].flag == "--lambda"


@pytest.mark.parametrize("values,message", [
    ({"lamda": 0.1}, "unknown key 'lamda' in f.toml; known keys:"),
    ({"lam": 0.1}, "unknown key 'lam'"),  # the field name is not a key; "lambda" is
    ({"epochs": "three"}, "epochs = 'three' in f.toml: expected an integer"),
    ({"epochs": True}, "epochs = True in f.toml: expected an integer"),
    ({"alpha": 2.0}, "alpha = 2.0 in f.toml: expected a number in [0, 1]"),
    ({"lambda": float("nan")}, "lambda = nan in f.toml: expected a finite number"),
    ({"precision": "fp16"}, "precision = 'fp16' in f.toml: expected one of auto, fp32, tf32, bf16"),
    ({"center_update": "adam"}, "center_update = 'adam' in f.toml: expected one of paper, sgd"),
    ({"lr_milestones": [5000, "x"]}, "lr_milestones = [5000, 'x'] in f.toml: expected a list of integers"),
    ({"lr_milestones": [0]}, "lr_milestones = (0,) in f.toml: expected positive iteration numbers"),
    ({"name": "a/b"}, "name = 'a/b' in f.toml: expected a folder name of printable UTF-8 characters without '/'"),
    ({"name": "x" * 256}, "expected a folder name of printable UTF-8 characters without '/', of at most 255 bytes"),
    ({"seed": 2**32}, "seed = 4294967296 in f.toml: expected an integer in [0, 2^32)"),
    ({"device": "tpu"}, "device = 'tpu' in f.toml: expected auto, cpu, cuda, cuda:N or mps"),
    ({"label_smoothing": 1.0}, "label_smoothing = 1.0 in f.toml: expected a number in [0, 1)"),
    ({"grad_clip": -1}, "grad_clip = -1.0 in f.toml: expected a number >= 0"),
    ({"lr_schedule": "onecycle"}, "lr_schedule = 'onecycle' in f.toml: expected one of step, linear, cosine"),
    ({"warmup": -5}, "warmup = -5 in f.toml: expected"),
])
def test_bad_values_name_the_key_the_file_and_what_is_accepted(values, message):
    with pytest.raises(ConfigError) as e:
        from_dict(values, where=" in f.toml")
    assert message in str(e.value)


def test_a_config_cannot_exist_unvalidated_and_speaks_python():
    """Errors to a Python caller name its arguments (lam), a file's or a flag's name their keys (lambda)."""
    with pytest.raises(ConfigError, match="lam = -1.0: expected a number >= 0"):
        TrainConfig(lam=-1.0)
    with pytest.raises(ConfigError, match="alpha = 1.5"):
        DEFAULTS.with_(alpha=1.5)
    with pytest.raises(ConfigError, match="^epochs = 1.5: expected an integer$"):
        TrainConfig(epochs=1.5)  # it used to train an epoch, then crash, leaving a half run folder
    with pytest.raises(ConfigError, match="^lambda = -1.0: expected a number >= 0$"):
        from_dict({"lambda": -1})


def test_paths_and_lists_are_taken_as_python_gives_them():
    """A Path is a path; a list of milestones names its run as the same settings on the command line do."""
    c = TrainConfig(output_dir=Path("out"), data_dir=Path("/data"), lr_milestones=[5000, 8000])
    assert (c.output_dir, c.data_dir, c.lr_milestones) == ("out", "/data", (5000, 8000))
    assert c.run_name == DEFAULTS.run_name == resolve_config(None, {"lr_milestones": "5000,8000"}).run_name


def test_types_are_coerced_once():
    c = from_dict({"lambda": 1, "lr_milestones": "10,20", "epochs": 3})
    assert c.lam == 1.0 and isinstance(c.lam, float)
    assert c.lr_milestones == (10, 20) and c.epochs == 3
    assert to_dict(c)["lr_milestones"] == [10, 20] and to_dict(c)["lambda"] == 1.0


def test_the_file_wins_over_defaults_and_flags_over_the_file(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("lambda = 0.1\nalpha = 0.25\n")
    c = resolve_config(f, {"alpha": 0.75})
    assert (c.lam, c.alpha, c.batch_size) == (0.1, 0.75, 128)
    with pytest.raises(ConfigError, match="is not valid TOML"):
        f.write_text("lambda = \n")
        resolve_config(f)


def test_run_names_come_from_the_settings_that_name_a_run():
    assert DEFAULTS.run_name == "lambda0.01_alpha0.5_seed0"
    c = DEFAULTS.with_(lam=0.0, seed=3, center_update="sgd", classifier_bias=True, precision="bf16")
    assert c.run_name == "lambda0_alpha0.5_seed3_sgd_bias_bf16"
    assert DEFAULTS.with_(name="mine").run_dir == Path("outputs/mine")
    # as the CLI passes `--lambda 0 --center-update sgd --seed 3`: by field name, converted from the flags' text
    flags = {"lam": "0", "center_update": "sgd", "seed": "3"}
    assert resolve_config(None, flags).run_dir == Path("outputs/lambda0_alpha0.5_seed3_sgd")


def test_reconcile_takes_only_what_may_change_on_resume():
    saved = DEFAULTS.with_(lam=0.1, epochs=2, train_limit=256)
    given = DEFAULTS.with_(lam=0.1, epochs=5, device="cpu", train_limit=256)
    where = saved.run_dir
    assert reconcile(saved, given, {"epochs", "device"}, Voice(), where) == saved.with_(epochs=5, device="cpu")
    # Settings the user did not give are the saved ones, whatever the given config's defaults say.
    assert reconcile(saved, DEFAULTS, {"epochs"}, Voice(), where).lam == 0.1
    with pytest.raises(CenterLossError) as e:
        reconcile(saved, given.with_(lam=0.2, batch_size=64), None, Voice(), where)
    assert "lambda: saved 0.1, given 0.2" in str(e.value) and "batch_size: saved 128, given 64" in str(e.value)
    with pytest.raises(CenterLossError, match=r"\(lam: saved 0.1, given 0.2\); drop those arguments .* overwrite=True"):
        reconcile(saved, given.with_(lam=0.2), None, Voice(python=True), where)


def test_the_resume_command_is_quoted_for_the_shell_or_python():
    config = DEFAULTS.with_(name="my run;rm", output_dir="out dir")
    assert Voice().resume_command(config) == "centerloss train --resume --output-dir 'out dir' --name 'my run;rm'"
    assert Voice(python=True).resume_command(config) == "train(config, resume=True)"
    # a run of a sweep is resumed by its sweep, in the caller's words
    assert Voice(sweep=True).resume_command(config) == "the same sweep command again"
    assert Voice(python=True, sweep=True).resume_command(config) == "the same run_sweep(...) call again"


def test_help_shows_every_setting_its_choices_and_its_default():
    text = CliRunner().invoke(app, ["train", "--help"], terminal_width=200).output
    flat = " ".join(text.split())
    for name, s in SCHEMA.items():
        assert s.flag in text, s.flag
        assert f"[default: {default_text(TrainConfig, name)}]" in flat, name
    assert "--center-update <paper|sgd|caffe>" in text and "--precision <auto|fp32|tf32|bf16>" in text
    sweep = CliRunner().invoke(app, ["sweep", "--help"], terminal_width=200).output
    assert "--name" not in sweep and "--lambda" in sweep and "--lr-milestones" in sweep
    data = CliRunner().invoke(app, ["data", "--help"], terminal_width=200).output
    assert "--dataset <mnist|fashion-mnist>" in data and "--dataset <mnist|fashion-mnist>" in text  # alike


def test_the_options_table_agrees_with_the_schema():
    text = (DOCS / "options.md").read_text()
    table = text[text.index("## `centerloss train`"):text.index("## `centerloss plot")]
    rows = {}
    for line in table.splitlines():
        if line.startswith("| `--"):  # cells split at the pipes that are not escaped, markdown's backticks dropped
            cells = [c.strip().replace("`", "") for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
            rows[re.match(r"(--[a-z-]+)", cells[0]).group(1)] = cells[-1]
    for name, s in SCHEMA.items():
        assert s.flag in rows, f"docs/options.md has no row for {s.flag}"
        assert rows[s.flag] == default_text(TrainConfig, name), (s.flag, rows[s.flag])


def test_slurm_settings_come_from_the_slurm_table_and_flags_win(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('lambda = 0.1\n[slurm]\npartition = "gpu"\ntime_limit = 30\ngpus = 1\n'
                   'sbatch = "--qos=high --exclusive"\n')
    assert resolve_config(cfg).lam == 0.1  # the table is a sweep's; a train reads the rest of the file
    slurm = resolve(cfg, {}, {"time_limit": 60}).slurm
    assert (slurm.partition, slurm.time_limit, slurm.gpus, slurm.cpus) == ("gpu", 60, 1, SLURM_DEFAULTS.cpus)
    assert sbatch_options(slurm.sbatch) == {"qos": "high", "exclusive": True}
    cfg.write_text('[slurm]\ncpus = 0\n')
    with pytest.raises(ConfigError, match=r"cpus = 0 in \[slurm\] of .*c.toml: expected an integer >= 1"):
        resolve(cfg)


def test_a_python_without_submitit_is_one_line_before_anything_changes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sweep, "has_submitit", lambda: False)
    result = CliRunner().invoke(app, ["sweep", "--lambda", "0", "--launcher", "slurm"])
    assert result.exit_code == 2 and "submitit package, which this Python lacks (pip install submitit)" in \
        " ".join(result.output.split()), result.output
    assert not Path("outputs").exists()


@pytest.mark.parametrize("args,message", [
    (["--partition", "gpu"], "--partition is a Slurm setting: give it with --launcher slurm"),
    (["--wait"], "--wait waits for Slurm jobs: give it with --launcher slurm"),
    (["--launcher", "slurm", "--jobs", "2"], "--jobs runs local processes"),
    (["--launcher", "slurm", "--sbatch", "qos=high"], "sbatch = 'qos=high': expected sbatch options of the form --key"),
    (["--launcher", "slurm", "--mem-gb", "0"], "mem_gb = 0.0: expected a number > 0"),
    (["--launcher", "pbs"], "'pbs' is not one of 'local', 'slurm'"),
])
def test_bad_launcher_settings_are_one_line_before_anything_changes(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["sweep", "--lambda", "0", *args])
    assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
    assert not Path("outputs").exists()


def test_built_in_configs_resolve_by_name_and_ship_in_the_package(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ folder here: the name finds the packaged file
    assert resolve_config("paper") == resolve_config(Path(__file__).parent.parent / "configs" / "paper.toml")
    assert resolve_config("quick").train_limit == 15000
    with pytest.raises(ConfigError, match=r"config file papr does not exist \(built-in configs: fast, paper, quick\)"):
        resolve_config("papr")


def test_a_shrunk_config_is_fitted_to_its_run_and_says_so(run_cli, mnist):
    """--config quick on 64 images for 1 epoch is 4 steps: its 50-step warm-up never ended, its 5,000 plot
    samples were more than the training images, and the name said _plot5000; milestones past the end
    never acted, without a word."""
    result = run_cli("train", "--config", "quick", "--lr-schedule", "step", "--lr-milestones", "2,100",
                     *mnist.args, "--train-limit", "64", "--epochs", "1", "--batch-size", "16", "--test-limit", "32",
                     "--plot-dpi", "30", "-q", "--no-plots")  # the samples are clipped for the features saved
    assert result.exit_code == 0, result.output
    assert "warmup = 50 is not shorter than this run's 4 steps, so the rate would never reach lr nor decay: this " \
           "run warms up over 2 steps, half of it" in result.output
    assert "plot_train_samples = 5000 is more than the 64 training images: clipped to 64" in result.output
    assert "lr_milestones 100 fall at or after this run's last step (4)" in result.output
    [run] = Path("outputs").iterdir()
    assert "_plot64_" in run.name and "plot5000" not in run.name
    # The warm-up is halved by the schedule, not in the settings: the run is named by what was asked for
    # (it was saved as 2, so --epochs decided the name, and the same flags with --resume --epochs 3 were refused).
    assert "_warmup50_" in run.name and read_record(run)["warmup"] == 50
    assert read_metrics(run)[0]["lr"] == pytest.approx(0.1 * 0.8)  # warmed up over 2 steps, then milestone 2 passed
    longer = run_cli("train", "--config", "quick", "--lr-schedule", "step", "--lr-milestones", "2,100",
                     *mnist.args, "--train-limit", "64", "--epochs", "3", "--batch-size", "16", "--test-limit", "32",
                     "--plot-dpi", "30", "-q", "--resume", "--no-plots")  # the plots are not this test's
    assert longer.exit_code == 0, longer.output
    assert [p.name for p in Path("outputs").iterdir()] == [run.name] and len(read_metrics(run)) == 3


@pytest.mark.parametrize("flag, value, message", [
    ("--batch-size", "1e3", "batch_size = '1e3': expected an integer"),
    ("--seed", "1.5", "seed = '1.5': expected an integer"),
    ("--epochs", "nan", "epochs = 'nan': expected an integer"),
    ("--lr", "fast", "lr = 'fast': expected a number"),
])
def test_a_flag_of_the_wrong_kind_is_refused_naming_the_value_given(run_cli, flag, value, message):
    """typer refused these before the schema saw them, with 'unable to parse string as an integer', naming no value."""
    result = run_cli("train", flag, value)
    assert result.exit_code == 2 and result.output.strip() == f"Error: {message}", result.output


def test_minus_zero_is_zero_and_trains_in_lambda_zeros_folder():
    """`--lambda -0` made a folder of its own, lambda-0_..., beside softmax alone's lambda0_..."""
    assert resolve_config(None, {"lam": "-0"}).run_name == resolve_config(None, {"lam": -0.0}).run_name == \
        "lambda0_alpha0.5_seed0"


def test_a_config_file_with_a_bom_is_refused_naming_it(tmp_path):
    """A file saved by an editor that adds a byte-order mark was refused as 'Invalid statement (at line 1,
    column 1)', naming nothing a user could act on."""
    path = tmp_path / "mine.toml"
    path.write_bytes("\ufefflambda = 0.1\n".encode())
    with pytest.raises(ConfigError, match=r"mine.toml starts with a byte-order mark \(BOM\), which TOML does not "
                                          "allow: save it as UTF-8 without one"):
        resolve_config(path)
