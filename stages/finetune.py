"""DVC stage `finetune@ROW-SEED`: one run of the transfer study on transfer.target, row ROW of transfer.runs
with train.seed SEED, then its evaluation (facegan.transfer); with transfer.enabled false its output folder only
says so.

Usage: python stages/finetune.py ROW SEED
"""

import sys

from facegan.errors import user_errors
from facegan.logs import setup_logging
from facegan.transfer import finetune_stage

if __name__ == "__main__":
    setup_logging()
    if len(sys.argv) != 3 or not sys.argv[2].isdigit():
        sys.exit("usage: python stages/finetune.py ROW SEED")
    with user_errors():
        finetune_stage(sys.argv[1], int(sys.argv[2]))
