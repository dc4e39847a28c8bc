"""Logs a run already has (TensorBoard event files, CSV) converted into a run directory.

``lrtui import tensorboard LOGDIR RUN_DIR`` and ``lrtui import csv FILE RUN_DIR`` (``command``);
``names`` maps scalar names to step fields, ``run`` builds the events and writes them through
``lrtui.runlog``, ``tensorboard`` and ``csv_file`` read the two sources. Never imports torch;
TensorBoard's reader is the optional extra ``lrtui[tensorboard]``, imported only when used.
"""
