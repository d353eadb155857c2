# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # The paper's claims, counted
#
# Each table chapter checks the paper's claims ("a beats b") against every source of runs: this build's
# sweeps and the committed reference results. This page gathers the verdicts of all chapters, as the chapters
# computed them in this build (their `metrics.json`), and counts per source and measure how many claims are
# **decided**: with at least three seeds per row, our difference is larger than twice its standard error over
# seeds, in the paper's direction ("agrees") or against it ("disagrees"). A claim within the noise is not
# evidence either way; a claim on one or two seeds per row only gives a direction (two seeds estimate the
# spread too poorly: on scenes v3 a third seed overturned several of the two-seed verdicts it was run for).
# The row "either measure" counts a claim once when it is decided on the object probe, on mAP^l or on both
# ("split" when one measure agrees and the other disagrees). The counts are what the landing page quotes,
# and so are the table chapters' row means and claim differences it cites: this page glues them from the
# chapters' numbers (`coarsecrop.studies.chapters.quoted_numbers`), so the landing page follows the results.
# Some tables repeat a comparison on the same runs (BYOL's Image- and Our-Crop rows are in Tables 1, 2 and
# 15; Table 11's s0 and s2 are Table 1's BYOL Image and Grid): each chapter checks the claim of its own
# table, so such a claim is counted once per table. The column "distinct" counts the decided claims again
# with each comparison of the same runs once: the evidence, as opposed to the paper's list of claims.
#
# The rule is the issue's, and it is a loose one. With three seeds per row, a difference beyond twice its
# standard error is Welch's t beyond 2 at about four degrees of freedom: where two rows do not differ at all,
# it still decides 11.5% of claims (8.1% with five seeds per row; `coarsecrop.studies.claims.chance_rate`
# simulates it). The column "by chance" sums that rate over the claims with runs: about that many of the
# decided claims would be there if no crop strategy differed from another, half of them "agreeing" with the
# paper and half not. On either measure the sum treats the two measures as independent, so it over-counts
# (they are read from the same trunks). A count well above it is evidence that some rows differ; which
# claims are the chance ones, the count cannot say.
#
# The sources differ in what they can show. `cpu-full` is the remake on scenes v3, where the class is the
# shape and a trunk must learn it (chapter "The built-in benchmark"); every table sweep is there, and each
# chapter says how many of its runs are. `cpu-full-v1` holds the first reference results, on the
# v1 scenes where colour alone names the class, so a random network already separates the classes and most
# differences there are small.

# %% tags=["hide-input"]
from IPython.display import Markdown, display
from myst_nb import glue

from coarsecrop.studies import chapters as T
from coarsecrop.params import load_notebook_params

_before = set(globals())

# %% tags=["parameters"]
runs_preset = "quick"  # the preset of this build's sweep runs (make book runs the sweeps at its preset)
reference_presets = ["cpu-full", "gpu", "cpu-full-v1"]  # committed results (results/<preset>/, where it exists)
measure = "linear"  # linear | knn: the object probe the chapters checked the claims on (their own parameter)
out = None  # run folder (set by coarsecrop.book)
preset = ""  # preset file (set by coarsecrop.book)

# %% tags=["hide-input"]
params = load_notebook_params(T.ChapterParams, globals(), _before,
                              source=preset or "notebooks/18_claims.py")
latest = T.latest_chapters(params.runs_preset, params.measure)  # each table chapter's latest run, read once
overview = T.claims_overview(latest, params.measure)
counts = T.claim_counts(overview)
chapters = sorted(set(overview["sweep"])) if len(overview) else []
display(Markdown(f"Read the claims of {len(chapters)} of {len(T.TABLE_SWEEPS)} table chapters "
                 f"({', '.join(chapters) or 'none'}), run with this build's preset `{params.runs_preset}` and "
                 f"checked on the object probe's {T.LABELS[params.measure]}."))
for preset_name in T.committed_presets(params.reference_presets):
    sentence = T.count_sentence(counts, f"reference ({preset_name})")
    glue(f"count_{preset_name.replace('-', '_')}", sentence, display=False)
    display(Markdown(f"- **reference ({preset_name})**: {sentence}."))
display(Markdown(f"- **this build ({params.runs_preset})**: "
                 f"{T.count_sentence(counts, f'this build ({params.runs_preset})')}."))
# the numbers the landing page quotes (T.quoted_numbers), pasted there by key: it follows the results
for preset_name in T.committed_presets(params.reference_presets):
    for key, text in T.quoted_numbers(latest, preset_name, params.measure).items():
        glue(key, text, display=False)

# %% [markdown]
# ## Per source and measure

# %%
counts.set_index(["source", "measure"]) if len(counts) else counts

# %% [markdown]
# ## Every claim
#
# One row per chapter and claim; a column per source and measure with its verdict.

# %%
(overview.assign(column=overview["source"] + ", " + overview["measure"])
 .pivot_table(index=["sweep", "claim"], columns="column", values="verdict", aggfunc="first", sort=False)
 if len(overview) else overview)

# %% tags=["hide-input"]
T.write_claims_metrics(overview, counts, params);
