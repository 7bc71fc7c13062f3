"""DVC stage `cyclegan`: CycleGAN between cyclegan.a and cyclegan.b (facegan.translate).

Usage: python stages/cyclegan.py [PARAMS_FILE]
"""

import sys

from facegan.chain import run_stage
from facegan.config import load_params
from facegan.errors import user_errors
from facegan.logs import setup_logging

if __name__ == "__main__":
    setup_logging()
    with user_errors():
        params = load_params(sys.argv[1] if len(sys.argv) > 1 else "params.yaml")
        run_stage("cyclegan", params.cyclegan.a, params)
