"""chatbench's scripts' shared code: the registry of variants (variants), the machine
(machine), server processes (server_process, peers), the measurement matrix (matrix), the
results directory's CSV and raw files (results_csv, raw_files), the figures read back
from it (aggregate), the noise test (stats) and the plots' styles (plot_style).

The entry scripts in scripts/ import it as `from chatbench import ...`: Python puts a
script's own directory on sys.path. Anything else (tests) runs with PYTHONPATH=scripts."""
