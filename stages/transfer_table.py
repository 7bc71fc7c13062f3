"""DVC stage `transfer-table`: one FID table over the fine-tune runs (facegan.transfer).
Usage: python stages/transfer_table.py"""

from facegan.errors import user_errors
from facegan.logs import setup_logging
from facegan.transfer import table

if __name__ == "__main__":
    setup_logging()
    with user_errors():
        table()
