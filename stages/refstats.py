"""DVC stage `refstats`: Feature statistics of the real packed images.

Usage: python stages/refstats.py DATASET [PARAMS_FILE]
"""

from facegan.chain import stage_main

if __name__ == "__main__":
    stage_main("refstats")
