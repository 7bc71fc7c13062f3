"""DVC stage `evaluate`: Frechet distances of generated vs real images.

Usage: python stages/evaluate.py DATASET [PARAMS_FILE]
"""

from facegan.chain import stage_main

if __name__ == "__main__":
    stage_main("evaluate")
