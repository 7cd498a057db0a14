"""One error tree for the whole engine; an adapter catches the root or a branch.

::

    SelarasError
    ├── UsageError      a local misuse of an engine object: a bug in the caller
    │   └── ProtocolError           (protocol)
    ├── InputError      bad input from a person or a file (also a ValueError); nothing changed
    │   ├── BadValue                (values)   a value that does not fit its field
    │   ├── UnknownEntity           (schema)
    │   ├── EditError               (replica)  an add, edit or delete that cannot be made
    │   ├── MalformedBatch          (events)   bytes from outside that are not a batch
    │   ├── BundleError             (bundle)   NotABundle, BundleCorrupt, BundleMismatch,
    │   │                                      WrongSchool, NotOfSchool
    │   ├── ImportRefused           (store)    a rows file with problems
    │   └── QueryRefused            (store)    not one read statement, or SQL refused
    ├── RemoteError     the peer broke the protocol or refused; carries the refusal code
    │                               (protocol)
    └── StoreError      the store could not do it   (store)
        ├── EventCollision, BadSignature, DataInUse, RegistryError
        └── StoreFailure            the database itself failed (memory, disk, I/O)

Each class carries structured attributes and builds its message in ``__str__``.
Messages a peer receives never carry an exception's text (``refusals``). The
operating system's own errors (OSError: a full disk, a read-only folder) are
not in the tree; ``os_error_text`` says them in the operator's words.
"""

from __future__ import annotations

import errno


class SelarasError(Exception):
    """The root: every error the engine raises on purpose."""


class UsageError(SelarasError):
    """An engine object used wrongly: a bug in the code that called it."""


class InputError(SelarasError, ValueError):
    """Input from a person or a file that cannot be taken; nothing was changed."""


OS_REASONS = {
    errno.ENOSPC: "disk penuh (kosongkan sebagian ruang disk, lalu coba lagi)",
    errno.EROFS: "folder hanya-baca, tidak dapat ditulis (pakai folder lain)",
    errno.EACCES: "tidak ada izin (periksa izin file atau foldernya)",
    errno.EPERM: "tidak ada izin (periksa izin file atau foldernya)",
    errno.ENOENT: "tidak ada (periksa nama dan foldernya)",
    errno.EISDIR: "itu folder, bukan file",
    errno.ENOTDIR: "sebagian jalurnya bukan folder",
    errno.EEXIST: "sudah ada",
    errno.ENAMETOOLONG: "namanya terlalu panjang",
    errno.EIO: "gagal dibaca atau ditulis (disk rusak atau tercabut?)",
}


def os_error_text(exc: OSError) -> str:
    """An operating system's refusal (a full disk, a read-only folder ...) as an operator or
    admin reads it: the file, the cause, what to do; in one line, in Indonesian."""
    what = f"{exc.filename}: " if exc.filename else ""
    why = OS_REASONS.get(exc.errno or 0) or exc.strerror or type(exc).__name__
    return what + why
