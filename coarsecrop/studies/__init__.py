"""Studies: what the notebooks call, above the engines (crops, ssl, train, evaluate) and the runs.

- ``crops``: the crop study of notebooks/01_crops.py (Table 2, Figs. 1, 3 and 4);
- ``pretrain``: notebooks/02_pretrain.py: scenes -> crops -> the trainer as a subprocess -> curves, metrics;
- ``transfer``: notebooks/03_transfer.py and ``coarsecrop evaluate``: transfer tasks over seeds beside a
  random init, their tables and figures;
- ``chapters``: the book's table chapters (notebooks/1N_*.py), on ``results`` (the table sweeps' runs read
  back) and ``claims`` (summaries over seeds, the paper's claims checked);
- ``reference``: the paper's tables, read once; ``figures``: saving and showing a figure.

No engine imports a study; the studies import the engines and ``coarsecrop.runs``.
"""
