"""The benchmarks of dgmjax: modules by job, and two thin command lines.

* :mod:`benchmarks.cases`: what is measured (Burda's models, the training cases, Table 1's rows,
  the data) and its analytic matmul FLOPs;
* :mod:`benchmarks.agreement`: dgmjax against the PyTorch peer (:mod:`benchmarks.torch_peer`),
  same weights and same noise, before anything is timed;
* :mod:`benchmarks.timing`: the one timing implementation (timed loops, the machine's matmul
  rate, sides timed in interleaved repetitions, peak memory, the jitted and fused training steps);
* :mod:`benchmarks.timebox`: budgets, per-section alarms and the watchdog of the device suite;
* :mod:`benchmarks.report`: JSON (atomic, JSON-safe) and the printed / markdown reports;
* :mod:`benchmarks.peer_cases`: the CPU cases of ``bench.py`` beside PyTorch;
* :mod:`benchmarks.environment`, :mod:`benchmarks.device_table`, :mod:`benchmarks.protocol`: the
  sections of the device suite (environment and rates; the training table and the k=5000
  evaluation; steps fused per dispatch and Table 1's rows trained together).

Command lines: ``benchmarks/bench.py`` (CPU, beside PyTorch) and ``benchmarks/device_suite.py``
(a time-boxed GPU window). Nothing here imports ``experiments``.
"""
