"""A results page of the docs, written from the run folders: the figures, the tables and what they show.

    python scripts/paper_figures.py --out docs/results/fast --label fast --command "..." \
        [--figure2 RUN] [--lambda-sweep SWEEP] [--alpha-sweep SWEEP] [--seeds-sweep SWEEP]

scripts/reproduce_all.sh trains the runs and calls this. The writer is centerloss_cli/pages.py, in the
package, where the run folder's and the storage's code is: it keeps the tool's promises about files
(every input checked first, only its own folders written, all or nothing).
"""
from centerloss_cli.plots.pages import main

if __name__ == "__main__":
    main()
