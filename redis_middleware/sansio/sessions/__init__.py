"""Sessions, decided without I/O: ``SessionCore``'s flows and decisions (``core``), the
``dict`` handed to applications (``mapping``), the hash's layout and the scripts that
read and write it (``scripts``), and the cookies (``cookies``)."""
