"""Runs ``eventstore.examples.bank_account``: read that module for the code (it ships with the
package, so ``es demo`` can run it too).

Run: ``python examples/bank_account.py [STORE_DIR]``
"""

from eventstore.examples.bank_account import main

if __name__ == "__main__":
    main()
