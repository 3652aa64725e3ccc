"""A row's verdict: the metrics and their statistics, slices, non-finite values, task checks, value
ranges against a precision's limits, the row results and the run record every report starts with."""
