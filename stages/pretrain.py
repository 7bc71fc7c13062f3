"""DVC stage `pretrain`: the transfer study's source model on transfer.source, and its own evaluation there
(facegan.transfer); with transfer.enabled false its output folder only says so.

Usage: python stages/pretrain.py
"""

from facegan.errors import user_errors
from facegan.logs import setup_logging
from facegan.transfer import pretrain_stage

if __name__ == "__main__":
    setup_logging()
    with user_errors():
        pretrain_stage()
