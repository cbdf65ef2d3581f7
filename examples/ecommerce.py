"""Runs ``eventstore.examples.ecommerce``: read that module for the code (it ships with the
package, so ``es demo`` can run it too).

Run: ``python examples/ecommerce.py [STORE_DIR]``
"""

from eventstore.examples.ecommerce import main

if __name__ == "__main__":
    main()
