"""DVC stage `detect`: Find faces and cut square crops with context.

Usage: python stages/detect.py DATASET [PARAMS_FILE]
"""

from facegan.chain import stage_main

if __name__ == "__main__":
    stage_main("detect")
