"""DVC stage `quality`: Reject blurred, too-small and near-duplicate faces.

Usage: python stages/quality.py DATASET [PARAMS_FILE]
"""

from facegan.chain import stage_main

if __name__ == "__main__":
    stage_main("quality")
