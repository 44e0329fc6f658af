"""The whole loop as resumable stages: data to measured on-device model, and its report.

(Named ``flow`` rather than ``pipeline`` so that the subpackage never shadows the public
``dnsrec_edge.pipeline`` function once it is imported.)
"""
