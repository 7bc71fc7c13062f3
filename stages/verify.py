"""DVC stage `verify`: Keep only faces of one identity.  Usage: python stages/verify.py DATASET [PARAMS_FILE]"""

from facegan.chain import stage_main

if __name__ == "__main__":
    stage_main("verify")
