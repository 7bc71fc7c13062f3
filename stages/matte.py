"""DVC stage `matte`: Remove the background.  Usage: python stages/matte.py DATASET [PARAMS_FILE]"""

from facegan.chain import stage_main

if __name__ == "__main__":
    stage_main("matte")
