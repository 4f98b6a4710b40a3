"""Reference chat servers written only to be measured against ours.

Each speaks the seed's text lines (``User N: text``) or Socket.IO, takes
``--host`` and ``--port``, and prints ``Server started on ws://HOST:PORT`` once
it listens, like our server, so one launcher starts them all.
"""
