"""Report rendering: self-contained HTML pages with embedded plots (:mod:`edgeseq.reports.html`)."""
