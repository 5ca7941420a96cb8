"""The benchmarks' timing helpers live in the package (hebm_ext.bench, also behind `hebm bench`)."""
from hebm_ext.bench import environment, markdown_table, median_time, plot_ratios, sync, write_json  # noqa: F401
