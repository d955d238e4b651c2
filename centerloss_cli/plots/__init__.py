"""The pictures: scatter plots and grids (figures.py), line charts (charts.py), the plotting processes
(service.py, the trainer's side; drawing.py, the process's), the results pages (pages.py, page_sections.py)
and TensorBoard (tensorboard.py)."""
