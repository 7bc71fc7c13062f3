"""DVC stages `pretrain`, `finetune@RUN`, `transfer-table`: StyleGAN2 transfer learning (facegan.transfer).

Usage: python stages/transfer.py pretrain | finetune RUN | table
"""

import sys

from facegan import transfer
from facegan.errors import user_errors
from facegan.logs import setup_logging

if __name__ == "__main__":
    setup_logging()
    args = sys.argv[1:]
    with user_errors():
        if args == ["pretrain"]:
            transfer.pretrain()
        elif len(args) == 2 and args[0] == "finetune":
            transfer.finetune(args[1])
        elif args == ["table"]:
            transfer.table()
        else:
            sys.exit("usage: python stages/transfer.py pretrain | finetune RUN | table")
