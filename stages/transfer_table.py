"""DVC stage `transfer-table`: the transfer study's table, curves and plots (facegan.transfer_table); with
transfer.enabled false they say the study is off.

Usage: python stages/transfer_table.py
"""

from facegan.errors import user_errors
from facegan.logs import setup_logging
from facegan.transfer_table import table

if __name__ == "__main__":
    setup_logging()
    with user_errors():
        table()
