"""DVC stage `generate`: Draw the embedded cartoon dataset into data/raw/<dataset>.

Usage: python stages/generate.py DATASET [PARAMS_FILE]
"""

from facegan.chain import stage_main

if __name__ == "__main__":
    stage_main("generate")
