"""A board: the facts it reports and how the host reaches it over TVM RPC.

Below both ``compile`` (tuning times candidates on a board) and ``bench`` (runs, energy), so
that neither imports the other for it. ``probe`` and ``device_info`` run on the board and
import nothing beyond the standard library and TVM (the board needs only ``pip install
apache-tvm``); ``rpc`` is the host's client. Keep this file free of imports so importing
them there stays light.
"""
