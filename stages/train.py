"""DVC stage `train`: Train the generator; checkpoints, sample grids, loss log.

Usage: python stages/train.py DATASET [PARAMS_FILE]
"""

from facegan.chain import stage_main

if __name__ == "__main__":
    stage_main("train")
