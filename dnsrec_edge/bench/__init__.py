"""On-device benchmarks over TVM RPC: runs, energy meters, reports, the board-side agent.

``probe``, ``device_info`` and ``server`` run on the board and import nothing beyond the
standard library and TVM (the board needs only ``pip install apache-tvm``); keep this file
free of imports so importing them there stays light.
"""
