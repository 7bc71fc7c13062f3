"""DVC stage `align`: Warp each face onto the 5-point template.  Usage: python stages/align.py DATASET [PARAMS_FILE]"""

from facegan.chain import stage_main

if __name__ == "__main__":
    stage_main("align")
