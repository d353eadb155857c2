"""Experiments as runs: a notebook executed with parameters into runs/<notebook>/<run id>/.

- ``notebook``: jupytext -> papermill, parameter defaults and presets, the code fingerprint, the run record,
  and ``execute``, the one place a notebook is executed (the book and the sweeps both call it);
- ``provenance``: the one provenance record every kind of run carries;
- ``sweep``: a notebook over a grid of parameters (``coarsecrop sweep params/sweeps/NAME.yaml``).

The run id is ``coarsecrop.params.run_id_of`` of the effective parameters. This floor sits above the engines
(crops, ssl, train, evaluate) and below the studies and the book: it imports neither.
"""
