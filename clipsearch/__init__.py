"""clipsearch, assembled: the command line and the bootstrap that wire ``service``, ``indexer``
and ``models`` into processes. The composition root: it imports the other packages, none
imports it."""
