"""DVC stages `pretrain`, `finetune@RUN`, `transfer-table`: StyleGAN2 transfer learning (facegan.transfer).

Usage: python stages/transfer.py pretrain | finetune RUN | table
"""

import sys

from facegan.config import ParamsError
from facegan.logs import setup_logging
from facegan import transfer

if __name__ == "__main__":
    setup_logging()
    args = sys.argv[1:]
    try:
        if args == ["pretrain"]:
            transfer.pretrain()
        elif len(args) == 2 and args[0] == "finetune":
            transfer.finetune(args[1])
        elif args == ["table"]:
            transfer.table()
        else:
            sys.exit("usage: python stages/transfer.py pretrain | finetune RUN | table")
    except ParamsError as e:
        sys.exit(f"error: {e}")
