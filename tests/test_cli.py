"""The command line's book and tables subcommands, and their python -m aliases."""

from __future__ import annotations

import subprocess
import sys

from coarsecrop.cli import build_parser, main


def test_book_and_tables_subcommands_parse():
    args = build_parser().parse_args(["book", "run", "--preset", "smoke", "--notebook", "01_crops", "--force"])
    assert (args.book_command, args.preset, args.notebook, args.force, args.all) == ("run", "smoke", ["01_crops"],
                                                                                      True, False)
    args = build_parser().parse_args(["book", "build", "--root", "elsewhere"])
    assert (args.book_command, args.root) == ("build", "elsewhere")
    args = build_parser().parse_args(["tables", "export", "--from", "/other/checkout"])
    assert (args.tables_command, args.preset, args.source) == ("export", "cpu-full", "/other/checkout")


def test_tables_export_of_an_unknown_preset_fails_cleanly(capsys):
    assert main(["tables", "export", "--preset", "no_such_preset"]) == 2
    assert "no_such_preset" in capsys.readouterr().err


def test_tables_export_names_a_source_without_runs(tmp_path, monkeypatch, capsys):
    """A mistyped --from copies nothing; the command says which folder it looked for, not only "0 runs"."""
    monkeypatch.setattr("coarsecrop.studies.results.export_results", lambda preset, source: [])
    assert main(["tables", "export", "--preset", "smoke", "--from", str(tmp_path / "typo")]) == 0
    out = capsys.readouterr().out
    assert f"{tmp_path / 'typo' / 'runs'} does not exist: nothing copied" in out
    (tmp_path / "typo" / "runs").mkdir(parents=True)
    assert main(["tables", "export", "--preset", "smoke", "--from", str(tmp_path / "typo")]) == 0
    assert "0 complete run(s) copied from" in capsys.readouterr().out


def test_book_run_of_a_mistyped_notebook_runs_nothing_and_lists_the_notebooks(monkeypatch, capsys):
    ran = []
    monkeypatch.setattr("coarsecrop.book.run_notebook", lambda *args, **kwargs: ran.append(args))
    assert main(["book", "run", "--preset", "smoke", "--notebook", "01_crops", "--notebook", "01_crop"]) == 2
    err = capsys.readouterr().err
    assert ran == [] and "no notebook 01_crop under" in err and "one of: 01_crops, 02_pretrain" in err


def test_python_m_alias():
    """`python -m coarsecrop.book` stays (issue 12); `coarsecrop tables export` is the tables' only entry."""
    for module, words in (("coarsecrop.book", ["run", "--help"]),):
        out = subprocess.run([sys.executable, "-m", module, *words], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and "--preset" in out.stdout, out.stderr


def test_ctrl_c_is_one_line_saying_how_to_continue(monkeypatch, capsys):
    import coarsecrop.crops.job as job

    def interrupted(**kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(job, "run_crop_job", interrupted)
    assert main(["crops", "--scenes", "x", "--out", "y", "--strategy", "grid"]) == 130
    err = capsys.readouterr().err
    assert err == "coarsecrop crops: interrupted; the same command again continues the job from its last written shard\n"
