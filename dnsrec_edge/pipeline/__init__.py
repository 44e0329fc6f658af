"""The whole loop as resumable stages: data to measured on-device model, and its report.

``run.py`` strings the stages together (``steps.py`` adapts each stage to the API of the
package that does its work, ``stages.py`` runs, hashes and resumes them); ``summaries.py``,
``report_data.py`` and ``report.py`` print and draw what they produced.

This package shares its name with the public function :func:`dnsrec_edge.pipeline`. Once the
package is imported the attribute ``dnsrec_edge.pipeline`` may be this package, so calling
the package calls the function (as ``dnsrec_edge.evaluate`` does).
"""

from __future__ import annotations

import sys
import types
from typing import Any


class _CallablePackage(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from dnsrec_edge.pipeline.run import pipeline

        return pipeline(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
