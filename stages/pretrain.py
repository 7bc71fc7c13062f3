"""DVC stage `pretrain`: the transfer study's source model on transfer.source, and its own evaluation there
(facegan.transfer).

Usage: python stages/pretrain.py
"""

from facegan.errors import user_errors
from facegan.logs import setup_logging
from facegan.transfer import pretrain

if __name__ == "__main__":
    setup_logging()
    with user_errors():
        pretrain()
