"""The pictures: scatter plots and grids (figures.py), line charts (charts.py), the plotting processes
(service.py, the trainer's side; drawing.py, the process's), the results pages (pages.py, page_sections.py),
TensorBoard (tensorboard.py) and the HTML report (report.py)."""

# The report's points a split and run, by default (here, where the CLI reads it without loading the plotting):
# 2,000 points a split: about 200 a digit, enough for each class's shape and its outliers, and the 5-run
# Figure 3 family at 22 epochs stays under 10 MB with its digits (bench/RESULTS.md, "The report").
DEFAULT_POINTS = 2000
