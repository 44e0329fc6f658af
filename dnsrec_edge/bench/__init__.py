"""On-device benchmarks over TVM RPC: runs, energy meters, reports, calibration runs, the server.

``server`` and ``cuda_runtime`` run on the board beside ``dnsrec_edge.board``'s agent and
import nothing beyond the standard library and TVM (the board needs only ``pip install
apache-tvm``); keep this file free of imports so importing them there stays light.
"""
