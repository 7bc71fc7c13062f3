"""DVC stage `report`: metrics.json + sample grid; log the run to MLflow.

Usage: python stages/report.py DATASET [PARAMS_FILE]
"""

from facegan.chain import stage_main

if __name__ == "__main__":
    stage_main("report")
