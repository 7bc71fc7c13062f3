"""DVC stage `upscale`: Bring small faces up to the target size.

Usage: python stages/upscale.py DATASET [PARAMS_FILE]
"""

from facegan.chain import stage_main

if __name__ == "__main__":
    stage_main("upscale")
