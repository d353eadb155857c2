"""The book's tables (coarsecrop.studies.chapters): claims checked against runs, chapters read sweeps, and
the committed reference results still match the sweep definitions that claim them."""

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from conftest import copy_book_sources

from coarsecrop.studies import chapters as T

BETTER, WORSE = T.Row("a", {"strategy": "ours"}, {"crops": "ours"}), T.Row("b", {"strategy": "image"}, {"crops": "image"})
CLAIM = T.Claim("ours > image", BETTER, WORSE, "table2", "mAP_linear")  # paper: 42.5 - 39.8 = +2.7


def runs(ours, image):
    rows = [{"strategy": "ours", "linear": v} for v in ours] + [{"strategy": "image", "linear": v} for v in image]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("ours,image,verdict", [
    ([0.90, 0.91, 0.92], [0.80, 0.81, 0.82], "agrees"),
    ([0.80, 0.81, 0.82], [0.90, 0.91, 0.92], "disagrees"),
    ([0.90, 0.80, 0.95], [0.88, 0.93, 0.82], "same direction, within noise"),
    ([0.85], [0.86], "opposite direction (one seed)"),  # one seed: the spread is unknown
    ([0.90], [0.80], "same direction (one seed)"),
    # two seeds: far beyond twice the standard error, but two seeds do not decide (MIN_SEEDS = 3)
    ([0.90, 0.91], [0.80, 0.81], "same direction (two seeds)"),
    ([0.80, 0.81, 0.82], [0.90, 0.91], "opposite direction (two seeds)"),
    ([], [0.80], "no runs"),
])
def test_claim_verdicts(ours, image, verdict):
    checked = T.check_claim(CLAIM, runs(ours, image))
    assert checked["verdict"] == verdict
    assert checked["paper Δ (paper's units)"] == pytest.approx(42.5 - 39.8)
    if ours:
        assert checked["ours Δ"] == pytest.approx((sum(ours) / len(ours) - sum(image) / len(image)) * 100)


def test_summary_is_mean_and_sd_over_seeds_and_side_by_side_labels_the_paper():
    df = runs([0.9, 0.8], [0.7, 0.71])
    df["objectness"], df["knn"], df["gain_linear"] = 0.5, 0.6, 0.1
    summary = T.summarise(df, [BETTER, WORSE])
    assert summary.loc[0, "seeds"] == 2 and summary.loc[0, "linear"] == pytest.approx(0.85)
    assert summary.loc[0, "linear_sd"] == pytest.approx(0.0707, abs=1e-3)
    one = T.summarise(runs([0.9], [0.7]), [BETTER])
    assert one.loc[0, "seeds"] == 1 and math.isnan(one.loc[0, "linear_sd"])
    table = T.side_by_side({"this build (quick)": summary}, [BETTER, WORSE], "table2", ["mAP_linear"])
    assert table.loc["a", "paper mAP_linear"] == "42.5" and table.loc["b", "paper mAP_linear"] == "39.8"
    no_paper = T.side_by_side({"x": summary}, [T.Row("a", {"strategy": "ours"}, None)], "table2", ["mAP_linear"])
    assert no_paper.loc["a", "paper mAP_linear"] == "–"
    assert table.loc["a", "this build (quick): linear top-1"] == "85.0 ± 7.1"
    text = T.verdict_paragraph(T.claims_table([CLAIM], df), "this build (quick)")  # two seeds: a direction only
    assert "1 same direction (two seeds)" in text and "With fewer than 3 seeds per row" in text
    three = runs([0.9, 0.8, 0.85], [0.7, 0.71, 0.72])
    text = T.verdict_paragraph(T.claims_table([CLAIM], three), "this build (quick)")
    assert "of 1 claim: 1 agrees" in text and "Borne out beyond the spread over seeds: ours > image" in text


@pytest.mark.slow
def test_chapter_reads_its_sweep_runs(smoke_book):
    """notebooks/15_random_resized_crop.py after the table15 sweep ran at the smoke preset (conftest)."""
    run = next((smoke_book / "runs" / "15_random_resized_crop").glob("*/metrics.json"))
    metrics = json.loads(run.read_text())
    build, init = metrics["summaries"]["this build (smoke)"][:-1], metrics["summaries"]["this build (smoke)"][-1]
    assert [r["row"] for r in build] == ["Image", "Image w/o RRC", "Our (coarse)", "Our (coarse) w/o RRC",
                                         "Our (literal)", "Our (literal) w/o RRC"]
    assert init["row"] == T.INIT_ROW
    assert "6 of 6 runs complete" in metrics["headers"]["this build (smoke)"]
    assert all(r["seeds"] == 1 for r in build)
    # the very numbers of the sweep's six runs (read here from their metrics.json, not through the chapter's
    # reader): the final kNN probe and the crops' objectness of each trunk, and the mAP^l (percent there,
    # fractions here) of its transfer run and of the random init's
    pretrain = {}
    for rid in {p["run_id"] for p in T.sweep_points("table15", "smoke", smoke_book)}:
        m = json.loads((smoke_book / "runs" / T.NOTEBOOK / rid / "metrics.json").read_text())
        pretrain[rid] = (m["metrics"]["probe_knn_top1"], m["crops"]["objectness"])
    mapl, init_mapl = {}, []
    for folder in (smoke_book / "runs" / T.TRANSFER_NOTEBOOK).glob("*/metrics.json"):
        if json.loads((folder.parent / "run.json").read_text()).get("sweep") != "params/sweeps/transfer.yaml":
            continue  # another notebook's run in the same root, not the transfer sweep's
        m = json.loads(folder.read_text())
        trunk = (m["params"].get("checkpoints") or {}).get("pretrained")
        row = "pretrained" if trunk else "random"
        value = m["tasks"]["linear"]["rows"][row]["summary"]["mAP_l"]["mean"] / 100
        if trunk:
            mapl[Path(trunk).parts[2]] = value
        else:
            init_mapl.append(value)
    assert len(pretrain) == 6 and set(pretrain) <= set(mapl)
    assert sorted((r["knn"], r["objectness"], r["mAP_l"]) for r in build) == [
        pytest.approx(values) for values in sorted((*pretrain[rid], mapl[rid]) for rid in pretrain)]
    assert len(init_mapl) == 1 and init["mAP_l"] == pytest.approx(init_mapl[0])
    verdicts = {c["verdict"] for c in metrics["claims"]["this build (smoke)"]}
    assert verdicts and "no runs" not in verdicts
    # the claims on mAP^l, and the random-init level
    assert {c["measure"] for c in metrics["claims_mAP_l"]["this build (smoke)"]} == {"mAP^l"}
    assert [r["seed"] for r in metrics["init_mAP_l"]["this build (smoke)"]] == [0]
    page = (smoke_book / "book" / "generated" / "15_random_resized_crop.ipynb").read_text()
    assert "paper AP50_bbox" in page and "63.3" in page  # the paper's Table 15, labelled


def test_every_table_sweep_has_a_chapter_and_a_cpu_full_grid(project_root):
    from coarsecrop.runs.sweep import read_sweep

    chapters = " ".join(p.read_text() for p in (project_root / "notebooks").glob("1[0-9]_*.py"))
    for sweep in T.TABLE_SWEEPS:
        spec = read_sweep(project_root / "params" / "sweeps" / f"{sweep}.yaml")
        assert spec["notebook"] == T.NOTEBOOK and {"quick", "cpu-full"} <= set(spec["presets"])
        assert f'T.chapter("{sweep}"' in chapters, f"no chapter reads {sweep}"


def test_committed_results_are_points_of_the_current_sweep_definitions(project_root):
    """Every committed run must be one the sweep files still produce at its preset (same parameters,
    hence the same run id), with the measures the chapters show."""
    presets = [p.name for p in (project_root / "results").iterdir() if p.is_dir()] \
        if (project_root / "results").is_dir() else []
    for preset in presets:
        expected = {p["run_id"] for s in T.TABLE_SWEEPS for p in T.sweep_points(s, preset, project_root)}
        committed = T.committed_run_ids(preset, project_root)
        stale = sorted(set(committed) - expected)
        assert not stale, (f"results/{preset}/ holds runs no sweep definition produces any more: {stale}; "
                           f"rerun `coarsecrop sweep params/sweeps/tableN.yaml --preset {preset}` and "
                           f"`coarsecrop tables export --preset {preset}`, or remove them")
        for rid in committed:
            folder = T.results_dir(preset, project_root) / rid
            assert T.recomputed_run_id(folder) == rid, f"{folder}: run.json's parameters hash to another id"
            run = T.read_run(folder)
            assert run is not None, f"{folder}: not a complete run (metrics.json + run.json status ok)"
            assert run["metrics"]["crops"]["objectness"] is not None
            assert 0 <= run["metrics"]["metrics"]["probe_linear_top1"] <= 1
            assert not any(p.suffix in (".pt", ".ipynb") for p in folder.iterdir())  # small files only
        expected = {p["run_id"] for p in T.transfer_points(preset, project_root)}
        committed = T.committed_run_ids(preset, project_root, T.TRANSFER_NOTEBOOK)
        stale = sorted(set(committed) - expected)
        assert not stale, (f"results/{preset}/{T.TRANSFER_NOTEBOOK} holds runs the transfer sweep no longer "
                           f"produces: {stale}")
        for rid in committed:
            folder = T.results_dir(preset, project_root, T.TRANSFER_NOTEBOOK) / rid
            assert T.recomputed_run_id(folder) == rid, f"{folder}: run.json's parameters hash to another id"
            run = T.read_run(folder)
            assert run is not None and all(0 <= value <= 100 for value in _headlines(run["metrics"]))
            assert not any(p.suffix in (".pt", ".ipynb") for p in folder.iterdir())


def test_the_committed_runs_give_each_row_its_init_and_best_reading(project_root):
    """collect reads, beside a run's final probe, the same trunk's probe before training and the best reading
    of the trainer's monitor (what the landing page quotes of BYOL's GT-Crop): the best is never below the
    final reading, and the init is the one the run's gain was taken from."""
    df = T.collect("table1", "cpu-full", source="reference", root=project_root)
    assert len(df) and df[["init_linear", "best_linear", "init_knn", "best_knn"]].notna().all().all()
    assert (df["best_linear"] >= df["linear"] - 1e-9).all() and (df["best_knn"] >= df["knn"] - 1e-9).all()
    assert ((df["init_linear"] > 0.05) & (df["init_linear"] < df["best_linear"] + 0.1)).all()
    gt = T.summarise(df, [T.Row("BYOL GT", {"method": "byol", "strategy": "gt"})]).iloc[0]
    assert gt["init_linear_n"] == gt["seeds"] >= 3 and gt["poor_n"] == gt["seeds"]


def test_a_row_that_several_tables_share_has_the_same_seeds_in_each(project_root):
    """A pretraining configuration (every parameter but the seed) that two table sweeps plan at cpu-full is
    one row read twice: both must plan it at the same seeds, or the same row shows another mean in each
    chapter (Table 10 once read BYOL's coarse Our-Crop at three seeds where Table 1 read it at four)."""
    seeds: dict[str, dict[str, set]] = {}
    for sweep in T.TABLE_SWEEPS:
        for point in T.sweep_points(sweep, "cpu-full", project_root):
            config = json.dumps({k: v for k, v in point["params"].items() if k != "seed"}, sort_keys=True)
            seeds.setdefault(config, {}).setdefault(sweep, set()).add(point["params"]["seed"])
    for config, per_sweep in seeds.items():
        if len({frozenset(s) for s in per_sweep.values()}) > 1:
            pytest.fail(f"one configuration, other seeds per table sweep: {sorted((k, sorted(v)) for k, v in per_sweep.items())}; "
                        f"give the sweeps the same cpu-full seeds (extra_points) for {config}")


def test_export_re_points_runs_committed_before_a_sweep_gained_points(tmp_path):
    """A point added to a sweep moves the indices after it (the transfer sweep's above all): export must
    rewrite the rerun command of every committed run, not only of those it copies, and leave its numbers."""
    root = copy_book_sources(tmp_path / "project")
    point = T.sweep_points("table15", "smoke", root)[1]
    folder = T.results_dir("smoke", root) / point["run_id"]
    folder.mkdir(parents=True)
    stale = {"run_id": point["run_id"], "parameters": point["params"], "status": "ok", "sweep": "params/sweeps/table15.yaml",
             "point": 99, "rerun": "coarsecrop sweep params/sweeps/table15.yaml --preset smoke --point 99"}
    (folder / "run.json").write_text(json.dumps(stale))
    (folder / "metrics.json").write_text('{"kept": true}')
    assert T.export_results("smoke", tmp_path / "nothing here", root) == []  # nothing to copy ...
    record = json.loads((folder / "run.json").read_text())  # ... but the committed run is re-pointed
    planned = T.sweep_points(Path(record["sweep"]).stem, "smoke", root)[record["point"]]
    assert planned["run_id"] == point["run_id"] and record["point"] != 99
    assert record["rerun"] == f"coarsecrop sweep {record['sweep']} --preset smoke --point {record['point']}"
    assert record["parameters"] == point["params"] and json.loads((folder / "metrics.json").read_text()) == {"kept": True}


def _headlines(metrics: dict) -> list[float]:
    """Every task's headline (mean over seeds, %) of every row of a transfer run."""
    return [row["summary"][record["headline"]]["mean"] for record in metrics["tasks"].values()
            for row in record["rows"].values()]


def test_every_committed_run_says_how_to_rerun_it_from_the_repository(project_root):
    """run.json names a sweep file of the repository and the point that makes the run (--point K), so a
    committed number can be remade from the repository alone; the sweep that first made it may be gone."""
    for preset in [p.name for p in (project_root / "results").iterdir() if p.is_dir()]:
        plans = {}
        for notebook in (T.NOTEBOOK, T.TRANSFER_NOTEBOOK):
            for rid in T.committed_run_ids(preset, project_root, notebook):
                record = json.loads((T.results_dir(preset, project_root, notebook) / rid / "run.json").read_text())
                sweep = project_root / record["sweep"]
                assert sweep.is_file(), f"{rid}: run.json names {record['sweep']}, not in the repository"
                if sweep.stem not in plans:
                    plans[sweep.stem] = T.sweep_points(sweep.stem, preset, project_root)
                assert plans[sweep.stem][record["point"]]["run_id"] == rid, (rid, record["rerun"])
                assert record["rerun"] == f"coarsecrop sweep {record['sweep']} --preset {preset} --point {record['point']}"


def _chapter_metrics(root, notebook, run, sweep, runs_preset, verdicts, transfer=None):
    """A chapter's metrics.json as show_claims writes it: claims per source (and on mAP^l where given)."""
    def table(vs):
        return [{"claim": f"c{i}", "verdict": v, "ours Δ": 1.0, "± 2 SE": 0.5,
                 "seeds": 0 if v == "no runs" else 1 if "one seed" in v else 2 if "two seeds" in v else 3}
                for i, v in enumerate(vs)]
    folder = root / "runs" / notebook / run
    folder.mkdir(parents=True)
    record = {"sweep": sweep, "params": {"runs_preset": runs_preset, "measure": "linear"},
              "claims": {source: table(vs) for source, vs in verdicts.items()},
              "claims_mAP_l": {source: table(vs) for source, vs in (transfer or {}).items()}}
    (folder / "metrics.json").write_text(json.dumps(record))
    return folder / "metrics.json"


def test_the_claims_of_every_chapter_are_counted_from_their_latest_run_at_the_preset(tmp_path):
    import os

    ref = "reference (cpu-full)"
    old = _chapter_metrics(tmp_path, "10_table1", "old", "table1", "quick", {ref: ["disagrees", "disagrees"]})
    os.utime(old, (1, 1))  # an earlier run of the same chapter: replaced by the newer one
    _chapter_metrics(tmp_path, "10_table1", "new", "table1", "quick", {ref: ["agrees", "same direction, within noise"]},
                     transfer={ref: ["disagrees", "no runs"]})
    _chapter_metrics(tmp_path, "16_budget", "a", "table10", "quick", {ref: ["agrees", "same direction (two seeds)"]})
    _chapter_metrics(tmp_path, "16_budget", "b", "table10", "smoke", {ref: ["disagrees", "disagrees"]})  # other preset
    knn = _chapter_metrics(tmp_path, "11_objectness", "k", "table2", "quick", {ref: ["disagrees"]})
    knn.write_text(knn.read_text().replace('"linear"', '"knn"'))  # checked on another measure: left out
    overview = T.claims_overview(T.latest_chapters("quick", "linear", tmp_path))
    assert sorted(set(overview["sweep"])) == ["table1", "table10"]
    counts = T.claim_counts(overview).set_index(["source", "measure"])
    probe, mapl = counts.loc[(ref, "object probe (linear top-1)")], counts.loc[(ref, "mAP^l")]
    assert (probe["claims"], probe["with runs"], probe["agrees"], probe["disagrees"], probe["decided"]) == (4, 4, 2, 0, 2)
    assert (probe["within noise"], probe["too few seeds"]) == (1, 1)
    # table10 has no mAP^l runs: its claims count as "no runs" there, so both measures count 4 claims
    assert (mapl["claims"], mapl["with runs"], mapl["decided"], mapl["disagrees"]) == (4, 1, 1, 1)
    # on either measure: table1 c0 agrees on the probe and disagrees on mAP^l (split), table10 c0 agrees
    either = counts.loc[(ref, T.EITHER)]
    assert (either["claims"], either["with runs"], either["decided"]) == (4, 4, 2)
    assert (either["agrees"], either["disagrees"], either["split"]) == (1, 0, 1)
    # by chance: 3 + 3 seeds decide 11.5% of claims with nothing to find (chance_rate); two seeds decide nothing
    rate = T.chance_rate(3, 3)
    assert rate == pytest.approx(0.115, abs=0.002) and T.chance_rate(2, 3) == 0.0
    assert T.chance_rate(5, 5) == pytest.approx(0.081, abs=0.002) and T.chance_rate(3, 3) == rate  # seeded
    assert probe["by chance"] == round(3 * rate, 1) and mapl["by chance"] == round(rate, 1)
    assert either["by chance"] == round(1 - (1 - rate) ** 2 + 2 * rate, 1)  # table1 c0 on both measures
    sentence = T.count_sentence(T.claim_counts(overview), ref)
    assert sentence.startswith("of 4 claims, 4 have runs; decided beyond twice the standard error: 2 on the object "
                               "probe (linear top-1) (2 agree, 0 disagree), 1 on mAP^l (0 agree, 1 disagree) and 2 "
                               "on either measure (1 agree, 0 disagree, 1 split). If no row differed from another, "
                               "chance alone would decide about 0.3 on the object probe (linear top-1), 0.1 on "
                               "mAP^l and at most 0.4 on either measure")
    assert T.count_sentence(T.claim_counts(overview), "reference (gpu)").endswith("no chapter has checked its claims yet")


def test_a_comparison_that_two_tables_share_is_one_distinct_comparison(tmp_path):
    """Tables 1 and 2 both claim BYOL Our-Crop > Image-Crop on the same runs: both chapters count it, the
    landing page's sentence adds how many distinct comparisons the decided claims are."""
    df = runs([0.9, 0.91, 0.92], [0.8, 0.81, 0.82]).assign(run_id=[f"r{i}" for i in range(6)])
    checked = T.check_claim(CLAIM, df)
    assert checked["comparison"] == "r0,r1,r2>r3,r4,r5" and T.check_claim(CLAIM, runs([0.9], [0.8]))["comparison"] == ""
    ref = "reference (cpu-full)"
    for notebook, sweep in (("10_table1", "table1"), ("11_objectness", "table2")):
        path = _chapter_metrics(tmp_path, notebook, "a", sweep, "quick", {ref: ["agrees", "disagrees"]},
                                transfer={ref: ["agrees", "no runs"]})
        record = json.loads(path.read_text())
        for table in (record["claims"][ref], record["claims_mAP_l"][ref]):
            table[0]["comparison"] = "r0,r1,r2>r3,r4,r5"  # c0: the same runs in both tables
            table[1]["comparison"] = f"{sweep}-own>x"  # c1: rows of this table only
        path.write_text(json.dumps(record))
    overview = T.claims_overview(T.latest_chapters("quick", "linear", tmp_path))
    counts = T.claim_counts(overview).set_index(["source", "measure"])
    either = counts.loc[(ref, T.EITHER)]
    assert (either["decided"], either["distinct"]) == (4, 3)
    assert (counts.loc[(ref, "mAP^l"), "decided"], counts.loc[(ref, "mAP^l"), "distinct"]) == (2, 1)
    assert ("; 3 distinct comparisons among the 4 (claims that several tables make about the same runs counted "
            "once). If no row") in T.count_sentence(counts.reset_index(), ref)


def test_the_landing_page_quotes_each_chapters_numbers_by_a_key_named_after_the_row_or_claim(tmp_path):
    """book/intro.md pastes its results from 18_claims' glue (quoted_numbers): a row's mean and spread in
    percent, a claim's difference with twice its standard error and its verdict, per measure; nothing for a
    measure without runs or another source."""
    ref = "reference (cpu-full)"
    path = _chapter_metrics(tmp_path, "11_objectness", "a", "table2", "quick", {ref: ["agrees"]},
                            transfer={ref: ["opposite direction, within noise"]})
    record = json.loads(path.read_text())
    record["claims"][ref][0].update({"claim": "GTPad > GT", "ours Δ": 3.74, "± 2 SE": 3.86})
    record["claims_mAP_l"][ref][0].update({"claim": "GTPad > GT", "ours Δ": -0.34, "± 2 SE": 1.84})
    record["summaries"] = {ref: [{"row": "Our (literal)", "linear": 0.25, "linear_n": 3, "linear_sd": 0.0123,
                                  "init_linear": 0.1856, "init_linear_n": 3, "best_linear": 0.2612, "best_linear_n": 3,
                                  "init_knn": 0.14, "init_knn_n": 3, "poor": 0.136, "poor_n": 3, "precise": None,
                                  "precise_n": 0, "median_side": 23.3, "median_side_n": 3,
                                  "mAP_l": None, "mAP_l_n": 0, "objectness": 0.391, "objectness_n": 3, "seeds": 3}]}
    path.write_text(json.dumps(record))
    quoted = T.quoted_numbers(T.latest_chapters("quick", root=tmp_path), "cpu-full")
    assert quoted == {"cpu_full_table2_our_literal_probe": "25.0", "cpu_full_table2_our_literal_probe_sd": "1.2",
                      "cpu_full_table2_our_literal_probe_init": "18.6", "cpu_full_table2_our_literal_probe_best": "26.1",
                      "cpu_full_table2_our_literal_poor": "14", "cpu_full_table2_our_literal_median_side": "23",
                      "cpu_full_table2_our_literal_objectness": "39", "cpu_full_table2_our_literal_seeds": "3",
                      "cpu_full_table2_gtpad_vs_gt_probe": "+3.7 ± 3.9", "cpu_full_table2_gtpad_vs_gt_probe_abs": "3.7",
                      "cpu_full_table2_gtpad_vs_gt_probe_verdict": "agrees",
                      "cpu_full_table2_gtpad_vs_gt_mapl": "-0.3 ± 1.8", "cpu_full_table2_gtpad_vs_gt_mapl_abs": "0.3",
                      "cpu_full_table2_gtpad_vs_gt_mapl_verdict": "opposite direction, within noise",
                      "cpu_full_probe": "linear top-1"}
    # the kNN probe quotes the kNN init (and no best reading, which this row lacks)
    knn = T.quoted_numbers(T.latest_chapters("quick", root=tmp_path), "cpu-full", measure="knn")
    assert knn["cpu_full_table2_our_literal_probe_init"] == "14.0" and "cpu_full_table2_our_literal_probe_best" not in knn
    # no chapter checked that source
    assert T.quoted_numbers(T.latest_chapters("quick", root=tmp_path), "cpu-full-v1") == {}
    assert T.quoted_numbers(T.latest_chapters("smoke", root=tmp_path), "cpu-full") == {}  # nor at that build preset
    assert T.glue_key("cpu-full", "table11", "s5 Our (coarse), random phi > s4 Random boxes", "mapl") == \
        "cpu_full_table11_s5_our_coarse_random_phi_vs_s4_random_boxes_mapl"


def test_a_source_line_names_the_built_in_scenes_its_runs_train_on():
    """Two reference sources can hold the same sweep on different scene generators: the header says which."""
    empty = pd.DataFrame(columns=["commit", "date", "code"])
    v3 = [{"run_id": "a", "params": {"scenes": None, "scene_version": 3}}]
    v1 = [{"run_id": "b", "params": {"scenes": None}}]  # runs made before scene_version existed: v1
    real = [{"run_id": "c", "params": {"scenes": "data/voc", "scene_version": 1}}]
    assert "built-in scenes v3): 0 of 1 runs" in T.source_line(empty, v3, "cpu-full", "reference")
    assert "built-in scenes v1): 0 of 1 runs" in T.source_line(empty, v1, "cpu-full-v1", "reference")
    assert "built-in" not in T.source_line(empty, real, "voc07", "build")
    # a table sweep this build did not run (make book runs Table 1's) says how to run it
    missing = T.source_line(empty, [{**v1[0], "sweep": "table2"}], "quick", "build")
    assert "this build did not run this sweep: `coarsecrop sweep params/sweeps/table2.yaml --preset quick`" in missing
    assert "`make book TABLES=all` every table's" in missing
    assert "`make book PRESET=smoke TABLES=all`" in T.source_line(empty, [{**v1[0], "sweep": "table2"}], "smoke", "build")
    assert "did not run" not in T.source_line(empty, [{**v1[0], "sweep": "table2"}], "cpu-full", "reference")
