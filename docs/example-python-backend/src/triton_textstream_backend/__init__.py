"""triton-backend-textstream: an example Python-based backend (a ``TritonPythonModel`` shared by
every model whose config says ``backend: "textstream"``).

It streams its input text back one word per response (a decoupled model, as a token-streaming
text generator answers), styled by a file of each model's own version folder (``style.json``).
The class lives in :mod:`triton_textstream_backend.model`; importing this package imports
nothing else, so listing backends stays cheap.
"""
