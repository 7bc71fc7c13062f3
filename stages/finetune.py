"""DVC stage `finetune@RUN`: fine-tune the pretrained StyleGAN2 on transfer.target with one of transfer.runs,
then evaluate it (facegan.transfer).  Usage: python stages/finetune.py RUN"""

import sys

from facegan.errors import user_errors
from facegan.logs import setup_logging
from facegan.transfer import finetune

if __name__ == "__main__":
    setup_logging()
    if len(sys.argv) != 2:
        sys.exit("usage: python stages/finetune.py RUN")
    with user_errors():
        finetune(sys.argv[1])
