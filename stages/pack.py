"""DVC stage `pack`: Write the training ZIP (stylegan2-ada format) with labels.

Usage: python stages/pack.py DATASET [PARAMS_FILE]
"""

from facegan.chain import stage_main

if __name__ == "__main__":
    stage_main("pack")
