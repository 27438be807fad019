"""DVC stage `report`: read the current pipeline's runs from MLflow and write the comparison report to
reports/ (comparison.md, comparison.html, figures/, metrics.json); see cifarbench.report."""

import sys

from cifarbench.commands.report import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
