"""Storage: the only code that talks to a database (DESIGN.md sections 2 and 5).

One module a job:

- ``database``  opening a file, the one set of tables for any number of schools,
                transactions, database failures in plain words
- ``log``       one school's log, the set-based merge, reads (``DuckDBStore``)
- ``bulk``      a rows file imported in columnar form
- ``query``     the operator's and admin's read-only query over one school
- ``centre``    every school in one file, group commit, signed centre events
- ``registry``  the centre's schools, accounts, installs and sessions

The rest of selaras imports what it needs from here, never ``duckdb``.
"""

from .centre import CentreReader, DuckDBCentre
from .database import connect
from .log import DuckDBStore
from .registry import DuckDBRegistry

__all__ = ["CentreReader", "DuckDBCentre", "DuckDBRegistry", "DuckDBStore", "connect"]
