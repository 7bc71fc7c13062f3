"""DVC stage `cyclegan`: CycleGAN between cyclegan.a and cyclegan.b (facegan.translate); with cyclegan.enabled
false its outputs only say so.

Usage: python stages/cyclegan.py [PARAMS_FILE]
"""

from facegan.chain import cyclegan_main

if __name__ == "__main__":
    cyclegan_main()
