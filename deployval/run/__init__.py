"""Running rows: the session a command holds (model, inputs, reference, artifacts), each backend's
execution (in this process, isolated, or on Ray), golden outputs, batch invariance, dataset runs, the
fp16 range findings around a run, the compare pipeline that puts them together, and suites of runs."""
