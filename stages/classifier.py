"""DVC stage `classifier`: Attribute classifier trained on the real packed images (labelled sets).

Usage: python stages/classifier.py DATASET [PARAMS_FILE]
"""

from facegan.chain import stage_main

if __name__ == "__main__":
    stage_main("classifier")
